"""
The orders waiting for the leader's commit point.

An order is acknowledged only once its record is committed: on disk on a
majority of the replicas, the leader included, by the protocol's rules
(:meth:`toystore.order.core.Node._advance_commit`).  The protocol moves the
commit point; this module holds the orders until it passes their records,
or until they time out.

Every order of a busy leader waits here, so a wait costs little: a
Deferred, and a place in a heap by record index and in a queue by arrival.
One timer serves every wait's deadline: the waits share one timeout, so the
oldest is always the first to expire, and the timer runs at its deadline
(then again at the next oldest's), not once per order.  A wait that ends
otherwise than by commitment (it expired, failed or was cancelled) stays in
the heap until the point passes it, or until such waits are half the heap,
which is then rebuilt without them: so a leader without a majority, whose
waits all expire, spends no more per order than one that commits them.

This module is reactor-free: time is the clock it is given.
"""

from __future__ import annotations

from collections import deque
from heapq import heapify, heappop, heappush
from itertools import count

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ..envelope import ApiError, Unavailable

#: Ended waits the heap may hold beyond its rule of half, so that a small heap is not rebuilt again and again.
COMPACT_SLACK = 64


class Waiter:
    """An order waiting for record ``index`` to be committed, until ``deadline``."""

    __slots__ = ("index", "deadline", "deferred")

    def __init__(self, index: int, deadline: float) -> None:
        self.index = index
        self.deadline = deadline
        self.deferred: Deferred[None] = Deferred()  # cancelling it (the default canceller) ends the wait


class Commitment:
    """
    The commit point of one leadership, and the orders waiting for it.

    A wait that has been answered (committed, failed, cancelled) may stay in
    the heap or the queue a while; it is skipped, and dropped, when reached.

    :param clock: for the timeout of each wait.
    :param timeout: seconds an order waits for commitment before it fails.
    """

    def __init__(self, clock: IReactorTime, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout
        self.point = 0  # records committed, as the protocol says
        self._by_index: list[tuple[int, int, Waiter]] = []  # a heap: the lowest index first
        self._by_arrival: deque[Waiter] = deque()  # so by deadline too
        self._ties = count()  # orders waits for the same index in the heap
        self._timer: IDelayedCall | None = None

    def waiting(self) -> int:
        """How many orders wait now."""
        return sum(1 for waiter in self._by_arrival if not waiter.deferred.called)

    def advance(self, point: int) -> bool:
        """
        The commit point is now ``point``: release the orders it commits,
        lowest index first.  Whether the point moved.
        """
        if point <= self.point:
            return False
        self.point = point
        heap = self._by_index
        while heap and heap[0][0] < point:
            d = heappop(heap)[2].deferred
            if not d.called:
                d.callback(None)
        arrivals = self._by_arrival
        while arrivals and arrivals[0].deferred.called:
            arrivals.popleft()
        return True

    def wait(self, index: int) -> Deferred[None]:
        """
        A Deferred that fires once record ``index`` is committed, or fails
        with :class:`~toystore.envelope.Unavailable` after ``timeout``
        seconds.
        """
        if index < self.point:
            return succeed(None)
        waiter = Waiter(index, self.clock.seconds() + self.timeout)
        heappush(self._by_index, (index, next(self._ties), waiter))
        self._by_arrival.append(waiter)
        if self._timer is None:
            self._timer = self.clock.callLater(self.timeout, self._expire)
        return waiter.deferred

    def _expire(self) -> None:
        """Fail the waits whose time is up; set the timer again for the oldest left."""
        self._timer = None
        now = self.clock.seconds()
        arrivals, late = self._by_arrival, []
        # (a microsecond for rounding: the timer was set to run at this deadline)
        while arrivals and (arrivals[0].deferred.called or arrivals[0].deadline <= now + 1e-6):
            waiter = arrivals.popleft()
            if not waiter.deferred.called:
                late.append(waiter)
        if arrivals:
            self._timer = self.clock.callLater(arrivals[0].deadline - now, self._expire)
        for waiter in late:
            if not waiter.deferred.called:
                waiter.deferred.errback(
                    Unavailable(
                        f"no majority: the order is not on a majority of the replicas "
                        f"after {self.timeout} s, so it is not acknowledged"
                    )
                )
        self._compact()

    def fail_all(self, error: ApiError) -> None:
        """Fail every order waiting (the leader steps down or stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiters = [entry[2] for entry in self._by_index]
        self._by_index, self._by_arrival = [], deque()
        for waiter in waiters:
            if not waiter.deferred.called:
                waiter.deferred.errback(error)

    def _compact(self) -> None:
        """
        Rebuild the heap without the waits that have ended, once they are
        more than half of it (the commit point may never pass them).  Every
        wait still waiting is in the arrival queue, so the heap holds more
        than half ended ones when it is over twice as long.
        """
        if len(self._by_index) > 2 * len(self._by_arrival) + COMPACT_SLACK:
            self._by_index = [entry for entry in self._by_index if not entry[2].deferred.called]
            heapify(self._by_index)
