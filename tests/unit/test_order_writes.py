"""Tests for a replica's log writes, group-committed in the disk thread (:mod:`toystore.order.writes`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.trial.unittest import SynchronousTestCase

from toystore.envelope import Unavailable
from toystore.order.journal import open_journal, scan
from toystore.order.metrics import ReplicaMetrics
from toystore.order.writes import LogWrites


class HeldThread:
    """A disk "thread" whose work runs when the test says so, one call at a time."""

    def __init__(self) -> None:
        self.calls: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def __call__(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((d, function, args))
        return d

    def release(self) -> None:
        d, function, args = self.calls.pop(0)
        maybeDeferred(function, *args).chainDeferred(d)


class LogWritesTests(SynchronousTestCase):
    """Writes share a batch while one runs; what a batch made durable is settled once."""

    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        opened = open_journal(self.path)
        self.log = opened.order_log
        self.thread = HeldThread()
        status = {"role": "follower", "epoch": 1, "length": 0, "durable": 0, "commit": 0, "in_sync": []}
        self.metrics = ReplicaMetrics(lambda: status)
        self.settled: list[int] = []
        self.writes = LogWrites(self.thread, 100, self.metrics, self.settled.append)
        self.writes.open(self.log, opened.file)

    def tearDown(self) -> None:
        closed = Deferred.fromCoroutine(self.writes.close())
        while self.thread.calls:
            self.thread.release()
        self.successResultOf(closed)

    def append(self, key: str) -> Deferred[int]:
        line = self.log.append_order(1, "Tux", 1, key)
        return self.writes.append([line], len(self.log))

    def sample(self, name: str) -> float | None:
        return self.metrics.registry.get_sample_value(name)

    def test_one_settlement_per_batch(self) -> None:
        """Writes queued behind a running batch go together, and their batch reports its durable length once."""
        first = self.append("a")
        second, third = self.append("b"), self.append("c")
        self.assertEqual(len(self.thread.calls), 1)
        self.thread.release()
        self.successResultOf(first)
        self.assertNoResult(second)
        self.assertEqual((self.settled, self.writes.durable), ([1], 1))
        self.thread.release()
        self.successResultOf(second)
        self.successResultOf(third)
        self.assertEqual((self.settled, self.writes.durable), ([1, 3], 3))
        self.assertEqual(scan(self.path).lines, list(self.log.lines))
        self.assertEqual(self.sample("toystore_order_fsync_batch_size_sum"), 3)
        self.assertEqual(self.sample("toystore_order_fsync_seconds_count"), 2)

    def test_lines_leave_memory_once_durable(self) -> None:
        """The log hears of the durable length, so that lines beyond its window may go."""
        self.append("a")
        self.assertEqual(self.log.window.durable, 0)
        self.thread.release()
        self.assertEqual(self.log.window.durable, 1)

    def test_truncation_overtakes_a_write(self) -> None:
        """A write whose records were cut while it ran makes nothing durable."""
        self.append("a")
        self.thread.release()
        written = self.append("b")
        size = self.log.truncate(1)
        truncated = self.writes.truncate(1, size)
        self.thread.release()  # the append, then the truncation
        self.successResultOf(written)
        self.thread.release()
        self.successResultOf(truncated)
        self.assertEqual((self.settled, self.writes.durable), ([1], 1))
        self.assertEqual(scan(self.path).lines, list(self.log.lines))

    def test_a_failed_batch_is_final(self) -> None:
        """A batch that fails fails its writers, is reported once, and no write after it touches the file."""
        self.append("a")
        self.thread.release()
        file_size = self.path.stat().st_size
        reported: list[Any] = []
        self.writes._on_failed = reported.append
        self.writes.file.write = lambda operations: (_ for _ in ()).throw(OSError(28, "No space left on device"))  # type: ignore[method-assign]
        failing = self.append("b")
        queued = self.append("c")  # waits behind the failing batch
        self.thread.release()
        self.assertIn("No space left", self.failureResultOf(failing, OSError).getErrorMessage())
        self.assertIn("No space left", self.failureResultOf(queued, Unavailable).value.message)
        later = self.append("d")
        self.assertIn("No space left", self.failureResultOf(later, Unavailable).value.message)
        self.assertEqual(self.thread.calls, [])  # nothing more for the disk thread
        self.assertEqual(len(reported), 1)
        self.assertEqual((self.settled, self.writes.durable, self.path.stat().st_size), ([1], 1, file_size))

    def test_closed(self) -> None:
        """Once closed, a write fails as unavailable."""
        closed = Deferred.fromCoroutine(self.writes.close())
        self.thread.release()
        self.successResultOf(closed)
        self.failureResultOf(self.append("a"), Unavailable)
