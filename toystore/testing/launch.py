"""
Where the store's processes run and what address each has: all that a
launcher decides.

A launcher has three parts: ``here``, the address the harness's own
listeners (the fault proxies) bind to; :meth:`~LocalLauncher.sites`, a
:class:`Site` for every process; and :meth:`~LocalLauncher.wrap`, the command
line a process is started under.  :class:`LocalLauncher` runs every process
as a child of this one on 127.0.0.1, each listener on a port the OS picked,
and wraps nothing.  :class:`HostLauncher` puts each process in a network
namespace of its own (:mod:`toystore.hosts`), with its own address and fixed
ports, and wraps its command line in ``ip netns exec <namespace>``; the
store, the cluster file and the proxies take the addresses from the sites.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Site:
    """Where one process listens: its host, and a port per listener (``lines``, ``http``)."""

    host: str
    ports: dict[str, int]

    def listen(self, listener: str) -> str:
        """The endpoint the process binds ``listener`` to (``tcp:8101:interface=127.0.0.1``)."""
        return f"tcp:{self.ports[listener]}:interface={self.host}"

    def connect(self, listener: str) -> str:
        """The endpoint by which the others reach ``listener`` (``tcp:host=127.0.0.1:port=8101``)."""
        return f"tcp:host={self.host}:port={self.ports[listener]}"

    @property
    def url(self) -> str:
        """The base URL of its HTTP listener."""
        return f"http://{self.host}:{self.ports['http']}"

    @classmethod
    def of(cls, listens: dict[str, str]) -> Site:
        """The site of a process whose listeners bind to the endpoints ``listens`` (from a cluster file)."""
        addresses = {listener: address(endpoint) for listener, endpoint in listens.items()}
        hosts = {host for host, _ in addresses.values()}
        return cls(hosts.pop() if len(hosts) == 1 else "127.0.0.1", {k: port for k, (_, port) in addresses.items()})


def address(listen: str) -> tuple[str, int]:
    """
    The host and port at which this machine reaches a listening endpoint
    (``tcp:8100:interface=127.0.0.1``); one bound to every interface, or to
    none named, is reached on 127.0.0.1.
    """
    parts = listen.split(":")
    port = next((p.removeprefix("port=") for p in parts[1:] if p.removeprefix("port=").isdigit()), "0")
    interface = next((p.split("=", 1)[1] for p in parts if p.startswith("interface=")), "")
    return (interface if interface not in ("", "0.0.0.0", "::") else "127.0.0.1"), int(port)


#: Where the kernel says its ephemeral ports are (the ports of outgoing connections).
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: The lowest port the harness gives a listener.
LOWEST_PORT = 10000


def free_ports(count: int) -> list[int]:
    """
    ``count`` different loopback ports that were free a moment ago, below
    the kernel's ephemeral range when it says where that is.  A port the OS
    picks for a listener (``bind`` to port 0) is an ephemeral one: between
    the harness's choice and the process's bind, an outgoing connection (a
    replica reconnecting to a peer) may take it, and the process cannot
    listen.  Below the range, only another listener can.
    """
    try:
        first_ephemeral = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 0
    if first_ephemeral - LOWEST_PORT < 100 * count:
        return _ports_the_os_picks(count)
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randrange(LOWEST_PORT, first_ephemeral)
        if port not in chosen and _free(port):
            chosen.append(port)
    return chosen


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports_the_os_picks(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class HostLauncher:
    """
    Every process in a host of its own (:class:`toystore.hosts.network.Hosts`,
    a network namespace each, named as the process is), each listener on a
    fixed port of that host's own address, and the harness in the host
    ``clients`` (it must have entered it: :meth:`Hosts.enter`).
    """

    #: The port of each listener, the same on every host.
    PORTS = {"lines": 7001, "http": 7000}

    def __init__(self, hosts: Any) -> None:
        self.hosts = hosts
        self.here = hosts.address("clients")

    def sites(self, listeners: dict[str, tuple[str, ...]]) -> dict[str, Site]:
        """A site for each process named: its host's address, the fixed ports."""
        return {
            name: Site(self.hosts.address(name), {listener: self.PORTS[listener] for listener in names})
            for name, names in listeners.items()
        }

    def wrap(self, name: str) -> list[str]:
        """The command line that process ``name`` runs under: inside its host."""
        return self.hosts.wrap(name)


class LocalLauncher:
    """Every process a child of this one, on 127.0.0.1, each listener on a port the OS picked."""

    #: Where the harness's own listeners bind, reachable from every process.
    here = "127.0.0.1"

    def sites(self, listeners: dict[str, tuple[str, ...]]) -> dict[str, Site]:
        """A site for each process named, with a port for each of its listeners, all picked at once (no two alike)."""
        ports = iter(free_ports(sum(len(names) for names in listeners.values())))
        return {
            name: Site(self.here, {listener: next(ports) for listener in names}) for name, names in listeners.items()
        }

    def wrap(self, name: str) -> list[str]:
        """The command line that process ``name`` runs under: none, on this machine."""
        return []
