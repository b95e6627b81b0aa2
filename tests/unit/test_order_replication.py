"""
Tests of the order replicas together, in one process: three Replica services
and the catalog on an in-memory network (:mod:`toystore.wire.testing`), disk
work done inline, a Clock for time.  No sockets, no threads.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from toystore.envelope import ApiError, Unavailable
from toystore.order.journal import Log
from toystore.order.replica import NotLeader
from toystore.order.resources import replica_root

from .helpers import connect
from .replicas import ReplicaCase


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
        self.assertEqual(len(self.buys()), 1)
        self.assertEqual(self.failureResultOf(self.order(3, "k", name="Fox"), ApiError).value.code, 422)

    def test_concurrent_same_key(self) -> None:
        """Two requests with one key while the first is being placed share its order."""
        self.make()
        self.elect(1, 3, others=())
        a, b = self.order(3, "k"), self.order(3, "k")
        self.successResultOf(self.drive(self.replicas[1].lead(1, 3)))
        self.network.flush()
        self.assertEqual(self.successResultOf(a), self.successResultOf(b))
        self.assertEqual(len(self.buys()), 1)

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
        stream = next(c for c, f in self.replicas[3].streams.by_connection.items() if f.follower_id == 2)
        slow = next(p for p in self.network.pipes if p.server is stream)
        slow.hold()
        d = self.order(3, "k")
        self.assertEqual(self.successResultOf(d), {"order_number": 0})
        self.clock.advance(1.5)
        self.assertEqual(self.replicas[3].status()["in_sync"], [1])
        slow.release()
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
        self.assertNotIn("never-committed", self.replicas[3].order_log.keys)
        self.assertEqual(self.replicas[3].order_log.keys, {"k0": 0, "k1": 1})


class OneTurnTests(ReplicaCase):
    """A leader's orders of one reactor turn go to each follower in one push and to its disk in one write."""

    def counts(self) -> tuple[int, int, float | None, float | None]:
        leader, follower = self.replicas[3].metrics, self.replicas[1].metrics
        batches = leader.registry.get_sample_value
        return (
            follower.calls.count("records", "ok"),
            leader.calls.count("ack", "ok"),
            batches("toystore_order_fsync_batch_size_count"),
            batches("toystore_order_fsync_batch_size_sum"),
        )

    def test_one_push_and_one_write_per_turn(self) -> None:
        """Three orders placed in one turn: one records push per follower, one ack each, one log write."""
        self.make()
        self.elect(1, 3)
        pushes, acks, writes, written = self.counts()
        placed = [Deferred.fromCoroutine(self.replicas[3].place("Tux", 1, f"k{n}")) for n in range(3)]
        self.assertEqual(len(self.replicas[1].order_log), 1, "nothing is pushed before the turn ends")
        self.network.flush()
        self.assertEqual([self.successResultOf(d) for d in placed], [{"order_number": n} for n in range(3)])
        self.assertEqual(self.counts(), (pushes + 1, acks + 2, writes + 1, written + 1))
        self.assertEqual(self.file(1), self.file(3))

    def test_failed_write_fails_its_orders(self) -> None:
        """When the leader cannot write its log, the orders of that write fail with a 500, not a timeout."""
        self.make()
        self.elect(1, 3)
        leader = self.replicas[3]

        class BrokenFile:
            def write(self, operations: Any) -> None:
                raise OSError("no space left on device")

            def close(self) -> None:
                pass

        leader.writes.file = BrokenFile()
        failure = self.failureResultOf(self.order(3, "k"), ApiError)
        self.assertEqual((failure.value.code, failure.value.message), (500, "the order log could not be written"))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class DiscoveryTests(ReplicaCase):
    """A follower that nobody told finds the leader by itself."""

    def test_from_the_front_end(self) -> None:
        """GET /leader names the leader: the follower accepts its epoch and streams from it, asking no peer."""
        self.make()
        self.elect(4, 3, others=(2,))
        self.front_end = {"leader": 3, "epoch": 4}
        asked = [self.replicas[i].metrics.calls.count("status", "ok") for i in (2, 3)]
        self.clock.advance(self.replicas[1].config.discovery_interval)
        self.network.flush()
        self.assertEqual((self.replicas[1].leader, self.replicas[1].epoch), (3, 4))
        self.assertEqual(self.file(1), self.file(3))
        self.assertEqual([self.replicas[i].metrics.calls.count("status", "ok") for i in (2, 3)], asked)

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
        self.assertIn(b'toystore_order_calls_total{outcome="ok",type="sync"} 2.0', body)
        self.assertIn(b'toystore_order_call_seconds_count{type="sync"} 2.0', body)

    def test_state_read_at_scrape_time(self) -> None:
        """The gauges follow the replica's state as it is when scraped, with nothing updated per write."""
        self.make()
        self.elect(1, 3)
        leader, follower = self.replicas[3], self.replicas[1]

        def gauges(replica: Any) -> dict[str, float | None]:
            value = replica.metrics.registry.get_sample_value
            return {
                "leader": value("toystore_order_role", {"role": "leader"}),
                "follower": value("toystore_order_role", {"role": "follower"}),
                "epoch": value("toystore_order_epoch"),
                "records": value("toystore_order_log_records"),
                "durable": value("toystore_order_log_durable"),
                "committed": value("toystore_order_log_committed"),
                "in_sync": value("toystore_order_followers_in_sync"),
            }

        self.successResultOf(self.order(3, "a"))
        self.successResultOf(self.order(3, "b"))
        self.assertEqual(
            gauges(leader),
            {"leader": 1, "follower": 0, "epoch": 1, "records": 3, "durable": 3, "committed": 3, "in_sync": 2},
        )
        self.assertEqual(
            gauges(follower),
            {"leader": 0, "follower": 1, "epoch": 1, "records": 3, "durable": 3, "committed": 0, "in_sync": 0},
        )
        leader.step_down("a test says so")
        self.assertEqual((gauges(leader)["leader"], gauges(leader)["follower"], gauges(leader)["in_sync"]), (0, 1, 0))


class InSyncTests(SynchronousTestCase):
    """The in-sync set: late acknowledgements take a follower out, not a steady stream of work."""

    def setUp(self) -> None:
        from toystore.order.replication import FollowerStream, Streams

        self.clock = Clock()
        replica = type(
            "StubReplica",
            (),
            {
                "order_log": Log(),
                "epoch": 1,
                "id": 3,
                "role": "leader",
                "advance_commit": lambda self: None,
            },
        )()
        self.log = replica.order_log
        self.streams = Streams(replica, self.clock, ack_timeout=1.0)
        self.connection, self.transport = connect(None, self.clock)
        self.stream = FollowerStream(2, self.connection, sent=0)
        self.streams.by_connection[self.connection] = self.stream

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
