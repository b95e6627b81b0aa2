"""
The front-end service: products through the cache, orders through the
leader with transparent failover, and the catalog's feed that keeps the cache
fresh.

Failover: a call to the leader that fails in a way that says it may not lead
(it cannot be reached, does not answer in time, drops the connection, or
answers 421 "not leader") makes the tracker look for the leader again; the request
is then retried against it with the same idempotency key, so it is placed at
most once.  A leader that answers 503 (no majority yet, catalog unreachable)
is asked again after a short pause.  One try waits at most half the
deadline, so a leader that hangs (paused, cut off) still leaves time to fail
over.  All of it within ``frontend.failover_deadline``; only then does the
client get a 503.
"""

from __future__ import annotations

import uuid
from typing import Any, Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge
from twisted.application.service import Service
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..config import ClusterConfig
from ..contract import INVALIDATE, int_field, parse
from ..envelope import (
    ApiError,
    BadRequest,
    Conflict,
    Encoded,
    Unavailable,
    Unprocessable,
)
from ..stats import RequestStats
from ..wire import CallTimeout, ConnectionDropped, NotConnected, WireProtocol
from .cache import LRUCache
from .discovery import LeaderTracker

#: Errors from the leader that mean it may not lead any more.
NOT_LEADING = (421,)
#: Seconds between two tries of a leader that answered 503.
RETRY_PAUSE = 0.1


class FrontendMetrics:
    """The front-end's Prometheus metrics, in a registry of their own."""

    def __init__(self, cache: LRUCache) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = RequestStats(
            r,
            ("toystore_frontend_requests", "Public requests"),
            ("toystore_frontend_request_seconds", "Time to answer a public request"),
        )
        self.failovers = Counter("toystore_frontend_failovers", "Calls retried after a leader failed", registry=r)
        self.discoveries = Gauge(
            "toystore_frontend_leader_discoveries", "Times this front-end looked for the leader", registry=r
        )
        self.pushes = Counter("toystore_frontend_pushes", "Invalidations pushed by the catalog", registry=r)
        stats = cache.stats
        for name, help_text, read in [
            ("hits", "Product queries answered from the cache", lambda: stats.hits),
            ("misses", "Product queries sent to the catalog", lambda: stats.misses),
            ("evictions", "Entries evicted to make room", lambda: stats.evictions),
            ("invalidations", "Entries dropped because their toy changed", lambda: stats.invalidations),
            ("clears", "Times the whole cache was cleared (feed reconnected)", lambda: stats.clears),
        ]:
            Gauge(f"toystore_frontend_cache_{name}", help_text, registry=r).set_function(read)
        Gauge("toystore_frontend_cache_entries", "Entries in the cache", registry=r).set_function(lambda: len(cache))

    def record(self, kind: str, code: int, seconds: float) -> None:
        """Count a public request of ``kind`` answered with ``code`` in ``seconds``."""
        self.requests.record(kind, str(code), seconds)


class FrontendService(Service):
    """
    :param catalog: a wire client of the catalog, subscribed to its feed
        (this service is its push handler and its ``prepare``).
    :param replicas: a wire client per order replica id.
    """

    log = Logger()

    def __init__(self, config: ClusterConfig, clock: Any, catalog: Any, replicas: dict[int, Any]) -> None:
        self.config = config.frontend
        self.clock = clock
        self.catalog = catalog
        self.replicas = replicas
        self.cache = LRUCache(self.config.cache_size)
        self._placing: dict[str, tuple[str, int]] = {}  # key -> (name, quantity) of orders under way
        #: told each push of the catalog (names, reason) while a dashboard watches; None otherwise
        self.on_push: Callable[[list[str], str], None] | None = None
        self.metrics = FrontendMetrics(self.cache)
        self.tracker = LeaderTracker(
            replicas, clock, self.config.status_timeout, on_found=lambda target, epoch: self._found()
        )

    # -- life cycle ------------------------------------------------------------

    def startService(self) -> None:
        """Find the leader at once, and keep looking (in the background)."""
        super().startService()
        self.tracker.start()

    def stopService(self) -> None:
        super().stopService()
        self.tracker.stop()

    def _found(self) -> None:
        self.metrics.discoveries.set(self.tracker.discoveries)

    def status(self) -> dict[str, Any]:
        """What ``GET /health`` shows."""
        return {
            "service": "frontend",
            "status": "ok" if self.running else "stopping",
            "leader": self.tracker.known,
            "via": self.tracker.leader,
            "epoch": self.tracker.epoch,
            "cache": {"size": self.cache.size, "entries": len(self.cache)},
        }

    # -- the catalog's feed ------------------------------------------------------

    async def subscribe(self, connection: WireProtocol) -> None:
        """``prepare`` of the catalog connection: subscribe, and forget what the cache knew."""
        await connection.call("subscribe")
        self.cache.clear()
        self.log.info("subscribed to the catalog's feed; cache cleared")

    def push_invalidate(self, message: dict[str, Any], connection: WireProtocol) -> None:
        """The catalog says these toys changed."""
        names, reason = INVALIDATE.parse(message)
        self.metrics.pushes.inc()
        for name in names:
            self.cache.invalidate(name)
        if self.on_push is not None:
            self.on_push(names, reason)

    # -- products ----------------------------------------------------------------

    def cached_product(self, name: str) -> Encoded | None:
        """
        The reply for ``name`` if the cache has it (a hit), else None (a
        miss: :meth:`product` asks the catalog).  The cache keeps replies
        encoded, so a hit is written as it is.
        """
        return self.cache.get(name)

    def product(self, name: str) -> Deferred[Encoded]:
        """A toy's reply from the catalog, cached for the queries after it."""
        version = self.cache.version(name)

        def keep(reply: Encoded) -> Encoded:
            self.cache.put(name, reply, version)
            return reply

        # The catalog's reply is passed on as the bytes it sent, not decoded and encoded again.
        return self.catalog.call("query", {"name": name}, encoded=True).addCallback(keep)

    # -- orders ------------------------------------------------------------------

    async def place_order(self, name: str, quantity: int, key: str | None) -> dict[str, Any]:
        """
        Place an order through the leader, once per key, failing over if it
        must.  While a key's first request is under way, another with the
        same key is refused: 409 with the same body (retry once it is
        answered, and get the same reply), 422 with another body.
        """
        if key in self._placing:
            first_name, first_quantity = self._placing[key]
            if (first_name, first_quantity) != (name, quantity):
                raise Unprocessable(
                    f"key {key!r} is in use for {first_quantity} x {first_name}, not {quantity} x {name}"
                )
            raise Conflict(f"an order with key {key!r} is still being placed: retry once it is answered")
        key = key or f"fe-{uuid.uuid4().hex}"
        self._placing[key] = (name, quantity)
        try:
            reply = await self._with_leader("order", {"name": name, "quantity": quantity, "key": key})
        finally:
            del self._placing[key]
        self.cache.invalidate(name)
        return reply

    def order(self, number: int) -> Deferred[Encoded]:
        """An order's reply, as the leader knows it (and encodes it)."""
        return self._with_leader("get", {"number": number}, encoded=True)

    def leader(self) -> dict[str, Any]:
        """``GET /leader``: the replica that leads, as this front-end knows it, and where its calls go."""
        if self.tracker.leader is None:
            raise Unavailable("no leader is known yet")
        return {"leader": self.tracker.known, "epoch": self.tracker.epoch, "via": self.tracker.leader}

    def _with_leader(self, kind: str, fields: dict[str, Any], encoded: bool = False) -> Deferred[Any]:
        """
        Make a call to the leader, failing over if it must, within
        ``failover_deadline``.  The common case, a known leader that
        answers, takes one wire call and no coroutine.

        :param encoded: see :meth:`toystore.wire.WireProtocol.call`.
        """
        deadline = self.clock.seconds() + self.config.failover_deadline
        leader = self.tracker.leader
        if leader is None:
            return Deferred.fromCoroutine(self._until_served(kind, fields, encoded, deadline))
        d = self.replicas[leader].call(kind, fields, timeout=self.config.failover_deadline / 2, encoded=encoded)
        return d.addErrback(self._first_try_failed, leader, kind, fields, encoded, deadline)

    def _first_try_failed(
        self, failure: Failure, leader: int, kind: str, fields: dict[str, Any], encoded: bool, deadline: float
    ) -> Deferred[Any]:
        failure.trap(ApiError)
        pause = self._failed_try(failure.value, leader)  # raises the answer itself
        return Deferred.fromCoroutine(self._until_served(kind, fields, encoded, deadline, failure.value, pause))

    async def _until_served(
        self,
        kind: str,
        fields: dict[str, Any],
        encoded: bool,
        deadline: float,
        last: ApiError | None = None,
        pause: bool = False,
    ) -> Any:
        last = last or Unavailable("no order replica is available")
        while True:
            left = deadline - self.clock.seconds()
            if pause and left > 0:
                await deferLater(self.clock, min(RETRY_PAUSE, left), lambda: None)
                left = deadline - self.clock.seconds()
            if left <= 0:
                raise Unavailable(f"no order replica could serve within {self.config.failover_deadline} s: {last}")
            leader = None
            try:
                leader = self.tracker.leader  # known, the common case; else wait for a discovery
                if leader is None:
                    leader = await _within(self.tracker.current(), left, self.clock)
                # Half the deadline at most for one try, so that a leader that hangs
                # (paused, partitioned) leaves time to fail over to another.
                attempt = min(left, self.config.failover_deadline / 2)
                return await self.replicas[leader].call(kind, fields, timeout=attempt, encoded=encoded)
            except TimeoutError:
                pause = False
                continue  # the deadline check above ends it
            except ApiError as e:
                last = e
                pause = self._failed_try(e, leader)

    def _failed_try(self, error: ApiError, leader: int | None) -> bool:
        """
        A try that failed with ``error``: raise it if it is the answer
        itself (400, 404, 409, 422 ...); else count a failover, forget
        ``leader`` if it may not lead, and say whether to pause before the
        next try (a leader that answered 503).
        """
        if error.code not in NOT_LEADING and error.code != 503:
            raise error
        self.metrics.failovers.inc()
        if leader is not None and (
            error.code in NOT_LEADING or isinstance(error, NotConnected) or _transport_error(error)
        ):
            self.tracker.failed(leader, error.message)
            return False
        return True


def _transport_error(error: ApiError) -> bool:
    return isinstance(error, (CallTimeout, ConnectionDropped))


async def _within(awaitable: Awaitable[Any] | Deferred[Any], seconds: float, clock: Any) -> Any:
    d = awaitable if isinstance(awaitable, Deferred) else Deferred.fromCoroutine(awaitable)  # type: ignore[arg-type]
    return await d.addTimeout(seconds, clock)


def parse_order(body: Any, max_quantity: int) -> tuple[str, int]:
    """
    Check a ``POST /orders`` body: exactly ``name`` (a non-empty string) and
    ``quantity`` (a JSON integer from 1 to ``max_quantity``).
    """
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with 'name' and 'quantity'")
    unknown = sorted(set(body) - {"name", "quantity"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}: an order has only 'name' and 'quantity'")
    name = parse(body, "name")
    quantity = int_field(body, "quantity", 1, max_quantity)
    return name, quantity
