"""Tests for group commit in :mod:`toystore.batch`."""

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from toystore.batch import BatchQueue


class BatchQueueTests(SynchronousTestCase):
    """Items that arrive while a batch runs go together in the next one."""

    def setUp(self) -> None:
        self.batches: list[list[int]] = []
        self.running: list[Deferred[list[int]]] = []

        def run(items: list[int]) -> Deferred[list[int]]:
            self.batches.append(items)
            self.running.append(Deferred())
            return self.running[-1]

        self.queue: BatchQueue[int, int] = BatchQueue(run, max_batch=3)

    def finish(self) -> None:
        """Complete the running batch (there is only ever one), doubling each item."""
        self.running.pop(0).callback([item * 2 for item in self.batches[-1]])

    def test_lone_item_runs_at_once(self) -> None:
        """With nothing running, an item's batch starts immediately."""
        d = self.queue.submit(1)
        self.assertEqual(self.batches, [[1]])
        self.assertNoResult(d)
        self.finish()
        self.assertEqual(self.successResultOf(d), 2)

    def test_items_queue_behind_a_running_batch(self) -> None:
        """While one batch runs, later items wait and then run as one batch."""
        first = self.queue.submit(1)
        rest = [self.queue.submit(n) for n in (2, 3, 4)]
        self.assertEqual(self.batches, [[1]])
        self.assertEqual(self.queue.queued, 3)
        self.finish()
        self.assertEqual(self.batches, [[1], [2, 3, 4]])
        self.assertEqual(self.successResultOf(first), 2)
        self.finish()
        self.assertEqual([self.successResultOf(d) for d in rest], [4, 6, 8])

    def test_max_batch(self) -> None:
        """A batch takes at most max_batch items; the rest go in the next."""
        self.queue.submit(0)
        for n in range(1, 6):
            self.queue.submit(n)
        self.finish()
        self.assertEqual(self.batches[1], [1, 2, 3])
        self.finish()
        self.assertEqual(self.batches[2], [4, 5])

    def test_failure_fails_the_whole_batch_only(self) -> None:
        """A batch that fails fails each of its items; the next batch still runs."""
        first = self.queue.submit(1)
        second = self.queue.submit(2)
        self.running.pop(0).errback(OSError("disk full"))
        self.failureResultOf(first, OSError)
        self.assertEqual(self.batches, [[1], [2]])
        self.finish()
        self.assertEqual(self.successResultOf(second), 4)

    def test_synchronous_exception(self) -> None:
        """A run_batch that raises is a failed batch, not a stuck queue."""
        queue: BatchQueue[int, int] = BatchQueue(lambda items: 1 / 0)
        self.failureResultOf(queue.submit(1), ZeroDivisionError)
        self.assertFalse(queue.running)

    def test_wrong_number_of_results(self) -> None:
        """A batch that returns too few results fails rather than mismatching items."""
        queue: BatchQueue[int, int] = BatchQueue(lambda items: succeed([]))
        self.failureResultOf(queue.submit(1), RuntimeError)

    def test_when_idle(self) -> None:
        """when_idle fires once every queued item has run."""
        self.successResultOf(self.queue.when_idle())
        self.queue.submit(1)
        self.queue.submit(2)
        idle = self.queue.when_idle()
        self.finish()
        self.assertNoResult(idle)
        self.finish()
        self.successResultOf(idle)
