"""
Tests of the order replicas together, in one process: three Replica services
whose connections run through iosim, disk work done inline, a Clock for time.
No sockets, no threads.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from toystore.config import load
from toystore.envelope import ApiError, Conflict, StaleEpoch, Unavailable
from toystore.order.journal import Log
from toystore.order.replica import NotLeader, Replica
from toystore.order.resources import replica_root
from toystore.wire import WireClient, WireProtocol

from .helpers import WIRE, connect


def inline(function: Any, *args: Any) -> Deferred[Any]:
    return maybeDeferred(function, *args)


class Network:
    """iosim connections between replicas, pumped on demand; a connection can be held back."""

    def __init__(self) -> None:
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

    def find_leader(self) -> Deferred[dict[str, int]]:
        return succeed(self.front_end) if self.front_end else fail(OSError("no front-end"))

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = Network()
        self.catalog = Catalog()
        self.base = Path(self.mktemp())
        self.base.mkdir(parents=True)

    def make(self, preload: dict[int, tuple[list[bytes], int]] | None = None) -> None:
        """Create and start the replicas, optionally with log lines and an epoch already on disk."""
        cluster = load()
        order = dataclasses.replace(
            cluster.order, data_dir=str(self.base / "order-{id}"), min_insync=self.min_insync, ack_timeout=1.0
        )
        cluster = dataclasses.replace(cluster, order=order, wire=WIRE)
        self.replicas: dict[int, Replica] = {}
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
                lambda: fail(OSError("no front-end")),
            )
            self.replicas[me.id] = replica
        for replica in self.replicas.values():
            for peer in replica.peers.values():
                peer.startService()
            replica.startService()
        self.network.flush()
        self.addCleanup(self.stop)

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
        d = Deferred.fromCoroutine(coroutine)
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


class StreamTests(ReplicaCase):
    """sync, backlog then live records, acks and commitment."""

    def test_backlog_then_live(self) -> None:
        """Orders wait for a second copy; a follower that joins gets the backlog, acks, and they commit."""
        self.make()
        self.elect(1, 3, others=())
        waiting = [self.order(3, f"k{n}") for n in range(3)]
        for d in waiting:
            self.assertNoResult(d)
        self.successResultOf(self.drive(self.replicas[1].lead(1, 3)))
        self.network.flush()
        self.assertEqual([self.successResultOf(d) for d in waiting], [{"order_number": n} for n in range(3)])
        live = self.order(3, "k3")
        self.assertEqual(self.successResultOf(live), {"order_number": 3})
        self.assertEqual(self.file(1), self.file(3))
        self.assertEqual(self.replicas[3].status()["in_sync"], [1])

    def test_same_key_same_order(self) -> None:
        """A repeated key gives the original number and buys once; a different body is a 422."""
        self.make()
        self.elect(1, 3)
        first = self.successResultOf(self.order(3, "k"))
        self.assertEqual(self.successResultOf(self.order(3, "k")), first)
        self.assertEqual(len(self.catalog.bought), 1)
        self.assertEqual(self.failureResultOf(self.order(3, "k", name="Fox"), ApiError).value.code, 422)

    def test_concurrent_same_key(self) -> None:
        """Two requests with one key while the first is being placed share its order."""
        self.make()
        self.elect(1, 3, others=())
        a, b = self.order(3, "k"), self.order(3, "k")
        self.successResultOf(self.drive(self.replicas[1].lead(1, 3)))
        self.network.flush()
        self.assertEqual(self.successResultOf(a), self.successResultOf(b))
        self.assertEqual(len(self.catalog.bought), 1)

    def test_no_majority(self) -> None:
        """Without a second copy within commit_timeout, the order is refused with a 503."""
        self.make()
        self.elect(1, 3, others=())
        d = self.order(3, "k")
        self.clock.advance(self.replicas[3].config.commit_timeout)
        self.assertIn("no majority", self.failureResultOf(d, Unavailable).value.message)

    def test_follower_refuses_orders(self) -> None:
        """A follower answers an order with 421, naming the leader."""
        self.make()
        self.elect(1, 3)
        failure = self.failureResultOf(self.order(1, "k"), NotLeader)
        self.assertIn("replica 3 leads", failure.value.message)

    def test_lagging_follower_leaves_and_rejoins_the_in_sync_set(self) -> None:
        """A follower whose acks stop leaves the in-sync set; orders commit on the other; it rejoins on catching up."""
        self.make()
        self.elect(1, 3)
        self.assertEqual(self.replicas[3].status()["in_sync"], [1, 2])
        stream = next(c for c, f in self.replicas[3].streams.followers.items() if f.id == 2)
        slow = next(p for p in self.network.pumps if p.server is stream)
        self.network.held.add(slow)
        d = self.order(3, "k")
        self.assertEqual(self.successResultOf(d), {"order_number": 0})
        self.clock.advance(1.5)
        self.assertEqual(self.replicas[3].status()["in_sync"], [1])
        self.network.held.clear()
        self.network.flush()
        self.assertEqual(self.replicas[3].status()["in_sync"], [1, 2])
        self.assertEqual(self.file(2), self.file(3))


class DivergenceTests(ReplicaCase):
    """A follower's tail that the leader never committed is cut off."""

    def test_truncate_divergent_tail(self) -> None:
        """Records an old leader wrote alone are truncated when its replica syncs with the new leader."""
        common = Log()
        common.append_leader(1, 3)
        common.append_order(1, "Tux", 1, "k0")
        old = Log(common.lines)
        old.append_order(1, "Tux", 1, "never-committed")
        new = Log(common.lines)
        new.append_leader(2, 2)
        new.append_order(2, "Fox", 1, "k1")
        self.make({3: (old.lines, 1), 2: (new.lines, 2), 1: (new.lines, 2)})
        self.elect(3, 2)
        self.network.flush()
        self.assertEqual(self.file(3), self.file(2))
        self.assertNotIn("never-committed", self.replicas[3].log_.keys)
        self.assertEqual(self.replicas[3].log_.keys, {"k0": 0, "k1": 1})


class PromotionTests(ReplicaCase):
    """A new leader catches up from its peers before it serves, and epochs fence the old one."""

    def test_promotion_copies_the_newest_log(self) -> None:
        """The new leader copies records only a peer has, then opens its epoch after them."""
        log = Log()
        log.append_leader(1, 3)
        for n in range(3):
            log.append_order(1, "Tux", 1, f"k{n}")
        self.make({1: (log.lines, 1), 2: (log.lines[:2], 1), 3: (log.lines, 1)})
        self.network.cut(3)
        promoting = self.drive(self.replicas[2].lead(2, 2))
        self.clock.advance(1.0)  # replica 3 does not answer its status call in time
        self.network.flush()
        self.assertTrue(self.successResultOf(promoting)["ready"])
        self.successResultOf(self.drive(self.replicas[1].lead(2, 2)))
        self.network.flush()
        replica = self.replicas[2]
        self.assertEqual(replica.log_.keys, {"k0": 0, "k1": 1, "k2": 2})
        self.assertEqual(replica.log_.records[-1], {"index": 4, "epoch": 2, "leader": 2, "reconciled": 0})
        self.assertEqual(self.successResultOf(self.order(2, "k3")), {"order_number": 3})

    def test_read_after_promotion_waits_for_commitment(self) -> None:
        """A new leader answers for an old order only once its epoch is committed on a majority."""
        self.make()
        self.elect(1, 3)
        self.successResultOf(self.order(3, "k"))
        self.network.cut(3)
        promoting = self.drive(self.replicas[2].lead(2, 2))
        self.clock.advance(1.0)
        self.network.flush()
        self.successResultOf(promoting)
        read = self.drive(self.replicas[2].order(0))
        self.assertNoResult(read)
        self.successResultOf(self.drive(self.replicas[1].lead(2, 2)))
        self.network.flush()
        self.assertEqual(self.successResultOf(read), {"number": 0, "name": "Tux", "quantity": 1})

    def test_promotion_needs_a_majority(self) -> None:
        """With no peer reachable, a replica refuses to lead (it might lack committed orders)."""
        self.make()
        self.network.cut(1)
        self.network.cut(2)
        d = self.drive(self.replicas[3].lead(1, 3))
        self.clock.advance(WIRE.reconnect_max)
        self.network.flush()
        self.clock.advance(2)
        self.failureResultOf(d, Unavailable)
        self.assertEqual(self.replicas[3].role, "follower")

    def test_epoch_rules(self) -> None:
        """Older notices are refused; an epoch is led once; a second leader for one epoch is a conflict."""
        self.make()
        self.elect(2, 3)
        self.failureResultOf(self.drive(self.replicas[1].lead(1, 3)), StaleEpoch)
        self.failureResultOf(self.drive(self.replicas[1].lead(2, 1)), StaleEpoch)
        self.failureResultOf(self.drive(self.replicas[1].lead(2, 2)), Conflict)
        self.assertEqual(self.successResultOf(self.drive(self.replicas[3].lead(2, 3)))["ready"], True)
        self.assertEqual((self.base / "order-1" / "epoch.json").read_text(), '{"epoch":2}')

    def test_fenced_leader_steps_down(self) -> None:
        """When the catalog refuses the leader's epoch, it steps down and answers 421."""
        self.make()
        self.elect(1, 3)
        self.catalog.refuse = StaleEpoch("epoch 1 is older than epoch 2")
        self.failureResultOf(self.order(3, "k"), NotLeader)
        self.assertEqual(self.replicas[3].role, "follower")
        self.assertEqual(self.replicas[3].streams.followers, {})


class ReconcileTests(ReplicaCase):
    """A new leader adopts the buys a dead leader made but never logged, before it serves."""

    def test_buy_without_order_is_adopted(self) -> None:
        """The catalog sold for key 'lost' under epoch 1; no log has it: the next leader logs it, once."""
        self.make()
        self.elect(1, 3)
        self.successResultOf(self.order(3, "k0"))
        self.catalog.call("buy", {"name": "Fox", "quantity": 2, "key": "lost", "epoch": 1})  # then leader 3 died
        self.network.cut(3)
        promoting = self.drive(self.replicas[2].lead(2, 2))
        self.clock.advance(1.0)
        self.network.flush()
        self.successResultOf(promoting)
        self.successResultOf(self.drive(self.replicas[1].lead(2, 2)))
        self.network.flush()
        log = self.replicas[2].log_
        self.assertEqual(log.order(1), {"number": 1, "name": "Fox", "quantity": 2, "key": "lost", "seq": 2})
        self.assertEqual(log.records[-1], {"index": 3, "epoch": 2, "leader": 2, "reconciled": 2})
        self.assertEqual(log.reconciled(), 2)
        # The client's retry finds its order; nothing is bought twice.
        self.assertEqual(
            self.successResultOf(self.drive(self.replicas[2].place("Fox", 2, "lost"))), {"order_number": 1}
        )
        self.assertEqual(self.successResultOf(self.order(2, "k1")), {"order_number": 2})
        self.assertEqual(len(self.catalog.bought), 3)
        self.assertEqual(self.file(1), self.file(2))

    def test_reconcile_fences_the_old_leader(self) -> None:
        """Once a new leader reconciled, the old leader's buys are refused and it steps down."""
        self.make()
        self.elect(1, 3)
        self.successResultOf(self.drive(self.replicas[2].lead(2, 2)))
        self.network.flush()
        self.failureResultOf(self.order(3, "late"), NotLeader)
        self.assertEqual(self.replicas[3].role, "follower")
        self.assertEqual([b["key"] for b in self.catalog.bought], [])

    def test_no_catalog_no_leading(self) -> None:
        """A replica that cannot reach the catalog cannot reconcile, so it does not lead (503)."""
        self.make()
        self.catalog.refuse = Unavailable("catalog unreachable")
        self.failureResultOf(self.drive(self.replicas[3].lead(1, 3)), Unavailable)
        self.assertEqual(self.replicas[3].role, "follower")


class FenceTests(ReplicaCase):
    """A promoting peer fences each replica it asks, so an older leader can commit nothing more."""

    def test_fenced_followers_stop_counting_for_the_old_leader(self) -> None:
        """With both followers fenced at epoch 2, leader 3 of epoch 1 cannot commit: no majority."""
        self.make()
        self.elect(1, 3)
        for i in (1, 2):
            self.assertEqual(self.successResultOf(self.drive(self.replicas[i].fence(2)))["epoch"], 2)
        self.assertEqual((self.base / "order-1" / "epoch.json").read_text(), '{"epoch":2}')
        d = self.order(3, "k")
        self.clock.advance(self.replicas[3].config.commit_timeout)
        self.network.flush()
        self.assertIn("no majority", self.failureResultOf(d, Unavailable).value.message)

    def test_new_epoch_and_leading_never_overlap(self) -> None:
        """The turn a leader accepts a newer epoch, it no longer leads: it never reports (or writes) both."""
        self.make()
        self.elect(1, 3)
        self.replicas[3].accept_epoch(2)
        status = self.replicas[3].status()
        self.assertEqual((status["role"], status["epoch"], status["leader"]), ("follower", 2, None))

    def test_fenced_leader_steps_down(self) -> None:
        """A leader asked by a peer promoting to a newer epoch stops leading."""
        self.make()
        self.elect(1, 3)
        status = self.successResultOf(self.drive(self.replicas[3].fence(2)))
        self.assertEqual((status["role"], status["epoch"], status["leader"]), ("follower", 2, None))
        self.failureResultOf(self.order(3, "k"), NotLeader)


class DiscoveryTests(ReplicaCase):
    """A follower that nobody told finds the leader by itself."""

    def test_from_the_front_end(self) -> None:
        """GET /leader names the leader: the follower accepts its epoch and streams from it."""
        self.make()
        self.elect(4, 3, others=(2,))
        self.front_end = {"leader": 3, "epoch": 4}
        self.clock.advance(self.replicas[1].config.discovery_interval)
        self.network.flush()
        self.assertEqual((self.replicas[1].leader, self.replicas[1].epoch), (3, 4))
        self.assertEqual(self.file(1), self.file(3))

    def test_from_the_peers(self) -> None:
        """With the front-end down, the peers' status names the leader."""
        self.make()
        self.elect(4, 3, others=(2,))
        self.clock.advance(self.replicas[1].config.discovery_interval)
        self.network.flush()
        self.assertEqual((self.replicas[1].leader, self.replicas[1].epoch), (3, 4))
        self.assertEqual(self.replicas[3].status()["in_sync"], [1, 2])


class OperatorPortTests(ReplicaCase):
    """GET /orders/<n>, /health and /metrics of a replica, through StubTreq."""

    def get(self, replica: int, path: str) -> tuple[int, Any]:
        treq = StubTreq(replica_root(self.replicas[replica]))
        response = self.successResultOf(treq.get("http://replica" + path))
        body = self.successResultOf(response.content())
        return response.code, body

    def test_endpoints(self) -> None:
        """Orders come from the replica's own log; bad numbers are 400, unknown ones 404."""
        self.make()
        self.elect(1, 3)
        self.successResultOf(self.order(3, "k", name="Whale"))
        for replica in (3, 1):
            code, body = self.get(replica, "/orders/0")
            self.assertEqual((code, json.loads(body)), (200, {"data": {"number": 0, "name": "Whale", "quantity": 1}}))
        self.assertEqual(self.get(3, "/orders/1")[0], 404)
        self.assertEqual(self.get(3, "/orders/-1")[0], 400)
        self.assertEqual(self.get(3, "/orders/x")[0], 400)
        code, body = self.get(3, "/health")
        health = json.loads(body)["data"]
        self.assertEqual((health["id"], health["role"], health["epoch"], health["last_order"]), (3, "leader", 1, 0))
        code, body = self.get(3, "/metrics")
        self.assertIn(b'toystore_order_role{role="leader"} 1.0', body)
        self.assertIn(b"toystore_order_log_committed 2.0", body)


class InSyncTests(SynchronousTestCase):
    """The in-sync set: late acknowledgements take a follower out, not a steady stream of work."""

    def setUp(self) -> None:
        from toystore.order.replication import Follower, Streams

        self.clock = Clock()
        replica = type(
            "StubReplica",
            (),
            {
                "log_": Log(),
                "epoch": 1,
                "id": 3,
                "role": "leader",
                "advance_commit": lambda self: None,
                "metrics": type("M", (), {"update": lambda self, r: None})(),
            },
        )()
        self.log = replica.log_
        self.streams = Streams(replica, self.clock, ack_timeout=1.0)
        self.connection, self.transport = connect(None, self.clock)
        self.follower = Follower(2, self.connection, sent=0)
        self.streams.followers[self.connection] = self.follower

    def write(self) -> None:
        self.log.append_order(1, "Tux", 1, f"k{len(self.log)}")
        self.streams.send_new()

    def ack(self, length: int) -> None:
        self.streams.ack({"length": length}, self.connection)

    def at(self, when: float) -> None:
        self.clock.advance(when - self.clock.seconds())
        self.streams._check_lag()

    def test_busy_follower_stays_in_sync(self) -> None:
        """A follower always one record behind, but acking each within the timeout, stays in the set."""
        self.write()
        self.ack(1)
        self.assertEqual(self.streams.in_sync(), [2])
        for step in range(1, 10):
            self.at(step * 0.6)
            self.write()
            self.at(step * 0.6 + 0.1)
            self.write()
            self.ack(len(self.log) - 1)
            self.assertEqual(self.streams.in_sync(), [2], f"at {self.clock.seconds()} s")

    def test_silent_follower_leaves_and_returns(self) -> None:
        """A record unacknowledged past the timeout takes it out; acknowledging the old records brings it back."""
        self.write()
        self.ack(1)
        self.write()
        self.at(0.9)
        self.assertEqual(self.streams.in_sync(), [2])
        self.at(1.1)
        self.assertEqual(self.streams.in_sync(), [])
        self.ack(2)
        self.assertEqual(self.streams.in_sync(), [2])
