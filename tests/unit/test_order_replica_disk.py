"""
Order replicas whose logs are far larger than the part they keep in memory:
orders, keys, catch-up and promotion all work from the journal files
(:mod:`toystore.order.reads`, ``replication``), with disk work done inline
and a Clock for time, as in ``test_order_replication``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.trial.unittest import SynchronousTestCase

from toystore.envelope import ApiError
from toystore.order import replication
from toystore.order.journal import CorruptJournal, Log, open_journal
from toystore.order.reads import LogChanged, LogReads

from .replicas import ReplicaCase

#: Each replica keeps about ten record lines in memory.
TINY = 1500


def one_hash(key: str) -> int:
    """A hash under which every key looks the same to the Bloom filter: every lookup goes on to the key store."""
    return 0


def orders_log(count: int, prefix: str = "k") -> Log:
    """A log of epoch 1 led by replica 3: its leader record and ``count`` orders."""
    log = Log()
    log.append_leader(1, 3)
    for n in range(count):
        log.append_order(1, "Tux", 1, f"{prefix}{n}", seq=n + 1)
    return log


class DiskCase(ReplicaCase):
    """Three replicas with tiny windows."""

    window_bytes = TINY

    def place_many(self, leader: int, count: int, prefix: str = "k") -> None:
        for n in range(count):
            self.successResultOf(self.order(leader, f"{prefix}{n}"))

    def find(self, replica: int, key: str) -> Any:
        return self.successResultOf(self.drive(self.replicas[replica].reads.find_order(key)))


class DiskFailureTests(DiskCase):
    """A write to the log that fails stops the replica (fail-stop) rather than let its file and memory part."""

    def test_failed_write_stops_the_leader(self) -> None:
        """A leader whose log write fails answers that order with an error, logs why, and stops once."""
        self.make()
        self.elect(1, 3)
        self.assertEqual(self.successResultOf(self.order(3, "k0")), {"order_number": 0})
        leader = self.replicas[3]

        def full(operations: object) -> None:
            raise OSError(28, "No space left on device")

        leader.writes.file.write = full  # type: ignore[method-assign,assignment]
        self.assertEqual(self.fail_stops, [])
        failed = self.order(3, "k1")
        self.network.flush()
        self.assertGreaterEqual(self.failureResultOf(failed, ApiError).value.code, 500)
        [(replica, why)] = self.fail_stops
        self.assertEqual(replica, 3)
        self.assertIn("No space left on device", why)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)  # and logged, with its traceback


class OldOrdersTests(DiskCase):
    """Orders and keys older than the window are read back from the file."""

    def test_order_query_long_out_of_memory(self) -> None:
        """An order whose line left memory long ago is answered, on the leader and on a follower, without the disk."""
        self.make()
        self.elect(1, 3)
        self.place_many(3, 60)
        leader = self.replicas[3]
        self.assertGreater(leader.order_log.first_in_memory, 40)
        for replica in (3, 1):
            answer = self.replicas[replica].order(2)  # at once, as a dict: no read to wait for
            self.assertEqual(answer, {"number": 2, "name": "Tux", "quantity": 1})
        self.assertIsNone(leader.order_log.line(leader.order_log.order_index(2)))  # not read back
        self.assertEqual(self.failureResultOf(maybeDeferred(leader.order, 60), ApiError).value.code, 404)

    def test_repeated_key_far_back(self) -> None:
        """A retry of an order out of memory gets its number, buys nothing; another body under it is a 422."""
        self.make()
        self.elect(1, 3)
        self.place_many(3, 60)
        self.assertEqual(self.successResultOf(self.order(3, "k0")), {"order_number": 0})
        self.assertEqual(len(self.buys()), 60)
        self.assertEqual(self.failureResultOf(self.order(3, "k0", name="Fox"), ApiError).value.code, 422)
        self.assertEqual(self.successResultOf(self.order(3, "k60")), {"order_number": 60})

    def test_keys_survive_restart_and_leader_change(self) -> None:
        """After every replica restarts, and under another leader, old keys still find their orders."""
        self.make()
        self.elect(1, 3)
        self.place_many(3, 40)
        self.restart()
        self.elect(2, 1)
        self.assertEqual(self.find(1, "k3"), 3)
        self.assertEqual(self.successResultOf(self.order(1, "k3")), {"order_number": 3})
        self.assertEqual(self.successResultOf(self.order(1, "new")), {"order_number": 40})
        self.assertEqual(len(self.buys()), 41)
        self.assertEqual(self.file(1), self.file(3))


class CollisionTests(DiskCase):
    """Every key is a maybe to the Bloom filter: the key store tells the keys apart."""

    key_hash = staticmethod(one_hash)

    def test_colliding_keys_are_different_orders(self) -> None:
        """Keys the filter cannot tell apart get orders of their own; retries find theirs, across leader changes."""
        self.make()
        self.elect(1, 3)
        self.place_many(3, 30)
        self.assertTrue(self.replicas[3].order_log.may_hold("k"))
        self.assertIsNone(self.find(3, "k"))
        self.assertEqual(self.successResultOf(self.order(3, "k7")), {"order_number": 7})
        self.assertEqual(self.failureResultOf(self.order(3, "k8", name="Fox"), ApiError).value.code, 422)
        self.elect(2, 2)
        self.assertEqual(self.successResultOf(self.order(2, "k29")), {"order_number": 29})
        self.assertEqual(self.successResultOf(self.order(2, "k30")), {"order_number": 30})
        self.assertEqual(len(self.buys()), 31)


class CatchUpTests(DiskCase):
    """A follower far behind gets the records from the leader's file, a chunk at a time."""

    def test_follower_catches_up_from_disk(self) -> None:
        """The backlog comes from disk, never more than AHEAD records past the follower's acks; logs end identical."""
        self.patch(replication, "CHUNK", 20)
        self.patch(replication, "AHEAD", 40)
        self.make()
        self.elect(1, 3, others=(2,))
        self.place_many(3, 200)
        leader = self.replicas[3]
        ahead = []
        reads = leader.reads.lines

        async def watched(start: int, end: int) -> list[bytes]:
            ahead.extend(f.sent - f.acked for f in leader.streams.by_connection.values() if f.follower_id == 1)
            return await reads(start, end)

        leader.reads.lines = watched  # type: ignore[method-assign]
        self.successResultOf(self.drive(self.replicas[1].lead(1, 3)))
        self.network.flush()
        self.assertEqual(self.file(1), self.file(3))
        self.assertGreater(len(ahead), 5)
        self.assertLessEqual(max(ahead), 40)
        self.assertEqual(leader.status()["in_sync"], [1, 2])

    def test_promotion_pulls_from_disk(self) -> None:
        """A new leader far behind copies the log of a peer that holds most of it only on disk."""
        self.patch(replication, "CHUNK", 30)
        log = orders_log(100)
        self.make({1: (log.lines, 1), 2: (log.lines[:2], 1), 3: (log.lines, 1)})
        self.assertGreater(self.replicas[1].order_log.first_in_memory, 80)
        self.network.cut(3)  # down: refused at once
        promoting = self.drive(self.replicas[2].lead(2, 2))
        self.network.flush()
        self.assertTrue(self.successResultOf(promoting)["ready"])
        self.successResultOf(self.drive(self.replicas[1].lead(2, 2)))
        self.network.flush()
        self.assertEqual(self.file(1), self.file(2))
        self.assertEqual(self.successResultOf(self.order(2, "k5")), {"order_number": 5})
        self.assertEqual(self.buys(), [])

    def test_divergent_tail_cut_below_the_window(self) -> None:
        """A follower's tail, longer than its window, that the new leader lacks is cut off, keys and all."""
        common = orders_log(5)
        old = Log(common.lines)
        for n in range(50):
            old.append_order(1, "Tux", 1, f"never-committed-{n}")
        new = Log(common.lines)
        new.append_leader(2, 2)
        new.append_order(2, "Fox", 1, "k5")
        self.make({3: (old.lines, 1), 2: (new.lines, 2), 1: (new.lines, 2)})
        self.assertGreater(self.replicas[3].order_log.first_in_memory, 6)
        self.elect(3, 2)
        self.assertEqual(self.file(3), self.file(2))
        self.assertIsNone(self.find(3, "never-committed-0"))
        self.assertEqual(self.find(3, "k0"), 0)
        self.assertEqual(self.find(3, "k5"), 5)


class ReadRaceTests(SynchronousTestCase):
    """
    Reads from disk that the log's changes overtake: a truncation is
    LogChanged.
    """

    def setUp(self) -> None:
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        path.write_bytes(b"".join(orders_log(40).lines))
        self.opened = open_journal(path, window_bytes=TINY)
        self.addCleanup(self.opened.file.close)
        self.log = self.opened.order_log
        self.queued: list[tuple[Deferred[Any], Any, tuple[Any, ...]]] = []
        self.reads = LogReads(self.log, self.later, lambda key: self.fail("these tests look up no key"))
        self.reads.open(self.log, path)
        self.addCleanup(self.close)

    def close(self) -> None:
        closing = Deferred.fromCoroutine(self.reads.close())
        self.run_queued()
        self.successResultOf(closing)

    def later(self, function: Any, *args: Any) -> Deferred[Any]:
        """Queue the work, as the thread pool would, until :meth:`run_queued` runs it."""
        d: Deferred[Any] = Deferred()
        self.queued.append((d, function, args))
        return d

    def run_queued(self) -> None:
        while self.queued:
            queued, self.queued = self.queued, []
            for d, function, args in queued:
                maybeDeferred(function, *args).chainDeferred(d)

    def test_truncated_during_the_read(self) -> None:
        """Cut below the records being read: LogChanged, even when the file was already too short to read."""
        for cut_file, start, end, cut in ((False, 10, 20, 15), (True, 5, 12, 8)):
            with self.subTest(cut_file=cut_file):
                self.assertLess(end, self.log.first_in_memory)
                reading = Deferred.fromCoroutine(self.reads.lines(start, end))
                self.log.truncate(cut)
                if cut_file:
                    self.opened.file.write([("truncate", self.log.size)])
                self.run_queued()
                self.failureResultOf(reading, LogChanged)
                self.log.append_order(2, "Tux", 1, "again")

    def test_corrupt_file_is_not_a_truncation(self) -> None:
        """Without a truncation, a bad read is CorruptJournal, as it is."""
        reading = Deferred.fromCoroutine(self.reads.lines(10, 20))
        self.opened.file.write([("truncate", self.log.offsets[12])])
        self.run_queued()
        self.failureResultOf(reading, CorruptJournal)
