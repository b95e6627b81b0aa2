"""Tests for the leader's commit point and the orders waiting for it (:mod:`toystore.order.commitment`)."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from toystore.envelope import ApiError, Unavailable
from toystore.order.commitment import COMPACT_SLACK, Commitment


class CommitmentTests(SynchronousTestCase):
    """Orders wait for the commit point the protocol gives, or time out."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.commitment = Commitment(self.clock, timeout=3.0)

    def wait(self, index: int) -> Deferred[None]:
        return self.commitment.wait(index)

    def test_point_only_grows(self) -> None:
        """The point moves forward only; an older point changes nothing."""
        self.assertTrue(self.commitment.advance(6))
        self.assertEqual(self.commitment.point, 6)
        self.assertFalse(self.commitment.advance(5), "the point never goes back")
        self.assertFalse(self.commitment.advance(6))
        self.assertEqual(self.commitment.point, 6)

    def test_waiters_released_by_index(self) -> None:
        """An order waits until the point passes its record, whatever the order of arrival; a committed one does not."""
        waits = [(index, self.wait(index)) for index in (6, 5, 7, 5)]  # two waits for record 5
        self.commitment.advance(7)
        self.assertEqual([index for index, d in waits if d.called], [6, 5, 5])
        self.assertNoResult(waits[2][1])
        self.commitment.advance(8)
        self.successResultOf(waits[2][1])
        self.successResultOf(self.wait(3))
        self.assertEqual(self.commitment.waiting(), 0)

    def test_one_timer_for_every_wait(self) -> None:
        """Each wait fails at its own deadline, the oldest first, with one timer running at a time."""
        first = self.wait(5)
        self.clock.advance(1.0)
        second, third = self.wait(6), self.wait(7)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1.9)
        self.assertNoResult(first)
        self.clock.advance(0.1)
        error = self.failureResultOf(first, Unavailable).value
        self.assertIn("no majority", error.message)
        self.assertNoResult(second)
        self.commitment.advance(7)  # commits records 0 .. 6
        self.successResultOf(second)
        self.clock.advance(1.0)
        self.failureResultOf(third, Unavailable)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(self.commitment.advance(9), "failed waits do not hold the point back")

    def test_expired_waits_leave_the_heap(self) -> None:
        """A leader without a majority for long does not keep its expired waits: the heap is rebuilt without them."""
        waits = []
        for n in range(1000):
            waits.append(self.wait(5 + n))
            self.clock.advance(0.01)
        self.clock.advance(3.0)
        for d in waits:
            self.failureResultOf(d, Unavailable)
        self.assertLessEqual(len(self.commitment._by_index), COMPACT_SLACK)
        self.assertEqual((self.commitment.waiting(), self.clock.getDelayedCalls()), (0, []))
        later = self.wait(1005)
        self.assertTrue(self.commitment.advance(1006))
        self.successResultOf(later)

    def test_cancelled_wait(self) -> None:
        """A wait its caller cancels ends there; the others go on."""
        cancelled, kept = self.wait(5), self.wait(5)
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        self.commitment.advance(6)
        self.successResultOf(kept)

    def test_fail_all(self) -> None:
        """A leader that steps down fails every waiting order with the error it gives, and stops its timer."""
        first, second = self.wait(5), self.wait(6)
        self.commitment.fail_all(ApiError("gone"))
        for d in (first, second):
            self.assertEqual(self.failureResultOf(d, ApiError).value.message, "gone")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.commitment.waiting(), 0)
