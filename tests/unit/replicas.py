"""
Three order replicas in one test, without a reactor: replicas connected by
``iosim`` pumps over a :class:`Network` a test can cut, a scripted catalog,
and a ``task.Clock``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, fail, maybeDeferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from toystore.config import load
from toystore.envelope import ApiError, StaleEpoch
from toystore.order.journal import WINDOW_BYTES
from toystore.order.replica import Replica
from toystore.wire import WireClient, WireProtocol

from .helpers import WIRE


def inline(function: Any, *args: Any) -> Deferred[Any]:
    return maybeDeferred(function, *args)


class Network:
    """
    iosim connections between replicas, pumped on demand; a connection can be held back.
    Flushing also runs what the replicas left for the end of the reactor turn
    (``callLater(0)``: a leader's new records are pushed and written once a turn).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.pumps: list[iosim.IOPump] = []
        self.held: set[iosim.IOPump] = set()
        self.down: set[int] = set()

    def flush(self) -> None:
        moved = True
        while moved:
            moved = False
            for pump in list(self.pumps):
                if pump not in self.held and pump.pump(advanceClock=False):
                    moved = True
            if any(call.getTime() <= self.clock.seconds() for call in self.clock.getDelayedCalls()):
                self.clock.advance(0)
                moved = True

    def cut(self, replica_id: int) -> None:
        """Replica ``replica_id`` stops answering new connections and drops its current ones."""
        self.down.add(replica_id)
        for pump in self.pumps:
            if getattr(pump, "target", None) == replica_id:
                pump.client.transport.loseConnection()
        self.flush()


@implementer(IStreamClientEndpoint)
class Endpoint:
    """Connects through the Network to one replica's lines port."""

    def __init__(self, network: Network, replicas: dict[int, Replica], target: int, clock: Clock) -> None:
        self.network, self.replicas, self.target, self.clock = network, replicas, target, clock

    def connect(self, factory: Any) -> Deferred[Any]:
        if self.target in self.network.down:
            return fail(ConnectionRefusedError("down"))
        client = factory.buildProtocol(None)
        server = WireProtocol(self.replicas[self.target], self.clock, WIRE)
        pump = iosim.connect(server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client), greet=False)
        pump.target = self.target
        self.network.pumps.append(pump)
        return succeed(client)


class Catalog:
    """
    Buys succeed unless told otherwise, numbered by seq and replayed by key;
    ``reconcile`` fences the epoch and lists them, like the real catalog.
    """

    def __init__(self) -> None:
        self.bought: list[dict[str, Any]] = []
        self.refuse: ApiError | None = None
        self.epoch = 0

    def call(self, type: str, fields: dict[str, Any], timeout: float | None = None) -> Deferred[Any]:
        if self.refuse is not None:
            return fail(self.refuse)
        if fields["epoch"] < self.epoch:
            return fail(StaleEpoch(f"epoch {fields['epoch']} is older than {self.epoch}"))
        self.epoch = fields["epoch"]
        if type == "reconcile":
            listed = [b for b in self.bought if b["seq"] > fields["after"]]
            return succeed({"epoch": self.epoch, "buys": listed, "more": False})
        for buy in self.bought:
            if buy["key"] == fields["key"]:
                return succeed({"remaining": 1, "seq": buy["seq"]})
        seq = len(self.bought) + 1
        self.bought.append({"seq": seq, "key": fields["key"], "name": fields["name"], "quantity": fields["quantity"]})
        return succeed({"remaining": 1, "seq": seq})


class ReplicaCase(SynchronousTestCase):
    """Three replicas over a Network; none leads until a test says so."""

    min_insync = 2
    front_end: dict[str, int] | None = None  # what GET /leader answers; None: the front-end is down
    window_bytes = WINDOW_BYTES  # of each replica's log
    key_hash = staticmethod(hash)  # of the idempotency keys in each replica's Bloom filter

    def find_leader(self) -> Deferred[dict[str, int]]:
        return succeed(self.front_end) if self.front_end else fail(OSError("no front-end"))

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = Network(self.clock)
        self.catalog = Catalog()
        self.base = Path(self.mktemp())
        self.base.mkdir(parents=True)

    def make(self, preload: dict[int, tuple[list[bytes], int]] | None = None) -> None:
        """Create and start the replicas, optionally with log lines and an epoch already on disk (or as left)."""
        cluster = load()
        order = dataclasses.replace(
            cluster.order,
            data_dir=str(self.base / "order-{id}"),
            min_insync=self.min_insync,
            ack_timeout=1.0,
            window_bytes=self.window_bytes,
        )
        cluster = dataclasses.replace(cluster, order=order, wire=WIRE)
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
                r.id: WireClient(self.endpoint(r.id), self.clock, WIRE, name=f"replica {r.id}")
                for r in cluster.order.replicas
                if r.id != me.id
            }
            replica = Replica(
                me,
                cluster,
                self.clock,
                inline,
                peers,
                self.catalog,
                self.endpoint,
                self.find_leader,
                key_hash=self.key_hash,
                fail_stop=lambda why, i=me.id: self.fail_stops.append((i, why)),
            )
            self.replicas[me.id] = replica
        for replica in self.replicas.values():
            for peer in replica.peers.values():
                peer.startService()
            replica.startService()
        self.network.flush()
        if not getattr(self, "_stopping", False):
            self._stopping = True
            self.addCleanup(self.stop)

    def restart(self) -> None:
        """Stop every replica and start new ones on the same data directories."""
        self.stop()
        self.network.pumps.clear()
        self.make()

    def endpoint(self, target: int) -> Endpoint:
        return Endpoint(self.network, self.replicas, target, self.clock)

    def stop(self) -> None:
        for replica in self.replicas.values():
            d = replica.stopService()
            self.network.flush()
            self.successResultOf(d)
            for peer in replica.peers.values():
                peer.stopService()
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
