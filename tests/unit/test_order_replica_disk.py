"""
Order replicas whose logs are far larger than the part they keep in memory:
orders, keys and a follower's catch-up all work from the journal files
(:mod:`toystore.order.reads`, :mod:`toystore.order.consensus`), with disk
work done inline and simulated time (:mod:`tests.unit.replicas`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from toystore.envelope import ApiError, NotFound
from toystore.order.journal import CorruptJournal, Log, open_journal
from toystore.order.reads import LogChanged, LogReads
from toystore.order.replica import NotLeader, Replica

from .replicas import ReplicaCase

#: Each replica keeps about ten record lines in memory.
TINY = 1500


def one_hash(key: object) -> int:
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

    def setUp(self) -> None:
        super().setUp()

    def place_many(self, leader: int, count: int, prefix: str = "k", first: int = 0) -> None:
        """Place ``count`` orders at ``leader`` at once; each is answered with the next number, in key order."""
        placing = [self.order(leader, f"{prefix}{n}") for n in range(first, first + count)]
        self.advance(5.0, until=lambda: all(d.called for d in placing))
        numbers = [self.successResultOf(d)["order_number"] for d in placing]
        self.assertEqual(numbers, list(range(first, first + count)))

    def steady(self, leader: int = 3) -> Replica:
        """
        Let time pass until ``leader`` serves, every replica up is connected
        to every other, and the leader knows that each holds its whole log.
        """
        replica = self.serving(expected=leader)

        def steady() -> bool:
            node = replica.node
            linked = all(r.links.up(p) for r in self.replicas.values() for p in r.links.clients if p in self.replicas)
            return linked and node is not None and all(n == 0 for p, n in node.lag().items() if p in self.replicas)

        self.advance(5.0, until=steady)
        self.assertTrue(steady())
        return replica

    def epochs(self) -> dict[int, int]:
        return {i: r.epoch for i, r in self.replicas.items()}

    def find(self, replica: int, key: str) -> Any:
        """The number of the order of ``key`` in ``replica``'s log, as its key lookup answers."""
        return self.result(Deferred.fromCoroutine(self.replicas[replica].reads.find_order(key)))

    def error(self, d: Deferred[Any], within: float = 5.0) -> ApiError:
        """Let time pass until ``d`` fails; its ApiError."""
        self.advance(within, until=lambda: d.called)
        return self.failureResultOf(d, ApiError).value

    def settle(self, seconds: float = 1.0) -> None:
        """Let every follower take what the leader has (heartbeats go on meanwhile)."""
        self.advance(seconds)

    def no_disk_reads(self, replica: Replica) -> list[tuple[int, int]]:
        """Make a read of ``replica``'s journal file fail the test: the list of reads tried, which must stay empty."""
        tried: list[tuple[int, int]] = []

        async def refused(start: int, end: int) -> list[bytes]:
            tried.append((start, end))
            raise AssertionError(f"records {start}..{end - 1} were read back from disk")

        replica.reads.lines = refused  # type: ignore[method-assign]
        return tried


class DiskFailureTests(DiskCase):
    """A write to the log that fails stops the replica (fail-stop) rather than let its file and memory part."""

    def test_failed_write_stops_the_leader(self) -> None:
        """
        A leader whose log write fails stops once (fail-stop, logged), and
        the orders waiting on it fail with a 500; the buy is not lost: the
        next leader answers the client's retry with its order, bought once.
        """
        self.make()
        leader = self.steady()
        self.place_many(3, 1)
        assert leader.writes.file is not None

        def full(operations: object) -> None:
            raise OSError(28, "No space left on device")

        leader.writes.file.write = full  # type: ignore[method-assign,assignment]
        # The disk thread's outcome comes in a later reactor turn, as from a real thread (not inline).
        clock: Any = self.clock
        leader.writes._run = lambda work, *args: deferLater(clock, 0, work, *args)
        self.assertEqual(self.fail_stops, [])
        failed = [Deferred.fromCoroutine(leader.place("Tux", 1, key)) for key in ("k1", "k2")]  # one batch, which fails
        for d in failed:
            self.assertEqual(self.error(d).code, 500)
        [(replica, why)] = self.fail_stops
        self.assertEqual(replica, 3)
        self.assertIn("No space left on device", why)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)  # and logged, with its traceback
        self.assertTrue(leader.consensus is not None and leader.consensus.stopped)
        self.advance(1.0)
        self.assertEqual(len(self.fail_stops), 1)  # once, whatever comes after
        # A real replica exits here; its peers elect another, which has the records the leader sent before its fsync.
        self.kill(3)
        new = self.serving()
        self.assertEqual(self.result(self.order(new.id, "k2")), {"order_number": 2})
        self.assertEqual(self.result(self.order(new.id, "k1")), {"order_number": 1})
        self.assertEqual([b["key"] for b in self.buys()], ["k0", "k1", "k2"])


class OldOrdersTests(DiskCase):
    """Orders and keys older than the window are read back from the file."""

    def test_order_query_long_out_of_memory(self) -> None:
        """An order whose line left memory long ago is answered, by the leader and by a follower, without the disk."""
        self.make()
        leader = self.steady()
        self.place_many(3, 40)
        self.settle()
        follower = self.replicas[1]
        for replica in (leader, follower):
            self.assertGreater(replica.order_log.first_in_memory, 25)
        tried = [*self.no_disk_reads(leader), *self.no_disk_reads(follower)]
        self.assertEqual(leader.order(2), {"number": 2, "name": "Tux", "quantity": 1})  # committed: at once
        self.assertEqual(self.result(follower.order(2)), {"number": 2, "name": "Tux", "quantity": 1})  # relayed
        self.assertEqual(follower.local_order(2), {"number": 2, "name": "Tux", "quantity": 1})  # at once
        self.assertEqual(tried, [])
        self.assertIsNone(leader.order_log.line(leader.order_log.order_index(2) or 0))  # not read back
        self.assertEqual(self.error(leader.order(40)).code, 404)
        self.assertRaises(NotFound, follower.local_order, 40)

    def test_repeated_key_far_back(self) -> None:
        """A retry of an order out of memory gets its number, buys nothing; another body under it is a 422."""
        self.make()
        leader = self.steady()
        self.place_many(3, 40)
        self.assertGreater(leader.order_log.first_in_memory, 25)
        self.assertEqual(self.result(self.order(3, "k0")), {"order_number": 0})
        self.assertEqual(len(self.buys()), 40)
        self.assertEqual(self.error(self.order(3, "k0", name="Fox")).code, 422)
        self.assertEqual(self.result(self.order(3, "k40")), {"order_number": 40})
        self.assertEqual(len(self.buys()), 41)

    def test_keys_survive_restart_and_leader_change(self) -> None:
        """After every replica restarts, and under another leader, old keys still find their orders."""
        self.make()
        self.steady()
        self.place_many(3, 40)
        self.stop()
        self.make(ids=(1, 2))  # replica 3 stays down: another leads
        new = self.serving()
        other = 3 - new.id
        self.assertEqual(self.find(new.id, "k3"), 3)
        self.assertEqual(self.find(other, "k3"), 3)
        self.assertEqual(self.result(self.order(new.id, "k3")), {"order_number": 3})
        self.assertEqual(self.result(self.order(new.id, "new")), {"order_number": 40})
        self.assertEqual(len(self.buys()), 41)
        self.settle()
        self.assertEqual(self.file(1), self.file(2))


class CollisionTests(DiskCase):
    """Every key is a maybe to the Bloom filter: the key store tells the keys apart."""

    key_hash = staticmethod(one_hash)

    def test_colliding_keys_are_different_orders(self) -> None:
        """Keys the filter cannot tell apart get orders of their own; retries find theirs, across leader changes."""
        self.make()
        self.steady()
        self.place_many(3, 30)
        self.assertTrue(self.replicas[3].order_log.may_hold("k"))
        self.assertIsNone(self.find(3, "k"))
        self.assertEqual(self.result(self.order(3, "k7")), {"order_number": 7})
        self.assertEqual(self.error(self.order(3, "k8", name="Fox")).code, 422)
        self.kill(3)
        new = self.serving()
        self.assertEqual(self.result(self.order(new.id, "k29")), {"order_number": 29})
        self.assertEqual(self.result(self.order(new.id, "k30")), {"order_number": 30})
        self.assertIsNone(self.find(new.id, "k"))
        self.assertEqual(len(self.buys()), 31)


class CatchUpTests(DiskCase):
    """A follower far behind gets the records from the leader's file, a batch at a time."""

    def test_follower_catches_up_from_disk(self) -> None:
        """
        A follower back after the leader's window moved on gets the records
        from the leader's journal, from where it stopped, in appends of at
        most ``max_batch`` records and at most the window of appends ahead
        of what it holds; nothing is read for it while it is down.  The
        leader serves on in its epoch, and the logs end identical.
        """
        self.make()
        leader = self.steady()
        self.place_many(3, 5)
        stopped_at = len(leader.order_log)
        self.kill(1)
        reads: list[tuple[int, int, int]] = []  # (start, end, records replica 1 holds)
        read = leader.reads.lines

        async def watched(start: int, end: int) -> list[bytes]:
            reads.append((start, end, self.replicas[1].durable if 1 in self.replicas else -1))
            return await read(start, end)

        leader.reads.lines = watched  # type: ignore[method-assign]
        self.place_many(3, 45, first=5)
        self.advance(2.0)  # heartbeats go on: replica 1 lacks records long out of memory
        self.assertGreater(leader.order_log.first_in_memory, 35)
        self.assertEqual(reads, [])
        epoch = leader.epoch
        self.make(ids=(1,))
        self.advance(5.0, until=lambda: self.replicas[1].durable == len(leader.order_log))
        self.assertEqual(len(self.replicas[1].order_log), len(leader.order_log))
        self.settle()
        self.assertEqual(self.file(1), self.file(3))
        node = leader.node
        assert node is not None
        batch, window = node.timing.max_batch, node.timing.max_in_flight
        self.assertGreater(len(reads), 30)
        self.assertLessEqual(max(end - start for start, end, _ in reads), batch)
        # The first append goes where the leader last sent to; refused, it looks back to where the follower stopped,
        # and from there on keeps at most its window of appends ahead of what the follower holds.
        back = next(n for n, (start, _, _) in enumerate(reads) if start <= stopped_at)
        self.assertLessEqual(back, 1)
        self.assertLessEqual(max(end - held for _, end, held in reads[back:]), batch * (window + 1))
        self.assertEqual(leader.status()["in_sync"], [1, 2])
        self.assertTrue(node.serving)
        self.assertEqual({r.epoch for r in self.replicas.values()}, {epoch})
        self.assertEqual(self.replicas[1].local_order(40), {"number": 40, "name": "Tux", "quantity": 1})

    def test_follower_down_across_a_leader_change(self) -> None:
        """
        A follower down since before the current leader was elected (the
        leader has only probed it, in vain, since) catches up at full speed
        once back: within the time to reconnect, not a batch per heartbeat.
        """
        self.make()
        self.steady()
        self.place_many(3, 5)
        self.kill(3)  # in sync: the next leader's first probe of it will find its log matching
        interim = self.serving()
        assert interim.node is not None
        self.assertEqual(len(self.file(3).splitlines()), interim.node.leader_index)
        self.place_many(interim.id, 45, first=5)
        self.advance(2.0)
        self.assertGreater(interim.order_log.first_in_memory, 35)
        length = len(interim.order_log)
        self.make(ids=(3,))
        self.advance(2.0, until=lambda: self.replicas[3].durable >= length)
        self.assertGreaterEqual(self.replicas[3].durable, length)
        self.serving(expected=3)  # then handed the lead, as the highest id
        self.settle()
        for i in (1, 2):
            self.assertEqual(self.file(i), self.file(3))

    def test_far_behind_replica_is_not_elected(self) -> None:
        """
        With the leader gone, a replica far behind is not elected: the one
        that holds every order leads, and sends it the records it lacks from
        its journal; the orders are all there, bought once.
        """
        self.make()
        self.steady()
        self.place_many(3, 2)
        self.kill(1)
        self.place_many(3, 40, first=2)
        self.kill(3)
        self.make(ids=(1,))
        new = self.serving()
        self.assertEqual(new.id, 2)
        self.assertGreater(new.order_log.first_in_memory, 25)
        self.assertEqual(self.result(self.order(2, "k5")), {"order_number": 5})
        self.assertEqual(self.result(self.order(2, "k42")), {"order_number": 42})
        self.assertEqual(self.result(self.order(2, "k43")), {"order_number": 43})
        self.settle()
        self.assertEqual(self.file(1), self.file(2))
        self.assertEqual(len(self.buys()), 44)


class TruncationTests(DiskCase):
    """A follower's tail that the leader lacks is cut, however far below the window it starts."""

    def test_divergent_tail_cut_below_the_window(self) -> None:
        """A follower's tail, longer than its window, that the new leader lacks is cut off, keys and all."""
        common = orders_log(5)
        old = Log(common.lines)
        for n in range(50):
            old.append_order(1, "Tux", 1, f"never-committed-{n}")
        new = Log(common.lines)
        new.append_leader(2, 2)
        new.append_order(2, "Fox", 1, "k5")
        for i, lines, state in (
            (3, old.lines, b'{"epoch":1,"vote":3,"voter":true}'),
            (2, new.lines, b'{"epoch":2,"vote":2,"voter":true}'),
            (1, new.lines, b'{"epoch":2,"vote":2,"voter":true}'),
        ):
            directory = self.base / f"order-{i}"
            directory.mkdir()
            (directory / "orders.log").write_bytes(b"".join(lines))
            (directory / "epoch.json").write_bytes(state)
        self.make()
        self.assertGreater(self.replicas[3].order_log.first_in_memory, 6)
        self.assertTrue(self.replicas[3].order_log.may_hold("never-committed-0"))
        self.serving()
        self.advance(5.0, until=lambda: len(self.replicas[3].order_log) < 50)
        self.settle()
        leader = self.serving()
        self.assertEqual(self.file(3), self.file(leader.id))
        self.assertIsNone(self.find(3, "never-committed-0"))
        self.assertIsNone(self.find(3, "never-committed-49"))
        self.assertEqual(self.find(3, "k0"), 0)
        self.assertEqual(self.find(3, "k5"), 5)
        self.assertEqual(self.result(self.order(leader.id, "never-committed-0")), {"order_number": 6})

    def test_uncommitted_tail_of_a_cut_off_leader(self) -> None:
        """
        A leader whose peers no longer hear it (its connections up, but
        silent) logs orders it cannot commit, far past its window; the next
        leader adopts their buys, and the old one, heard again, cuts its tail
        and takes the new leader's records: each key is one order, bought once.
        """
        self.make()
        old = self.steady()
        self.place_many(3, 5)
        tail_start = len(old.order_log)
        held = [p for p in self.network.pipes if {p.source, p.target} in ({1, 3}, {2, 3})]
        for pipe in held:
            pipe.hold()
        waiting = [self.order(3, f"tail-{n}") for n in range(30)]
        self.assertEqual(len(old.order_log), tail_start + 30)
        self.assertGreater(old.order_log.first_in_memory, tail_start + 10)
        self.advance(5.0, until=lambda: self.replicas[1].node.serving or self.replicas[2].node.serving)  # type: ignore[union-attr]
        [new] = [r for i, r in self.replicas.items() if i != 3 and r.node is not None and r.node.serving]
        for d in waiting:
            self.assertIsInstance(self.error(d), NotLeader)  # the front-end asks the new leader
        self.advance(5.0, until=lambda: new.reconciliation.adopted == 30)
        self.assertEqual(new.reconciliation.adopted, 30)
        adopted_in = new.epoch
        for pipe in held:
            pipe.release()
        self.advance(10.0, until=lambda: old.order_log.last_epoch > 2 and old.durable == len(new.order_log))
        self.settle()
        leader = self.serving()
        for i in (1, 2):
            self.assertEqual(self.file(i), self.file(3))
        for n in (0, 29):
            number = self.find(3, f"tail-{n}")
            self.assertIsNotNone(number)
            self.assertEqual(old.order_log.order_epoch(number), adopted_in)  # the adopted order, not the cut one
            self.assertEqual(self.result(self.order(leader.id, f"tail-{n}")), {"order_number": number})
        self.assertEqual(len(self.buys()), 35)
        self.assertEqual(old.order_log.order_count, 35)


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

    def test_read_of_lines_in_memory_and_on_disk(self) -> None:
        """A read across the window's edge gives the file's lines, from disk then memory, as they are."""
        first = self.log.first_in_memory
        self.assertGreater(first, 5)
        reading = Deferred.fromCoroutine(self.reads.lines(first - 5, first + 2))
        self.run_queued()
        self.assertEqual(self.successResultOf(reading), list(orders_log(40).lines[first - 5 : first + 2]))
