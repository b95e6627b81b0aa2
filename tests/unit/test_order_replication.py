"""
Tests of the order replicas together, through the public API of
:class:`~toystore.order.replica.Replica` and its operator port: three real
replicas that elect their own leader, and a real catalog, on an in-memory
network (:mod:`tests.unit.replicas`), disk work done inline, simulated time.
No sockets, no threads, no sleeps.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred

from toystore.envelope import ApiError, NotFound
from toystore.order.core import Role
from toystore.order.records import decode
from toystore.order.replica import NotLeader, Replica
from toystore.order.resources import replica_root

from .replicas import ReplicaCase


class Cluster(ReplicaCase):
    """Helpers over :class:`ReplicaCase`: reads, failures, and the logs as records."""

    def serving_among(self, ids: tuple[int, ...], within: float = 10.0) -> Replica:
        """Let time pass until one of replicas ``ids`` serves (others may still believe they do); that replica."""

        def found() -> list[Replica]:
            return [self.replicas[i] for i in ids if (node := self.replicas[i].node) is not None and node.serving]

        self.advance(within, until=lambda: bool(found()))
        serving = found()
        self.assertEqual(len(serving), 1, f"one of {ids} serves after {within} s")
        return serving[0]

    def get(self, i: int, number: int, relayed: bool = False) -> Deferred[Any]:
        """A ``get`` of order ``number`` sent to replica ``i``, delivered."""
        return self.drive(maybeDeferred(self.replicas[i].order, number, relayed))

    def error(self, d: Deferred[Any], within: float = 5.0) -> ApiError:
        """Let time pass until ``d`` fails (within ``within`` seconds); its error."""
        self.advance(within, until=lambda: d.called)
        return self.failureResultOf(d, ApiError).value

    def records(self, i: int) -> list[dict[str, Any]]:
        """Replica ``i``'s log as its file holds it."""
        return [decode(line) for line in self.file(i).splitlines(keepends=True)]

    def keys(self, i: int) -> dict[str, int]:
        """Key -> order number, of every order record in replica ``i``'s file (a key twice fails the test)."""
        keys: dict[str, int] = {}
        for record in self.records(i):
            order = record.get("order")
            if order is not None:
                self.assertNotIn(order["key"], keys, f"key {order['key']!r} twice in the log of replica {i}")
                keys[order["key"]] = order["number"]
        return keys

    def settled(self) -> bool:
        """Whether one replica serves, and every one is connected to its peers and holds its log and commit point."""
        serving = [r for r in self.replicas.values() if r.node is not None and r.node.serving]
        if len(serving) != 1:
            return False
        leader = serving[0]
        length, commit = len(leader.order_log), leader.status()["commit"]
        for replica in self.replicas.values():
            status = replica.status()
            if not all(up for peer, up in status["links"].items() if int(peer) in self.replicas):
                return False
            if (status["leader"], status["durable"], status["commit"]) != (leader.id, length, commit):
                return False
        return True

    def settle(self, within: float = 5.0) -> None:
        """Let time pass until the replicas have :meth:`settled` (and a few heartbeats more)."""
        self.advance(within, until=self.settled)
        statuses = {i: r.status() for i, r in self.replicas.items()}
        self.assertTrue(self.settled(), f"not settled after {within} s: {statuses}")
        self.advance(self.cluster.order.heartbeat * 3)

    def assert_identical(self, ids: tuple[int, ...] = (1, 2, 3)) -> bytes:
        """The files of replicas ``ids`` are byte-identical (and not empty): their contents."""
        first = self.file(ids[0])
        self.assertTrue(first)
        for i in ids[1:]:
            self.assertEqual(self.file(i), first, f"the logs of replicas {ids[0]} and {i} differ")
        return first

    def sold(self, key: str) -> int:
        """How many buys of the catalog's ledger are under ``key``."""
        return sum(1 for buy in self.buys() if buy["key"] == key)


class ElectionTests(Cluster):
    """The replicas elect their leader themselves, and their logs converge."""

    def test_highest_id_leads_and_logs_are_identical(self) -> None:
        """
        At start the replicas come to serve under replica 3 (the highest id),
        all in its epoch; after orders sent to it and to its followers, every
        log is byte-identical and committed everywhere.
        """
        self.make()
        leader = self.serving(expected=3)
        self.assertTrue(leader.status()["serving"])
        for i in (1, 2):
            status = self.replicas[i].status()
            self.assertEqual((status["role"], status["leader"], status["serving"]), ("follower", 3, False))
        self.assertEqual({r.epoch for r in self.replicas.values()}, {leader.epoch})
        for n, via in enumerate((3, 1, 2, 3)):
            self.assertEqual(self.result(self.order(via, f"k{n}")), {"order_number": n})
        self.settle()
        self.assert_identical()
        self.assertEqual(self.keys(1), {f"k{n}": n for n in range(4)})
        for i in (1, 2, 3):
            self.assertEqual(self.replicas[i].status()["commit"], len(self.records(3)))
        self.assertEqual(self.fail_stops, [])

    def test_follower_back_from_a_cut_does_not_depose_the_leader(self) -> None:
        """
        A follower cut off for several election timeouts only asks for
        pre-votes: it raises no epoch and counts no election; back, it
        follows the same leader in the same epoch and catches up.
        """
        self.make()
        leader = self.serving(expected=3)
        self.settle()
        epoch, elections = leader.epoch, self.replicas[1].status()["elections"]
        self.network.cut(1)
        self.assertEqual(self.result(self.order(3, "k0")), {"order_number": 0})  # committed on 2 and 3
        self.advance(leader.timing.election * 4)
        status = self.replicas[1].status()
        self.assertEqual((status["role"], status["epoch"], status["elections"]), ("pre-candidate", epoch, elections))
        self.network.restore(1)
        self.settle()
        self.assertEqual((leader.epoch, leader.status()["serving"]), (epoch, True))
        self.assertEqual(self.replicas[1].status()["elections"], elections)
        self.assert_identical()

    def test_followers_that_cannot_reach_the_leader_answer_on_its_connection(self) -> None:
        """
        Both followers lose their own connections to the leader (its lines
        port cut one way): they answer it on its connections to them, so it
        keeps committing, in the same epoch, with no election anywhere.
        """
        self.make()
        leader = self.serving(expected=3)
        self.settle()
        epoch = leader.epoch
        elections = {i: r.status()["elections"] for i, r in self.replicas.items()}
        for i in (1, 2):
            self.replicas[i].links.clients[3].stopService()  # no reconnection: cut until the end
        self.network.flush()
        self.assertEqual([self.replicas[i].status()["links"]["3"] for i in (1, 2)], [False, False])
        for n in range(3):
            self.assertEqual(self.result(self.order(3, f"k{n}")), {"order_number": n})
            self.advance(leader.timing.election)
        self.assertEqual((leader.epoch, leader.status()["serving"]), (epoch, True))
        self.assertEqual({i: r.status()["elections"] for i, r in self.replicas.items()}, elections)
        self.assertEqual({r.status()["commit"] for r in self.replicas.values()}, {len(leader.order_log)})
        self.assert_identical()


class RelayTests(Cluster):
    """A follower passes orders and reads on to the leader, once."""

    def test_follower_relays_orders_and_reads(self) -> None:
        """An order and a get sent to a follower are answered by the leader, which counts them as its own calls."""
        self.make()
        leader = self.serving(expected=3)
        served = leader.metrics.calls.count("order", "ok")
        self.assertEqual(self.result(self.order(1, "k", name="Whale", quantity=2)), {"order_number": 0})
        self.assertEqual(leader.metrics.calls.count("order", "ok"), served + 1)
        self.assertEqual(self.keys(3), {"k": 0})
        self.assertEqual(self.result(self.get(2, 0)), {"number": 0, "name": "Whale", "quantity": 2})
        self.assertEqual(leader.metrics.calls.count("get", "ok"), 1)
        self.assertIsInstance(self.error(self.get(2, 1)), NotFound)

    def test_relayed_call_is_not_relayed_again(self) -> None:
        """
        A call marked relayed that reaches a follower (over the wire, or
        through ``place``) is refused with 421 naming the leader it knows,
        and goes no further: nothing is bought, the leader serves nothing.
        """
        self.make()
        self.serving(expected=3)
        client = self.network.client(1, label="replica 1 (from the test)")
        for type, fields in (
            ("order", {"name": "Tux", "quantity": 1, "key": "k", "relayed": True}),
            ("get", {"number": 0, "relayed": True}),
        ):
            error = self.error(self.drive(client.call(type, fields)))
            self.assertEqual(error.code, 421, type)
            self.assertIn("replica 3 leads", error.message)
        self.assertIsInstance(self.error(self.drive(self.replicas[2].place("Tux", 1, "k", relayed=True))), NotLeader)
        self.assertEqual(self.buys(), [])
        self.assertEqual(self.replicas[3].metrics.calls.count("order", "ok"), 0)

    def test_relayed_call_to_the_leader_is_served(self) -> None:
        """The leader serves a call marked relayed as any other."""
        self.make()
        self.serving(expected=3)
        client = self.network.client(3, label="replica 3 (from the test)")
        fields = {"name": "Tux", "quantity": 1, "key": "k", "relayed": True}
        self.assertEqual(self.result(self.drive(client.call("order", fields))), {"order_number": 0})


class KeyTests(Cluster):
    """An idempotency key is one order, bought once."""

    def test_same_key_same_number(self) -> None:
        """
        A repeated key, on the leader or through a follower, gives the first
        number and buys once; the key with another body is 422.
        """
        self.make()
        self.serving(expected=3)
        self.assertEqual(self.result(self.order(3, "a")), {"order_number": 0})
        self.assertEqual(self.result(self.order(3, "b")), {"order_number": 1})
        self.assertEqual(self.result(self.order(3, "a")), {"order_number": 0})
        self.assertEqual(self.result(self.order(1, "a")), {"order_number": 0})
        self.assertEqual(self.error(self.order(3, "a", name="Fox")).code, 422)
        self.assertEqual(self.error(self.order(2, "a", quantity=2)).code, 422)
        self.assertEqual((self.sold("a"), self.sold("b")), (1, 1))
        self.settle()
        self.assertEqual(self.keys(1), {"a": 0, "b": 1})

    def test_concurrent_same_key_share_one_buy(self) -> None:
        """Calls with one key while its buy is under way share its order: one buy; another body meanwhile is 422."""
        self.make()
        leader = self.serving(expected=3)
        leader.catalog.hold()
        first, second, relayed = self.order(3, "k"), self.order(3, "k"), self.order(1, "k")
        other = self.order(3, "k", name="Fox")
        self.assertEqual(self.error(other).code, 422)
        for d in (first, second, relayed):
            self.assertNoResult(d)
        leader.catalog.release()
        self.assertEqual([self.result(d) for d in (first, second, relayed)], [{"order_number": 0}] * 3)
        self.assertEqual([fields["key"] for type, fields in leader.catalog.calls if type == "buy"], ["k"])
        self.assertEqual(self.sold("k"), 1)


class MajorityTests(Cluster):
    """An order is acknowledged only once it is on a majority."""

    def test_no_majority_then_retry(self) -> None:
        """
        With both followers dead an order is not acknowledged (421 or 503);
        with one back, its retry gets the number of its record, and the
        catalog sold it once.
        """
        self.make()
        self.serving(expected=3)
        self.assertEqual(self.result(self.order(3, "before")), {"order_number": 0})
        self.kill(1)
        self.kill(2)
        d = self.order(3, "k")
        error = self.error(d, within=self.replicas[3].config.commit_timeout + 1)
        self.assertIn(error.code, (421, 503))
        self.assertEqual(self.sold("k"), 1)  # bought, logged on 3 alone
        self.make(ids=(1,))
        self.serving()
        retry = self.result(self.order(1, "k"))
        self.assertEqual(retry, {"order_number": 1})
        self.assertEqual(self.sold("k"), 1)
        self.settle()
        self.assert_identical((1, 3))
        self.assertEqual(self.keys(1), {"before": 0, "k": 1})


class InDoubtBuyTests(Cluster):
    """A buy whose answer was lost is asked again under its key, and made once."""

    def test_lost_reply(self) -> None:
        """
        The catalog makes the buy but its reply is lost (the link drops):
        the leader asks again under the same key until the catalog answers,
        and acknowledges the order once; the ledger has the key once.
        """
        self.make()
        leader = self.serving(expected=3)
        buy = self.catalog.call_buy

        def buy_then_cut(message: dict[str, Any], connection: Any) -> Any:
            d = ensureDeferred(buy(message, connection))
            self.assertTrue(d.called, "the buy is made at once (disk work inline)")
            leader.catalog.cut()  # its reply never arrives
            return d

        self.catalog.call_buy = buy_then_cut  # type: ignore[method-assign]
        d = self.order(3, "k")
        self.catalog.call_buy = buy  # type: ignore[method-assign]
        self.assertEqual(self.sold("k"), 1)
        self.advance(leader.timing.election / 2)  # (a leader without the catalog for an election timeout hands over)
        self.assertNoResult(d)
        asked = [fields for type, fields in leader.catalog.calls if type == "buy"]
        self.assertGreater(len(asked), 1, "the buy in doubt is asked again")
        self.assertEqual({fields["key"] for fields in asked}, {"k"})
        leader.catalog.restore()
        self.assertEqual(self.result(d), {"order_number": 0})
        self.assertEqual(self.sold("k"), 1)
        self.settle()
        self.assertEqual(self.keys(1), {"k": 0})
        self.assert_identical()

    def test_held_link(self) -> None:
        """
        The catalog stops answering mid-buy (held links: the call times out;
        no replica hears it, so none is fitter to lead): the order is
        acknowledged once it answers again, and bought once.
        """
        self.make()
        self.serving(expected=3)
        for replica in self.replicas.values():
            replica.catalog.hold()
        d = self.order(3, "k")
        self.advance(self.cluster.wire.call_timeout + 1)
        self.assertNoResult(d)
        for replica in self.replicas.values():
            replica.catalog.release()
        self.assertEqual(self.result(d, within=10), {"order_number": 0})
        self.assertEqual(self.sold("k"), 1)
        self.assertEqual(self.result(self.order(3, "k")), {"order_number": 0})


class PartitionTests(Cluster):
    """A leader cut off from its followers: the others go on, and its tail that never committed is cut."""

    def test_isolated_leader_tail_is_cut(self) -> None:
        """
        Leader 3 is cut off with an order it bought but could not commit; 1
        and 2 elect a leader, which adopts that buy, and take orders; an
        order sent to 3 meanwhile is refused and bought nowhere.  When 3 is
        back its uncommitted tail is cut and every log ends identical; each
        unacknowledged order is in every log or in none, as its retry says.
        """
        self.make()
        old = self.serving(expected=3)
        self.assertEqual(self.result(self.order(3, "k0")), {"order_number": 0})
        old_epoch = old.epoch
        self.network.cut(3)
        stranded = self.order(3, "stranded")  # bought at once, logged on 3 alone
        self.assertNoResult(stranded)
        tail = len(old.order_log) - 1
        self.assertEqual(self.records(3)[tail]["epoch"], old_epoch)
        self.assertEqual(self.records(3)[tail]["order"]["key"], "stranded")
        new = self.serving_among((1, 2))
        self.assertGreater(new.epoch, old_epoch)
        self.assertEqual(self.error(stranded).code, 421)  # 3 stepped down when it lost its majority
        self.assertFalse(old.status()["serving"])
        self.assertEqual(self.error(self.order(3, "late")).code, 421)  # 3 no longer leads: nothing bought
        self.assertEqual(self.sold("late"), 0)
        self.assertEqual(self.result(self.order(new.id, "k1")), {"order_number": 2})
        self.network.restore(3)
        self.serving(expected=3, within=15)
        self.settle()
        self.assert_identical()
        cut = self.records(3)[tail]
        self.assertGreater(cut["epoch"], old_epoch, "3's uncommitted record was replaced")
        self.assertNotEqual(cut.get("order", {}).get("key"), "stranded")
        # Bought but never acknowledged: adopted by the new leader, so in every log, at the number its retry gets.
        self.assertEqual(self.result(self.order(1, "stranded")), {"order_number": self.keys(1)["stranded"]})
        self.assertEqual(self.keys(1)["stranded"], 1)
        # Refused and never bought: in no log; its retry makes it an order.
        self.assertNotIn("late", self.keys(1))
        self.assertEqual(self.result(self.order(2, "late")), {"order_number": 3})
        self.settle()
        self.assert_identical()
        self.assertEqual(self.keys(2), {"k0": 0, "stranded": 1, "k1": 2, "late": 3})
        self.assertEqual([self.sold(key) for key in ("k0", "stranded", "k1", "late")], [1, 1, 1, 1])
        self.assertEqual(self.fail_stops, [])


class HandoverTests(Cluster):
    """A leader told to stop hands over first, so a rolling restart costs no election timeout."""

    def test_stop_hands_over(self) -> None:
        """
        SIGTERM of the leader: it hands over and learns it did, so its stop
        and the next leader's start take less than one election timeout; the
        next leader leads the next epoch and takes orders.
        """
        self.make()
        old = self.serving(expected=3)
        self.assertEqual(self.result(self.order(3, "k0")), {"order_number": 0})
        self.settle()
        epoch, handovers, started = old.epoch, old.status()["handovers"], self.clock.seconds()
        self.stop((3,))
        new = self.serving()
        self.assertLess(self.clock.seconds() - started, old.timing.election / 2)
        self.assertEqual(new.epoch, epoch + 1, "one election, won at once")
        status = old.status()
        self.assertEqual((status["role"], status["serving"], status["handovers"]), ("stopping", False, handovers + 1))
        self.assertEqual(old.node and old.node.role, Role.FOLLOWER, "the old leader saw its successor win")
        self.assertEqual(self.result(self.order(new.id, "k1")), {"order_number": 1})
        self.assertEqual(self.result(self.order(new.id, "k0")), {"order_number": 0})
        self.settle()
        self.assert_identical((1, 2))
        self.assertEqual(self.keys(1), {"k0": 0, "k1": 1})

    def test_stop_hands_over_to_a_follower_behind(self) -> None:
        """
        The leader is stopped while its followers' answers to its last
        records are still on the way: it brings its successor up to date
        (hearing those answers while it stops, which also commit the
        order that waited for them), hands over, and stops in less than
        one election timeout.
        """
        self.make()
        old = self.serving(expected=3)
        self.settle()
        handovers = old.status()["handovers"]
        answers = [pipe for pipe in self.network.pipes if pipe.source in (1, 2) and pipe.target == 3]
        self.assertEqual(len(answers), 2)
        for pipe in answers:
            pipe.hold()
        pending = self.order(3, "k0")
        self.advance(old.timing.heartbeat)
        self.assertNoResult(pending)
        started = self.clock.seconds()
        stopping = old.stopService()
        self.assertEqual(old.role, "stopping")
        for pipe in answers:
            pipe.release()
        self.advance(old.timing.election, until=lambda: stopping.called)
        self.successResultOf(stopping)
        self.assertLess(self.clock.seconds() - started, old.timing.election / 2, "it handed over")
        self.assertEqual(old.status()["handovers"], handovers + 1)
        self.assertEqual(self.successResultOf(pending), {"order_number": 0})
        old.catalog.stopService()
        del self.replicas[3]
        self.network.cut(3)
        new = self.serving(within=old.timing.election / 2)
        self.assertEqual(self.result(self.order(new.id, "k0")), {"order_number": 0})
        self.assertEqual(self.sold("k0"), 1)

    def test_stopping_follower_refuses(self) -> None:
        """A follower being stopped neither relays nor serves: 421."""
        self.make()
        self.serving(expected=3)
        follower = self.replicas[1]
        stopping = follower.stopService()
        self.assertEqual(follower.role, "stopping")
        self.assertIsInstance(self.error(self.drive(follower.place("Tux", 1, "k"))), NotLeader)
        self.result(stopping)
        self.assertEqual(self.sold("k"), 0)


class StaleLeaderTests(Cluster):
    """A leader that may have been replaced answers nothing from its own log."""

    def test_isolated_leader_refuses_reads(self) -> None:
        """
        Leader 3 is cut off.  A get of an order committed in its log is
        answered at once (a committed record is final); a get of a number
        it does not hold is not answered 404 (it cannot confirm it leads)
        and fails with 421 when it steps down; once 1 and 2 have a leader
        with a newer order, a get of that order on 3 is refused, not
        answered 404.
        """
        self.make()
        old = self.serving(expected=3)
        self.assertEqual(self.result(self.order(3, "k0")), {"order_number": 0})
        self.network.cut(3)
        self.assertEqual(self.successResultOf(self.get(3, 0)), {"number": 0, "name": "Tux", "quantity": 1})
        early = self.get(3, 1)
        self.advance(old.timing.election / 2)
        self.assertTrue(old.status()["serving"], "3 still believes it leads")
        self.assertNoResult(early)
        new = self.serving_among((1, 2))
        self.assertIsInstance(self.error(early), NotLeader)
        self.assertFalse(old.status()["serving"])
        self.assertEqual(self.result(self.order(new.id, "k1")), {"order_number": 1})
        self.assertEqual(self.result(self.get(new.id, 1)), {"number": 1, "name": "Tux", "quantity": 1})
        other = 3 - new.id
        self.assertEqual(self.result(self.get(other, 1)), {"number": 1, "name": "Tux", "quantity": 1})
        self.assertIn(self.error(self.get(3, 1)).code, (421, 503))

    def test_fenced_leader_refuses_orders(self) -> None:
        """
        A leader whose epoch the catalog has fenced (a newer leader
        reconciled) refuses the order (421, nothing logged) and steps down in
        that turn, without waiting an election timeout for its peers to say so.
        """
        self.make()
        leader = self.serving(expected=3)
        self.result(self.to_catalog("reconcile", epoch=leader.epoch + 1, after=0))
        length = len(leader.order_log)
        refused = self.order(3, "k")
        self.assertIsInstance(self.failureResultOf(refused, NotLeader).value, NotLeader)
        self.assertEqual((leader.status()["role"], leader.status()["serving"]), ("follower", False))
        self.assertEqual(self.sold("k"), 0)
        self.assertEqual(len(leader.order_log), length)


class OneTurnTests(Cluster):
    """The orders bought in one reactor turn become records together."""

    def setUp(self) -> None:
        super().setUp()
        # Lines long enough for an append of several records (the harness's 4096 bytes allow one).
        wire = dataclasses.replace(self.cluster.wire, max_line=1 << 16)
        self.cluster = dataclasses.replace(self.cluster, wire=wire)
        self.network.config = wire

    def test_one_proposal_one_append_one_write(self) -> None:
        """
        Three orders bought in one turn: one propose, one append with
        records to each follower, one log write on each replica.
        """
        self.make()
        leader = self.serving(expected=3)
        self.settle()
        self.assertGreaterEqual(leader.timing.max_batch, 3)
        node = leader.node
        assert node is not None
        proposals: list[int] = []
        propose = node.propose

        def counting(payloads: list[Any], now: float) -> Any:
            proposals.append(len(payloads))
            return propose(payloads, now)

        node.propose = counting  # type: ignore[method-assign]
        appends: dict[int, list[int]] = {1: [], 2: []}
        for i in (1, 2):
            self.count_appends(self.replicas[i], appends[i])

        def writes(i: int) -> tuple[float | None, float | None]:
            value = self.replicas[i].metrics.registry.get_sample_value
            return value("toystore_order_fsync_batch_size_count"), value("toystore_order_fsync_batch_size_sum")

        before = {i: writes(i) for i in (1, 2, 3)}
        placed = [Deferred.fromCoroutine(leader.place("Tux", 1, f"k{n}")) for n in range(3)]
        self.assertEqual(proposals, [], "nothing is proposed before the buys are answered")
        self.network.flush()
        self.assertEqual([self.successResultOf(d) for d in placed], [{"order_number": n} for n in range(3)])
        self.assertEqual(proposals, [3])
        self.assertEqual(appends, {1: [3], 2: [3]})
        for i in (1, 2, 3):
            count, total = before[i]
            self.assertEqual(writes(i), ((count or 0) + 1, (total or 0) + 1), f"replica {i}")
        self.assert_identical()

    @staticmethod
    def count_appends(replica: Replica, counts: list[int]) -> None:
        """Record in ``counts`` the number of records of each append ``replica`` receives that carries some."""
        push = replica.push_append

        def counting(message: dict[str, Any], connection: Any) -> None:
            if message["lines"]:
                counts.append(len(message["lines"]))
            push(message, connection)

        replica.push_append = counting  # type: ignore[method-assign]


class OperatorPortTests(Cluster):
    """A replica's operator port: GET /orders/<n>, /health and /metrics, through StubTreq."""

    def fetch(self, replica: Replica, path: str) -> tuple[int, bytes]:
        treq: Any = StubTreq(replica_root(replica))  # (its verbs are made at run time)
        response = self.successResultOf(treq.get("http://replica" + path))
        return response.code, self.successResultOf(response.content())

    def health(self, replica: Replica) -> dict[str, Any]:
        code, body = self.fetch(replica, "/health")
        self.assertEqual(code, 200)
        data: dict[str, Any] = json.loads(body)["data"]
        return data

    def gauges(self, replica: Replica) -> dict[str, Any]:
        """The state /metrics shows, from its text."""
        code, body = self.fetch(replica, "/metrics")
        self.assertEqual(code, 200)
        samples: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        roles = [name for name in samples if name.startswith("toystore_order_role{") and samples[name] == 1]
        return {
            "role": roles,
            "epoch": samples["toystore_order_epoch"],
            "serving": samples["toystore_order_serving"],
            "commit": samples["toystore_order_log_committed"],
            "records": samples["toystore_order_log_records"],
            "lag": {name: value for name, value in samples.items() if name.startswith("toystore_order_follower_lag{")},
            "elections": samples["toystore_order_elections_total"],
            "prevotes_refused": samples["toystore_order_prevotes_refused_total"],
            "handovers": samples["toystore_order_handovers_total"],
            "orders": samples.get('toystore_order_calls_total{outcome="ok",type="order"}', 0.0),
            "order_seconds": samples.get('toystore_order_call_seconds_count{type="order"}', 0.0),
        }

    def test_orders(self) -> None:
        """
        /orders/<n> answers from the replica's own durable log, on followers
        too; bad numbers are 400, unknown ones 404.
        """
        self.make()
        self.serving(expected=3)
        self.result(self.order(3, "k", name="Whale"))
        self.settle()
        for replica in self.replicas.values():
            code, body = self.fetch(replica, "/orders/0")
            self.assertEqual((code, json.loads(body)), (200, {"data": {"number": 0, "name": "Whale", "quantity": 1}}))
        self.assertEqual(self.fetch(self.replicas[1], "/orders/1")[0], 404)
        self.assertEqual(self.fetch(self.replicas[3], "/orders/-1")[0], 400)
        self.assertEqual(self.fetch(self.replicas[3], "/orders/x")[0], 400)

    def test_health(self) -> None:
        """
        /health is the replica's status: role, epoch, serving, commit, lag,
        elections, prevotes_refused, handovers.
        """
        self.make()
        leader = self.serving(expected=3)
        self.result(self.order(3, "k"))
        self.settle()
        health = {i: self.health(r) for i, r in self.replicas.items()}
        for i, replica in self.replicas.items():
            self.assertEqual(health[i], json.loads(json.dumps(replica.status())))
        self.assertEqual(
            {k: health[3][k] for k in ("id", "role", "leader", "serving", "last_order", "lag", "in_sync")},
            {
                "id": 3,
                "role": "leader",
                "leader": 3,
                "serving": True,
                "last_order": 0,
                "lag": {"1": 0, "2": 0},
                "in_sync": [1, 2],
            },
        )
        self.assertEqual(health[3]["commit"], health[3]["length"])
        for i in (1, 2):
            self.assertEqual(
                {k: health[i][k] for k in ("role", "leader", "serving", "epoch", "commit", "lag")},
                {
                    "role": "follower",
                    "leader": 3,
                    "serving": False,
                    "epoch": leader.epoch,
                    "commit": health[3]["commit"],
                    "lag": {},
                },
            )
        self.assertGreaterEqual(health[3]["elections"], 1)
        for key in ("prevotes_refused", "handovers", "elections"):
            self.assertIsInstance(health[3][key], int)

    def test_committed_order_trails_an_order_not_yet_committed(self) -> None:
        """committed_order is the newest order whose record is committed; last_order may be newer."""
        self.make()
        self.serving(expected=3)
        self.result(self.order(3, "k0"))
        self.settle()
        orders = {(r.status()["last_order"], r.status()["committed_order"]) for r in self.replicas.values()}
        self.assertEqual(orders, {(0, 0)})
        self.network.cut(1)
        self.network.cut(2)
        placing = self.order(3, "k1")  # logged by the leader, copied by nobody: not committed
        self.advance(0.2)
        status = self.replicas[3].status()
        self.assertEqual((status["last_order"], status["committed_order"]), (1, 0))
        self.assertNoResult(placing)
        placing.addErrback(lambda failure: None)  # refused once the leader, alone, steps down

    def test_metrics_read_at_scrape_time(self) -> None:
        """
        /metrics shows the state as it is when scraped: a dead follower's lag
        grows, the commit point moves, a stopping leader's role, serving and
        handovers change.
        """
        self.make()
        leader = self.serving(expected=3)
        self.result(self.order(3, "k0"))
        self.settle()
        status = leader.status()
        first = self.gauges(leader)
        self.assertEqual(
            first,
            {
                "role": ['toystore_order_role{role="leader"}'],
                "epoch": status["epoch"],
                "serving": 1,
                "commit": status["commit"],
                "records": status["length"],
                "lag": {'toystore_order_follower_lag{replica="1"}': 0, 'toystore_order_follower_lag{replica="2"}': 0},
                "elections": status["elections"],
                "prevotes_refused": status["prevotes_refused"],
                "handovers": status["handovers"],
                "orders": 0,
                "order_seconds": 0,
            },
        )
        self.kill(1)
        for n in range(1, 4):
            self.result(self.order(2, f"k{n}"))
        second = self.gauges(leader)
        self.assertEqual(second["lag"]['toystore_order_follower_lag{replica="1"}'], 3)
        self.assertEqual(second["lag"]['toystore_order_follower_lag{replica="2"}'], 0)
        self.assertEqual((second["commit"], second["records"]), (first["commit"] + 3, first["records"] + 3))
        self.assertEqual(second["orders"], 3)
        self.assertEqual(second["order_seconds"], 3)
        follower = self.gauges(self.replicas[2])
        self.assertEqual(
            (follower["role"], follower["serving"], follower["lag"]), (['toystore_order_role{role="follower"}'], 0, {})
        )
        stopping = leader.stopService()
        self.assertEqual(self.gauges(leader)["role"], ['toystore_order_role{role="stopping"}'])
        self.advance(leader.timing.election, until=lambda: stopping.called)
        self.successResultOf(stopping)
        third = self.gauges(leader)
        self.assertEqual((third["serving"], third["handovers"]), (0, first["handovers"] + 1))


class CatalogReachTests(Cluster):
    """A leader cut from the catalog hands over to a replica that reaches it, and does not get the lead back."""

    def test_leader_cut_from_the_catalog_hands_over(self) -> None:
        """
        Leader 3 loses its catalog link: within a few election timeouts
        another replica serves, the seed's rule does not hand back to 3 while
        it stays cut, and orders go on; with its link back, 3 leads again.
        """
        self.make()
        leader = self.serving(expected=3)
        self.settle()
        leader.catalog.cut()
        new = self.serving_among((1, 2), within=leader.timing.election * 5)
        self.assertEqual(leader.status()["handovers"], 1)
        self.advance(leader.timing.election * 3)
        self.assertTrue(new.status()["serving"], "the lead stays away from a replica cut from the catalog")
        self.assertEqual(self.result(self.order(new.id, "k0")), {"order_number": 0})
        leader.catalog.restore()
        self.serving(expected=3, within=leader.timing.election * 10)

    def test_leader_whose_catalog_falls_silent_hands_over_before_the_idle_close(self) -> None:
        """
        Leader 3's catalog link stays open but nothing comes back (packets
        dropped on a real network): the leader hands over once it has not
        heard the catalog for an election timeout, while the connection is
        still open, not after the idle watch closes it.
        """
        self.make()
        leader = self.serving(expected=3)
        self.settle()
        leader.catalog.hold()
        held = self.order(3, "held")  # its buy waits on the silent link
        new = self.serving_among((1, 2), within=leader.timing.election * 5)
        self.assertTrue(leader.catalog.connected, "the silent connection is still open")
        # Not after the buy's call timeout: when 3 stopped leading, its order was refused, to be retried.
        self.assertEqual(self.error(held, within=0).code, 421)
        self.assertFalse(leader.status()["catalog"])
        self.assertEqual(leader.status()["handovers"], 1)
        self.assertEqual(self.result(self.order(new.id, "k0")), {"order_number": 0})
