"""
Leader discovery: which order replica the front-end sends orders and reads to.

The replicas elect their leader themselves; the front-end only finds it.  A
discovery asks every replica for its ``status`` at once
(``frontend.status_timeout`` each) and takes the one that serves (it leads
and its leader record is committed), the newest epoch first.  When no
replica that answers serves, but one knows who leads (the front-end may be
cut from the leader alone), calls go to that one, which relays them to the
leader; not when the named leader itself answered (it does not serve: its
leader record is not committed, it hands over or stops, or it has stepped
down while its followers still name it): it would refuse them, or the relay
would wait on a link that is down.  Discoveries are single-flight: every caller that needs a leader while
one runs waits for the same outcome, and one that finds nobody tries again
after a short backoff (an election takes about a second), until it succeeds
or the front-end stops; callers give up on their own deadlines.
While the front-end runs, a discovery also runs every :data:`REFRESH`
seconds, so that a leader change with no failed call (a handover, a leader
that is reachable again after calls went through a relay) is seen soon, and
``GET /leader`` tells the truth.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import CancelledError, Deferred, DeferredList, ensureDeferred
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

#: Seconds between two discoveries while nothing fails.
REFRESH = 1.0


class LeaderTracker:
    """
    :param replicas: a wire client per replica id.
    :param clock: for timeouts and retry delays.
    :param status_timeout: seconds to wait for each replica's status.
    :param on_found: told ``(target, epoch)`` after each discovery.
    """

    log = Logger()

    def __init__(
        self,
        replicas: dict[int, Any],
        clock: Any,
        status_timeout: float,
        on_found: Callable[[int, int], None] = lambda target, epoch: None,
        retry: Callable[[int], float] | None = None,
    ) -> None:
        self.replicas = replicas
        self.clock = clock
        self.status_timeout = status_timeout
        self.leader: int | None = None  # where calls go: the leader, or a replica that relays to it
        self.known: int | None = None  # the leader itself, as the replicas say
        self.epoch = 0
        self.discoveries = 0
        #: each replica's answer to the last discovery's ``status``, None if it gave none (for the dashboard)
        self.statuses: dict[int, dict[str, Any] | None] = {}
        #: the last outage: (the epoch of the leader that ended it, seconds from the first sign of it)
        self.outage: tuple[int, float] | None = None
        self._lost_at: float | None = None  # when a failed call or a discovery first showed the leader gone
        self._on_found = on_found
        self._retry = retry or backoffPolicy(0.05, 0.5, jitter=lambda: 0.0)
        self._waiting: list[Deferred[int]] = []
        self._electing = False
        self._running: Deferred[None] | None = None
        self._refresh = LoopingCall(self._refreshed)
        self._refresh.clock = clock

    def start(self) -> None:
        """Discover now, and again every :data:`REFRESH` seconds."""
        if not self._refresh.running:
            self._refresh.start(REFRESH, now=True)

    def _refreshed(self) -> None:
        if not self._electing:
            self.elect().addErrback(lambda failure: None)

    async def current(self) -> int:
        """Where calls go, found first if not known."""
        if self.leader is not None:
            return self.leader
        return await self.elect()

    def failed(self, leader: int, reason: str) -> None:
        """A call to ``leader`` failed in a way that says it may not lead: forget it."""
        if self.leader == leader:
            self.log.warn("replica {leader} failed ({reason}): looking for the leader", leader=leader, reason=reason)
            self.leader = None
            self._lost()

    def _lost(self) -> None:
        if self._lost_at is None:
            self._lost_at = self.clock.seconds()

    def elect(self) -> Deferred[int]:
        """Join the discovery under way, or start one: a Deferred of where calls go now."""
        waiter: Deferred[int] = Deferred()
        self._waiting.append(waiter)
        if not self._electing:
            self._electing = True
            running = Deferred.fromCoroutine(self._elect())
            # A discovery can finish at once (replicas answering synchronously).
            self._running = running if self._electing else None
        return waiter

    def stop(self) -> None:
        """Abandon a discovery under way, and stop refreshing (the front-end is stopping)."""
        if self._refresh.running:
            self._refresh.stop()
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
                    self.log.failure("leader discovery failed")
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
        self.discoveries += 1
        self._on_found(*chosen)
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(chosen[0])

    async def _round(self) -> tuple[int, int] | None:
        """One discovery: ``(where calls go, epoch)``, or None if no replica serves or knows who does."""
        ids = sorted(self.replicas)
        calls = [ensureDeferred(self.replicas[i].call("status", timeout=self.status_timeout)) for i in ids]
        results = await DeferredList(calls, consumeErrors=True)
        self.statuses = {i: status if ok else None for i, (ok, status) in zip(ids, results, strict=True)}
        statuses = [status for ok, status in results if ok]
        serving = [s for s in statuses if s.get("serving")]
        if self.known is not None and not any(s["id"] == self.known for s in serving):
            self._lost()  # the leader calls went to no longer serves (or answers)
        if serving:
            best = max(serving, key=lambda s: s["epoch"])
            target, leader = best["id"], best["id"]
        else:
            # A named leader that answered does not serve: it says it leads but is not committed yet,
            # hands over or stops, or it no longer leads at all (cut from its followers, it stepped down
            # before they timed out).  Either way a relayed call would get a 421, or wait on a dead link.
            answered = {s["id"] for s in statuses}
            knowing = [
                s
                for s in statuses
                if s.get("leader") is not None and s.get("leader") not in answered and s.get("role") != "stopping"
            ]
            if not knowing:
                self.log.info("no order replica serves or knows a leader yet ({n} answered)", n=len(statuses))
                return None
            best = max(knowing, key=lambda s: s["epoch"])
            target, leader = best["id"], best["leader"]
        if (target, leader) != (self.leader, self.known):
            how = "" if target == leader else f", through replica {target}"
            self.log.info("replica {leader} leads epoch {epoch}{how}", leader=leader, epoch=best["epoch"], how=how)
        self.leader, self.known, self.epoch = target, leader, best["epoch"]
        if self._lost_at is not None:
            self.outage = (self.epoch, self.clock.seconds() - self._lost_at)
            self._lost_at = None
        return target, best["epoch"]
