"""
The catalog service: serves stock over the wire, commits buys, restocks, and
pushes every stock change to its subscribers.

Reads come from an in-memory copy of the toys table, which changes only after
a commit, so a reader never sees a stock level that a crash could undo.
Writes (buys, restocks) go through a :class:`BatchQueue` to one database
thread: one transaction, hence one fsync, per batch, and the reactor thread
never waits on the disk.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from .. import failpoints
from ..batch import BatchQueue, timed_in_thread
from ..config import CatalogConfig
from ..contract import BUY, QUERY, RECONCILE
from ..envelope import NotFound, Unavailable
from ..runtime import StartupError
from ..stats import RequestStats
from ..wire import WireProtocol
from .store import (
    Buy,
    CatalogDB,
    Operation,
    Outcome,
    Reconcile,
    Restock,
    Toy,
)

DB_FILE = "catalog.sqlite"

#: ``run_in_thread(f, *args)``: run ``f`` off the reactor thread, a Deferred of its result.
RunInThread = Callable[..., Deferred[Any]]


class CatalogMetrics:
    """The catalog's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = RequestStats(
            r,
            ("toystore_catalog_calls", "Wire calls served"),
            ("toystore_catalog_call_seconds", "Time to serve a wire call"),
            labels=("type", "outcome"),
        )
        self.buys = Counter("toystore_catalog_buys", "Buys committed (replays not counted)", registry=r)
        self.items_sold = Counter("toystore_catalog_items_sold", "Items sold by committed buys", registry=r)
        self.restocks = Counter("toystore_catalog_restocks", "Toys restocked", registry=r)
        self.stock = Gauge("toystore_catalog_stock", "Items in stock", ["toy"], registry=r)
        self.subscribers = Gauge("toystore_catalog_subscribers", "Connections subscribed to the feed", registry=r)
        self.commit_seconds = Histogram(
            "toystore_catalog_commit_seconds",
            "Time of one database transaction, fsync included",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.batch_size = Histogram(
            "toystore_catalog_commit_batch_size",
            "Operations committed together",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )


class CatalogService(Service):
    """
    The catalog, and the handler of its lines port (``docs/wire.rst`` lists
    the messages).

    :param config: the ``[catalog]`` section.
    :param clock: drives the restock loop and stall timers.
    :param run_in_thread: runs database work off the reactor thread.
    :param failpoint: :func:`toystore.failpoints.reach`, or a test's stand-in.
    :param late: seconds each key's first buy waits before it is handled (the
        failpoint ``catalog.first-buy-late``; 0, as in production, for none).
    """

    log = Logger()

    def __init__(
        self,
        config: CatalogConfig,
        clock: IReactorTime,
        run_in_thread: RunInThread,
        failpoint: Callable[[str], None] = failpoints.reach,
        late: float | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = CatalogMetrics()
        self.toys: dict[str, Toy] = {}
        self.epoch = 0
        self._run_in_thread = run_in_thread
        self._failpoint = failpoint
        self._late = failpoints.seconds("catalog.first-buy-late") if late is None else late
        self._keys_seen: set[str] = set()  # with a late first buy only: the keys already held once
        self._db: CatalogDB | None = None
        self._writes: BatchQueue[Operation, Outcome] = BatchQueue(self._commit)
        self._subscribers: set[WireProtocol] = set()
        self._restocker = LoopingCall(self.restock)
        self._restocker.clock = clock

    # -- life cycle ----------------------------------------------------------

    def startService(self) -> None:
        """Open (or create) the database, load the toys, start restocking."""
        data_dir = Path(self.config.data_dir)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            self._db = CatalogDB(data_dir / DB_FILE, self.config.initial_stock)
        except (OSError, sqlite3.Error) as e:
            raise StartupError(f"cannot open the catalog database in {data_dir}: {e}") from None
        self.toys = self._db.toys()
        self.epoch = self._db.epoch()
        for toy in self.toys.values():
            self.metrics.stock.labels(toy.name).set(toy.quantity)
        self._restocker.start(self.config.restock_interval, now=False)
        super().startService()

    async def _stop(self) -> None:
        if self._restocker.running:
            self._restocker.stop()
        await self._writes.when_idle()
        if self._db is not None:
            await self._run_in_thread(self._db.close)
            self._db = None

    def stopService(self) -> Deferred[None]:
        """Finish the writes under way, then close the database."""
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    def status(self) -> dict[str, Any]:
        """What ``GET /health`` shows."""
        return {
            "service": "catalog",
            "status": "ok" if self.running else "stopping",
            "toys": len(self.toys),
            "in_stock": sum(1 for toy in self.toys.values() if toy.quantity > 0),
            "epoch": self.epoch,
            "subscribers": len(self._subscribers),
            "writes_queued": self._writes.queued,
        }

    # -- writes --------------------------------------------------------------

    def _commit(self, operations: list[Operation]) -> Deferred[list[Outcome]]:
        db = self._db
        if db is None:
            raise Unavailable("the catalog database is closed")

        return timed_in_thread(
            self._run_in_thread,
            lambda: db.apply(operations),
            self.metrics.commit_seconds,
            self.metrics.batch_size,
            len(operations),
        )

    async def _write(self, operation: Operation, reason: str) -> Outcome:
        """
        Commit ``operation``, bring the in-memory toys up to date, tell the
        subscribers what changed; raise the operation's error if it had one.
        """
        outcome = await self._writes.submit(operation)
        if isinstance(operation, Buy) and outcome.changed:
            # A sale is on disk and nothing of it has left the process yet: no reply, no push.
            self._failpoint("catalog.after-commit")
        if isinstance(operation, (Buy, Reconcile)):
            # Committed, even when the buy was refused: the epoch is news.
            self.epoch = max(self.epoch, operation.epoch)
        for name, quantity in outcome.changed.items():
            self.toys[name] = Toy(name, self.toys[name].price, quantity)
            self.metrics.stock.labels(name).set(quantity)
        if outcome.changed:
            self.publish(sorted(outcome.changed), reason)
        if isinstance(outcome.value, Exception):
            raise outcome.value
        return outcome

    async def buy(self, buy: Buy) -> dict[str, Any]:
        """Commit ``buy`` and return its reply, or raise why it failed."""
        if not self.running:
            # Connections outlive the listener during a stop: refuse, rather than race the close.
            raise Unavailable("the catalog is stopping")
        if buy.name not in self.toys:
            raise NotFound(f"product {buy.name!r} not found")
        if self._late and buy.key not in self._keys_seen:
            self._keys_seen.add(buy.key)
            self.log.warn("failpoint: the first buy of key {key} waits {late} s", key=buy.key, late=self._late)
            await deferLater(self.clock, self._late, lambda: None)
            if not self.running:
                raise Unavailable("the catalog is stopping")
        outcome = await self._write(buy, "buy")
        if not outcome.replayed:
            self.metrics.buys.inc()
            self.metrics.items_sold.inc(buy.quantity)
        return outcome.value

    async def reconcile(self, reconcile: Reconcile) -> dict[str, Any]:
        """Fence out the epochs before ``reconcile.epoch`` and list buys after ``reconcile.after``."""
        if not self.running:
            raise Unavailable("the catalog is stopping")
        outcome = await self._write(reconcile, "reconcile")
        return outcome.value

    async def restock(self) -> list[str]:
        """Restock every toy at 0; return their names.  Never fails the loop."""
        try:
            outcome = await self._write(Restock(self.config.restock_quantity), "restock")
        except Exception:
            self.log.failure("restock failed; trying again in {interval} s", interval=self.config.restock_interval)
            return []
        names: list[str] = outcome.value["restocked"]
        if names:
            self.metrics.restocks.inc(len(names))
            self.log.info("restocked {names}", names=", ".join(names))
        return names

    # -- the feed ------------------------------------------------------------

    def publish(self, names: list[str], reason: str) -> None:
        """Push an ``invalidate`` for ``names`` to every subscriber."""
        for subscriber in list(self._subscribers):
            with self.log.failuresHandled("pushing to {peer}", peer=subscriber.peer):
                subscriber.push("invalidate", names=names, reason=reason)

    # -- the lines port --------------------------------------------------------

    def call_query(self, message: dict[str, Any], connection: WireProtocol) -> dict[str, Any]:
        (name,) = QUERY.parse(message)
        toy = self.toys.get(name)
        if toy is None:
            raise NotFound(f"product {name!r} not found")
        return toy.to_json()

    def call_list(self, message: dict[str, Any], connection: WireProtocol) -> dict[str, Any]:
        return {"toys": [toy.to_json() for _, toy in sorted(self.toys.items())]}

    def call_buy(self, message: dict[str, Any], connection: WireProtocol) -> Any:
        return self.buy(Buy(*BUY.parse(message)))

    def call_reconcile(self, message: dict[str, Any], connection: WireProtocol) -> Any:
        return self.reconcile(Reconcile(*RECONCILE.parse(message)))

    def call_subscribe(self, message: dict[str, Any], connection: WireProtocol) -> dict[str, Any]:
        connection.drop_if_stalled(self.config.stall_timeout)
        self._subscribers.add(connection)
        self.metrics.subscribers.set(len(self._subscribers))
        self.log.info("{peer} subscribed to the feed", peer=connection.peer)
        return {"subscribed": True}

    def connection_lost(self, connection: WireProtocol, reason: object) -> None:
        if connection in self._subscribers:
            self._subscribers.discard(connection)
            self.metrics.subscribers.set(len(self._subscribers))
            self.log.info("{peer} left the feed", peer=connection.peer)

    def call_finished(self, kind: str, outcome: str, seconds: float) -> None:
        self.metrics.calls.record(kind, outcome, seconds)
