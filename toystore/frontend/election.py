"""
Leader tracking: which order replica leads, and electing one when none does.

An election asks every replica for its ``status`` (``frontend.status_timeout``
each, all at once), picks a new epoch above every epoch reported, and offers
the lead to the answering replicas from the highest id down: the first that
answers ready leads.  Then the others are told.  Elections are single-flight:
every caller that needs a leader while one is being elected waits for the
same outcome.  An election that finds no replica able to lead tries again
after a backoff, until it succeeds or the front-end stops; callers give up on
their own deadlines, not the election's.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import CancelledError, Deferred, DeferredList, ensureDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ..envelope import ApiError


class LeaderTracker:
    """
    :param replicas: a wire client per replica id.
    :param clock: for timeouts and retry delays.
    :param status_timeout: seconds to wait for each replica's status.
    :param on_elected: told ``(leader, epoch)`` after each election.
    """

    log = Logger()

    def __init__(
        self,
        replicas: dict[int, Any],
        clock: Any,
        status_timeout: float,
        on_elected: Callable[[int, int], None] = lambda leader, epoch: None,
        retry: Callable[[int], float] | None = None,
    ) -> None:
        self.replicas = replicas
        self.clock = clock
        self.status_timeout = status_timeout
        self.leader: int | None = None
        self.epoch = 0
        self.elections = 0
        self._on_elected = on_elected
        self._retry = retry or backoffPolicy(0.1, 2.0)
        self._waiting: list[Deferred[int]] = []
        self._electing = False
        self._running: Deferred[None] | None = None

    async def current(self) -> int:
        """The leader, electing one first if none is known."""
        if self.leader is not None:
            return self.leader
        return await self.elect()

    def failed(self, leader: int, reason: str) -> None:
        """A call to ``leader`` failed in a way that says it may not lead: forget it."""
        if self.leader == leader:
            self.log.warn("replica {leader} failed ({reason}): electing a new leader", leader=leader, reason=reason)
            self.leader = None

    def elect(self) -> Deferred[int]:
        """Join the election under way, or start one: a Deferred of the new leader's id."""
        waiter: Deferred[int] = Deferred()
        self._waiting.append(waiter)
        if not self._electing:
            self._electing = True
            running = Deferred.fromCoroutine(self._elect())
            # An election can finish at once (replicas answering synchronously).
            self._running = running if self._electing else None
        return waiter

    def stop(self) -> None:
        """Abandon an election under way (the front-end is stopping)."""
        if self._running is not None:
            self._running.cancel()

    async def _elect(self) -> None:
        attempt = 0
        try:
            while True:
                try:
                    chosen = await self._round()
                except CancelledError:
                    raise
                except Exception:
                    self.log.failure("election round failed")
                    chosen = None
                if chosen is not None:
                    break
                attempt += 1
                await deferLater(self.clock, self._retry(attempt), lambda: None)
        except CancelledError:
            waiting, self._waiting = self._waiting, []
            for waiter in waiting:
                waiter.errback(CancelledError())
            return
        finally:
            self._electing = False
            self._running = None
        self.elections += 1
        self._on_elected(*chosen)
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(chosen[0])

    async def _round(self) -> tuple[int, int] | None:
        """One election; the new ``(leader, epoch)``, or None if no replica could lead."""
        ids = sorted(self.replicas, reverse=True)
        calls = [ensureDeferred(self.replicas[i].call("status", timeout=self.status_timeout)) for i in ids]
        results = await DeferredList(calls, consumeErrors=True)
        statuses = {i: status for i, (ok, status) in zip(ids, results, strict=True) if ok}
        if not statuses:
            self.log.warn("no order replica answers: no leader yet")
            return None
        epoch = max(self.epoch, *(s["epoch"] for s in statuses.values()))
        for candidate in statuses:  # highest id first
            epoch += 1
            try:
                reply = await self.replicas[candidate].call("lead", {"epoch": epoch, "leader": candidate})
            except ApiError as e:
                self.log.warn(
                    "replica {candidate} cannot lead epoch {epoch}: {error}",
                    candidate=candidate,
                    epoch=epoch,
                    error=e.message,
                )
                continue
            if reply.get("ready"):
                self.leader, self.epoch = candidate, epoch
                self.log.info("replica {leader} leads epoch {epoch}", leader=candidate, epoch=epoch)
                for other in statuses:
                    if other != candidate:
                        self._tell(other, candidate, epoch)
                return candidate, epoch
        return None

    def _tell(self, replica: int, leader: int, epoch: int) -> None:
        """Tell ``replica`` who leads; it finds out by itself if this fails."""
        told = ensureDeferred(self.replicas[replica].call("lead", {"epoch": epoch, "leader": leader}))
        told.addErrback(
            lambda f: self.log.info(
                "could not tell replica {replica} that {leader} leads: {error}",
                replica=replica,
                leader=leader,
                error=f.getErrorMessage(),
            )
        )
