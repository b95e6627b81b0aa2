"""
The leader's commit point, and the orders waiting for it.

An order is acknowledged only once its record is on disk on ``min_insync``
replicas, the leader included.  The leader counts the copies: its own
durable length and each follower's acknowledged length; the commit point is
the ``min_insync``-th largest.  Only a point past the record that opened the
leader's epoch counts: records of earlier epochs become committed by that
record, never by counting their own copies, which is Raft's rule against a
record on a majority being overwritten later.

This module is reactor-free: time is the clock it is given, for the
commitment timeout.
"""

from __future__ import annotations

from typing import Iterable

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime

from ..envelope import ApiError, Unavailable


class Waiter:
    """An order waiting for its record to be committed."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.deferred: Deferred[None] = Deferred()


class Commitment:
    """
    The commit point of one leadership, and the orders waiting for it.

    :param clock: for the timeout of each wait.
    :param min_insync: the copies (leader included) that commit a record.
    :param timeout: seconds an order waits for commitment before it fails.
    """

    def __init__(self, clock: IReactorTime, min_insync: int, timeout: float) -> None:
        self.clock = clock
        self.min_insync = min_insync
        self.timeout = timeout
        self.point = 0  # records known to be on min_insync replicas (leader: exact; follower: 0)
        self.epoch_start = 0  # index of the record that opened this leader's epoch
        self._waiters: list[Waiter] = []

    def start(self, epoch_start: int) -> None:
        """A new leadership whose first record (the leader record) is ``epoch_start``: nothing is committed yet."""
        self.epoch_start = epoch_start
        self.point = 0

    def truncate(self, length: int) -> None:
        """The log keeps only its first ``length`` records."""
        self.point = min(self.point, length)

    def advance(self, copies: Iterable[int]) -> bool:
        """
        Recompute the commit point from the lengths on disk of every copy
        (the leader's and each follower's acknowledged one); release the
        orders it commits.  Whether the point moved.
        """
        ranked = sorted(copies, reverse=True)
        if len(ranked) < self.min_insync:
            return False
        point = ranked[self.min_insync - 1]
        if point <= self.epoch_start or point <= self.point:
            return False
        self.point = point
        ready, self._waiters = (
            [w for w in self._waiters if w.index < point],
            [w for w in self._waiters if w.index >= point],
        )
        for waiter in ready:
            waiter.deferred.callback(None)
        return True

    async def wait(self, index: int) -> None:
        """
        Wait until record ``index`` is committed, at most ``timeout`` seconds.

        :raises Unavailable: when it is not committed in time.
        """
        if index < self.point:
            return
        waiter = Waiter(index)
        self._waiters.append(waiter)
        try:
            await waiter.deferred.addTimeout(self.timeout, self.clock)
        except TimeoutError:
            raise Unavailable(
                f"no majority: the order is on fewer than {self.min_insync} replicas "
                f"after {self.timeout} s, so it is not acknowledged"
            ) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def fail_all(self, error: ApiError) -> None:
        """Fail every order waiting (the leader steps down or stops)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.deferred.errback(error)
