"""
Three order replicas and the catalog in one test, without a reactor: real
:class:`Replica` services (each with its real peer connections) and a real
:class:`CatalogService` (on a temporary SQLite file) served on an in-memory
:class:`~toystore.wire.testing.Network`, disk work done inline, and a
``task.Clock``.  The replicas elect their leader themselves as time passes
(:meth:`ReplicaCase.advance`); every replica's election randomness comes from a
fixed seed, so a test runs the same way every time.
"""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from toystore.catalog.service import DB_FILE, CatalogService
from toystore.catalog.store import read_ledger
from toystore.config import ClusterConfig, load
from toystore.frontend.service import FrontendService
from toystore.order.journal import WINDOW_BYTES
from toystore.order.replica import Replica
from toystore.wire.testing import LoopbackClient, Network, NetworkEndpoint

from .helpers import WIRE

#: Stock of every toy in the catalog: more than any test buys.
STOCK = 1000
#: The name the catalog is served under on the network (a replica is served under its id).
CATALOG = "catalog"
#: Seconds of simulated time per step of :meth:`ReplicaCase.run`.
STEP = 0.01


def inline(function: Any, *args: Any) -> Deferred[Any]:
    """Run 'thread' work at once, on the test's thread."""
    return maybeDeferred(function, *args)


class ReplicaCase(SynchronousTestCase):
    """
    Three replicas and a started catalog over a Network.  Each replica
    connects to its peers through the network (``self.network.cut(i)``
    takes replica ``i`` off it, both ways) and holds a
    :class:`LoopbackClient` of the catalog (``replica.catalog``), which a
    test may cut.
    """

    window_bytes = WINDOW_BYTES  # of each replica's log
    key_hash = staticmethod(hash)  # of the idempotency keys in each replica's Bloom filter
    seed = 1  # of the replicas' election randomness

    def setUp(self) -> None:
        # What is on disk is what was written (no crash here loses a page): no fsync, for speed.
        self.patch(os, "fsync", lambda fd: None)
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
        self.replicas: dict[int, Replica] = {}
        #: (replica, why) of each fail-stop, which a real one would not survive
        self.fail_stops: list[tuple[int, str]] = []
        self.rng = random.Random(self.seed)

    def order_config(self) -> Any:
        return dataclasses.replace(
            self.cluster.order, data_dir=str(self.base / "order-{id}"), window_bytes=self.window_bytes
        )

    def make(self, ids: tuple[int, ...] | None = None, replaces: tuple[int, ...] = ()) -> None:
        """Create and start replicas ``ids`` (default: all), on the data directories they had, if any."""
        cluster = dataclasses.replace(self.cluster, order=self.order_config())
        for me in cluster.order.replicas:
            if ids is not None and me.id not in ids:
                continue
            replica = Replica(
                me,
                cluster,
                self.clock,
                inline,
                LoopbackClient(self.network, CATALOG),
                lambda target, source=me.id: self.network.endpoint(target, source),
                key_hash=self.key_hash,
                fail_stop=lambda why, i=me.id: self.fail_stops.append((i, why)),
                replaces=me.id in replaces,
                rng=random.Random(self.rng.random()),
            )
            self.replicas[me.id] = replica
            self.network.restore(me.id)
            self.network.listen(me.id, replica)
            replica.catalog.startService()
            replica.startService()
        self.network.flush()
        if not getattr(self, "_stopping", False):
            self._stopping = True
            self.addCleanup(self.stop)

    def kill(self, i: int) -> None:
        """Replica ``i``'s process is gone: its connections drop, nothing of it runs any more (its disk stays)."""
        replica = self.replicas.pop(i)
        self.network.cut(i)
        replica.consensus.stop()
        replica.reconciliation.stop()
        for client in replica.links.clients.values():
            client.stopService()
        replica.catalog.stopService()
        self.network.flush()

    def stop(self, ids: tuple[int, ...] | None = None) -> None:
        """Stop replicas ``ids`` (default: all) as SIGTERM would: a leader hands over first."""
        for i in sorted(self.replicas if ids is None else ids, reverse=True):
            replica = self.replicas[i]
            d = replica.stopService()
            self.advance(replica.timing.election * 2, until=lambda d=d: d.called)
            self.successResultOf(d)
            replica.catalog.stopService()
            del self.replicas[i]
            self.network.cut(i)
        self.network.flush()

    def advance(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        """Let ``seconds`` of simulated time pass, a step at a time, delivering everything; stop once ``until()``."""
        steps = round(seconds / STEP)
        for _ in range(steps):
            self.network.flush()
            if until():
                return
            self.clock.advance(STEP)
        self.network.flush()

    def serving(self, expected: int | None = None, within: float = 10.0) -> Replica:
        """Let time pass until one replica serves (``expected``, if given); that replica."""

        def found() -> Replica | None:
            serving = [r for r in self.replicas.values() if r.node is not None and r.node.serving]
            if len(serving) == 1 and (expected is None or serving[0].id == expected):
                return serving[0]
            return None

        self.advance(within, until=lambda: found() is not None)
        leader = found()
        if leader is None:
            self.fail(
                f"no replica serves{'' if expected is None else f' as {expected}'} after {within} s: "
                f"{ {i: r.status() for i, r in self.replicas.items()} }"
            )
        return leader

    def drive(self, coroutine: Any) -> Deferred[Any]:
        """Start ``coroutine`` and deliver until quiet (no time passes)."""
        d = ensureDeferred(coroutine)
        self.network.flush()
        return d

    def result(self, d: Deferred[Any], within: float = 5.0) -> Any:
        """Let time pass until ``d`` has a result (within ``within`` seconds); that result (a failure raises)."""
        self.advance(within, until=lambda: d.called)
        return self.successResultOf(d)

    def order(self, leader: int, key: str, name: str = "Tux", quantity: int = 1) -> Deferred[Any]:
        return self.drive(self.replicas[leader].place(name, quantity, key))

    def start_frontend(self, config: ClusterConfig | None = None) -> FrontendService:
        """
        A started front-end (stopped when the test ends) holding a link per replica
        (``self.links``) and the catalog's feed (``self.feed``), as its tap wires them.
        """
        self.links = {i: LoopbackClient(self.network, i, label=f"replica {i}") for i in (1, 2, 3)}
        frontend = FrontendService(config or self.cluster, self.clock, None, self.links)
        self.feed = LoopbackClient(self.network, CATALOG, handler=frontend, prepare=frontend.subscribe)
        frontend.catalog = self.feed
        for client in (self.feed, *self.links.values()):
            client.startService()
        frontend.startService()
        self.addCleanup(frontend.stopService)
        return frontend

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


__all__ = ["CATALOG", "STEP", "STOCK", "NetworkEndpoint", "ReplicaCase", "inline"]
