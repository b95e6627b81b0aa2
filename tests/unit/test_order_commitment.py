"""Tests for the leader's commit point and the orders waiting for it (:mod:`toystore.order.commitment`)."""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from toystore.envelope import ApiError, Unavailable
from toystore.order.commitment import Commitment


class CommitmentTests(SynchronousTestCase):
    """Two copies of three commit; a new leadership commits only past its own first record."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.commitment = Commitment(self.clock, min_insync=2, timeout=3.0)
        self.commitment.start(4)  # records 0..3 from earlier epochs; 4 is the leader record

    def test_second_largest_copy(self) -> None:
        """The point is the min_insync-th largest copy: the leader alone commits nothing."""
        self.assertFalse(self.commitment.advance([7]))
        self.assertEqual(self.commitment.point, 0)
        self.assertTrue(self.commitment.advance([7, 6, 2]))
        self.assertEqual(self.commitment.point, 6)
        self.assertFalse(self.commitment.advance([8, 5, 5]), "the point never goes back")
        self.assertEqual(self.commitment.point, 6)

    def test_only_past_the_epochs_first_record(self) -> None:
        """Copies of earlier epochs' records alone commit nothing (Raft's rule); the leader record's do."""
        self.assertFalse(self.commitment.advance([4, 4, 4]))
        self.assertEqual(self.commitment.point, 0)
        self.assertTrue(self.commitment.advance([5, 5]))
        self.assertEqual(self.commitment.point, 5)

    def test_waiters_released_by_index(self) -> None:
        """An order waits until the point passes its record; a committed one does not wait at all."""
        waits = {index: self.wait(index) for index in (5, 6, 7)}
        self.commitment.advance([7, 7])
        self.assertEqual([index for index, d in waits.items() if d.called], [5, 6])
        self.assertNoResult(waits[7])
        self.commitment.advance([8, 8])
        self.successResultOf(waits[7])
        self.successResultOf(self.wait(3))

    def test_timeout(self) -> None:
        """An order not committed within the timeout fails with a 503, and waits no more."""
        d = self.wait(5)
        self.clock.advance(2.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        error = self.failureResultOf(d, Unavailable).value
        self.assertIn("no majority", error.message)
        self.assertTrue(self.commitment.advance([6, 6]))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_fail_all(self) -> None:
        """A leader that steps down fails every waiting order with the error it gives."""
        first, second = self.wait(5), self.wait(6)
        self.commitment.fail_all(ApiError("gone"))
        for d in (first, second):
            self.assertEqual(self.failureResultOf(d, ApiError).value.message, "gone")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_truncate_and_restart(self) -> None:
        """A truncation lowers the point; a new leadership starts from nothing committed."""
        self.commitment.advance([9, 9])
        self.commitment.truncate(7)
        self.assertEqual(self.commitment.point, 7)
        self.commitment.start(10)
        self.assertEqual((self.commitment.point, self.commitment.epoch_start), (0, 10))
        self.assertNoResult(self.wait(3))

    def wait(self, index: int) -> Deferred[None]:
        return ensureDeferred(self.commitment.wait(index))
