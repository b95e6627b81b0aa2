"""
Tests for the store harness's addresses and cluster file
(:mod:`toystore.testing.launch`, :mod:`toystore.testing.clusterfile`): no
process is started.
"""

from __future__ import annotations

import socket
from pathlib import Path
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from toystore.config import load
from toystore.testing import LocalLauncher, Site, cluster_file, listeners
from toystore.testing.launch import address


class SiteTests(SynchronousTestCase):
    """A Site names a process's endpoints; Site.of reads them back from a cluster file's."""

    def test_endpoints(self) -> None:
        """A listen endpoint binds the host; a connect endpoint and the URL reach it."""
        site = Site("10.0.0.2", {"lines": 8101, "http": 8100})
        self.assertEqual(site.listen("lines"), "tcp:8101:interface=10.0.0.2")
        self.assertEqual(site.connect("lines"), "tcp:host=10.0.0.2:port=8101")
        self.assertEqual(site.url, "http://10.0.0.2:8100")
        self.assertEqual(Site.of({"lines": site.listen("lines"), "http": site.listen("http")}), site)

    def test_address(self) -> None:
        """An endpoint bound to every interface, or to none named, is reached on 127.0.0.1."""
        self.assertEqual(address("tcp:8100:interface=127.0.0.1"), ("127.0.0.1", 8100))
        self.assertEqual(address("tcp:port=8000:interface=0.0.0.0"), ("127.0.0.1", 8000))
        self.assertEqual(address("tcp:8000"), ("127.0.0.1", 8000))


class ClusterFileTests(SynchronousTestCase):
    """cluster_file writes the packaged cluster with the launcher's addresses, local data and overrides."""

    def test_cluster_file(self) -> None:
        """Every listener gets its own port; data lives under the directory; routes and overrides apply."""
        directory = Path(self.mktemp())
        sites = LocalLauncher().sites(listeners(frontends=2))
        self.assertEqual(list(sites)[-2:], ["frontend", "frontend-2"])
        ports = [port for site in sites.values() for port in site.ports.values()]
        self.assertEqual(len(set(ports)), 10)
        route = {"peer_connect": "tcp:host=127.0.0.1:port=1"}
        path = cluster_file(directory, sites, {3: route}, order={"max_batch": 1})
        cluster = load(str(path))
        self.assertEqual(cluster.catalog.lines, sites["catalog"].listen("lines"))
        self.assertEqual(cluster.frontend.url, sites["frontend"].url)
        self.assertEqual(cluster.order.replica(2).connect, f"tcp:host=127.0.0.1:port={sites['order-2'].ports['lines']}")
        self.assertEqual(cluster.order.replica(3).peer_address, route["peer_connect"])
        self.assertEqual(cluster.order.data_dir, str(directory / "order-{id}"))
        self.assertEqual(cluster.order.max_batch, 1)
        self.assertEqual(cluster.order.election_timeout, load().order.election_timeout)


class FreePortTests(SynchronousTestCase):
    """The harness's listeners get ports no outgoing connection can take first."""

    def test_below_the_ephemeral_range(self) -> None:
        """Distinct ports, each free, all below the kernel's ephemeral range (where outgoing connections get theirs)."""
        from toystore.testing.launch import EPHEMERAL_RANGE, free_ports

        if not EPHEMERAL_RANGE.exists():
            raise SkipTest("this kernel does not say where its ephemeral ports are")
        first = int(EPHEMERAL_RANGE.read_text().split()[0])
        ports = free_ports(40)
        self.assertEqual(len(set(ports)), 40)
        self.assertTrue(all(port < first for port in ports), ports)
        for port in ports:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
