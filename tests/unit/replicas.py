"""
Three order replicas and the catalog in one test, without a reactor: real
:class:`Replica` services and a real :class:`CatalogService` (on a temporary
SQLite file) served on an in-memory :class:`~toystore.wire.testing.Network`,
disk work done inline, and a ``task.Clock``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from toystore.catalog.service import DB_FILE, CatalogService
from toystore.catalog.store import read_ledger
from toystore.config import ClusterConfig, load
from toystore.order.journal import WINDOW_BYTES
from toystore.order.replica import Replica
from toystore.wire.testing import LoopbackClient, Network, NetworkEndpoint

from .helpers import WIRE

#: Stock of every toy in the catalog: more than any test buys.
STOCK = 1000
#: The name the catalog is served under on the network (a replica is served under its id).
CATALOG = "catalog"


def inline(function: Any, *args: Any) -> Deferred[Any]:
    """Run 'thread' work at once, on the test's thread."""
    return maybeDeferred(function, *args)


class ReplicaCase(SynchronousTestCase):
    """
    Three replicas and a started catalog over a Network; none leads until a
    test says so.  Each replica holds a :class:`LoopbackClient` per peer
    (``replica.peers``) and one of the catalog (``replica.catalog``), which a
    test may cut; ``self.network.cut(i)`` takes replica ``i`` off the network.
    """

    min_insync = 2
    front_end: dict[str, int] | None = None  # what GET /leader answers; None: the front-end is down
    window_bytes = WINDOW_BYTES  # of each replica's log
    key_hash = staticmethod(hash)  # of the idempotency keys in each replica's Bloom filter

    def find_leader(self) -> Deferred[dict[str, int]]:
        return succeed(self.front_end) if self.front_end else fail(OSError("no front-end"))

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = Network(self.clock, WIRE)
        self.base = Path(self.mktemp())
        self.base.mkdir(parents=True)
        cluster = load()
        catalog = dataclasses.replace(cluster.catalog, data_dir=str(self.base / "catalog"), initial_stock=STOCK)
        self.cluster: ClusterConfig = dataclasses.replace(cluster, catalog=catalog, wire=WIRE)
        self.catalog = CatalogService(catalog, self.clock, inline)
        self.catalog.startService()
        self.addCleanup(lambda: self.successResultOf(self.catalog.stopService()))
        self.network.listen(CATALOG, self.catalog)
        self._to_catalog: LoopbackClient | None = None

    def make(self, preload: dict[int, tuple[list[bytes], int]] | None = None) -> None:
        """Create and start the replicas, optionally with log lines and an epoch already on disk (or as left)."""
        order = dataclasses.replace(
            self.cluster.order,
            data_dir=str(self.base / "order-{id}"),
            min_insync=self.min_insync,
            ack_timeout=1.0,
            window_bytes=self.window_bytes,
        )
        cluster = dataclasses.replace(self.cluster, order=order)
        self.replicas: dict[int, Replica] = {}
        self.fail_stops: list[
            tuple[int, str]
        ] = []  # (replica, why) of each fail-stop, which a real one would not survive
        for i, (lines, epoch) in (preload or {}).items():
            directory = self.base / f"order-{i}"
            directory.mkdir(parents=True)
            (directory / "orders.log").write_bytes(b"".join(lines))
            (directory / "epoch.json").write_text(f'{{"epoch": {epoch}}}')
        for me in cluster.order.replicas:
            peers = {
                r.id: LoopbackClient(self.network, r.id, label=f"replica {r.id}")
                for r in cluster.order.replicas
                if r.id != me.id
            }
            replica = Replica(
                me,
                cluster,
                self.clock,
                inline,
                peers,
                LoopbackClient(self.network, CATALOG),
                self.endpoint,
                self.find_leader,
                key_hash=self.key_hash,
                fail_stop=lambda why, i=me.id: self.fail_stops.append((i, why)),
            )
            self.replicas[me.id] = replica
            self.network.listen(me.id, replica)
        for replica in self.replicas.values():
            for client in (*replica.peers.values(), replica.catalog):
                client.startService()
            replica.startService()
        self.network.flush()
        if not getattr(self, "_stopping", False):
            self._stopping = True
            self.addCleanup(self.stop)

    def restart(self) -> None:
        """Stop every replica and start new ones on the same data directories."""
        self.stop()
        # The old processes are gone, and the connections to them with them.
        for replica_id in self.replicas:
            self.network.drop(replica_id)
        self.network.flush()
        self.make()

    def endpoint(self, target: int) -> NetworkEndpoint:
        return self.network.endpoint(target)

    def stop(self) -> None:
        """Stop every replica and the clients it holds."""
        for replica in self.replicas.values():
            d = replica.stopService()
            self.network.flush()
            self.successResultOf(d)
            for client in (*replica.peers.values(), replica.catalog):
                client.stopService()
        self.network.flush()

    def drive(self, coroutine: Any) -> Deferred[Any]:
        d = ensureDeferred(coroutine)
        self.network.flush()
        return d

    def elect(self, epoch: int, leader: int, others: tuple[int, ...] = (1, 2, 3)) -> None:
        self.assertTrue(self.successResultOf(self.drive(self.replicas[leader].lead(epoch, leader)))["ready"])
        for i in others:
            if i != leader:
                self.successResultOf(self.drive(self.replicas[i].lead(epoch, leader)))
        self.network.flush()

    def order(self, leader: int, key: str, name: str = "Tux") -> Deferred[Any]:
        return self.drive(self.replicas[leader].place(name, 1, key))

    def file(self, i: int) -> bytes:
        return (self.base / f"order-{i}" / "orders.log").read_bytes()

    def to_catalog(self, type: str, **fields: Any) -> Deferred[Any]:
        """A call to the catalog from the test (as another leader, or an old one, would make it), delivered."""
        if self._to_catalog is None:
            self._to_catalog = self.network.client(CATALOG, label="catalog (from the test)")
        return self.drive(self._to_catalog.call(type, fields))

    def buys(self) -> list[dict[str, Any]]:
        """Every buy the catalog has committed, by seq, as its database holds them."""
        return read_ledger(Path(self.cluster.catalog.data_dir) / DB_FILE)[1]
