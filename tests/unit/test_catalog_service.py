"""
Tests for the catalog service: its wire calls, the feed, restocks and group
commit, with a Clock and the database work run inline or held back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from toystore.catalog.service import DB_FILE, CatalogService
from toystore.catalog.store import read_ledger
from toystore.config import load
from toystore.runtime import StartupError

from .helpers import connect, feed, sent


def inline(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """Run 'thread' work at once, on the test's thread."""
    return maybeDeferred(function, *args)


class HeldThread:
    """Thread work that waits until the test releases it, to see what happens meanwhile."""

    def __init__(self) -> None:
        self.held: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.held.append((function, args, d))
        return d

    def release(self) -> None:
        function, args, d = self.held.pop(0)
        d.callback(function(*args))


class CatalogCase(SynchronousTestCase):
    """A started catalog in a temporary directory, 10 of each toy."""

    run_in_thread: Callable[..., Deferred[Any]] = staticmethod(inline)

    def setUp(self) -> None:
        self.clock = Clock()
        base = load().catalog
        self.config = base.__class__(**{**base.__dict__, "data_dir": self.mktemp(), "initial_stock": 10})
        self.catalog = CatalogService(self.config, self.clock, self.run_in_thread, self.failpoint)
        self.catalog.startService()
        self.addCleanup(self.stop)
        self.protocol, self.transport = connect(self.catalog, self.clock)

    def failpoint(self, name: str) -> None:
        """Where :func:`toystore.failpoints.reach` would be called: nothing is armed here."""

    def stop(self) -> None:
        if self.catalog.running:
            d = self.catalog.stopService()
            while isinstance(self.run_in_thread, HeldThread) and self.run_in_thread.held:
                self.run_in_thread.release()
            self.successResultOf(d)

    def call(self, type: str, **fields: Any) -> dict[str, Any]:
        return self.call_on((self.protocol, self.transport), type, **fields)

    def connect(self) -> tuple[Any, Any]:
        """Another connection to the catalog: a protocol and its transport."""
        return connect(self.catalog, self.clock)

    def call_on(self, connection: tuple[Any, Any], type: str, **fields: Any) -> dict[str, Any]:
        protocol, transport = connection
        feed(protocol, {"id": 1, "type": type, **fields})
        [reply] = sent(transport)
        return reply

    def subscriber(self) -> tuple[Any, Any]:
        protocol, transport = connect(self.catalog, self.clock)
        feed(protocol, {"id": 1, "type": "subscribe"})
        self.assertEqual(sent(transport), [{"id": 1, "data": {"subscribed": True}}])
        return protocol, transport


class QueryTests(CatalogCase):
    """query and list answer from the in-memory toys."""

    def test_query(self) -> None:
        """A known toy comes back with price and quantity."""
        self.assertEqual(
            self.call("query", name="Tux"), {"id": 1, "data": {"name": "Tux", "price": 15.99, "quantity": 10}}
        )

    def test_query_errors(self) -> None:
        """Unknown toy: 404; missing or bad name: 400."""
        self.assertEqual(self.call("query", name="Unicorn")["error"]["code"], 404)
        self.assertEqual(self.call("query")["error"]["code"], 400)
        self.assertEqual(self.call("query", name=["Tux"])["error"]["code"], 400)

    def test_list(self) -> None:
        """list gives all fifteen toys, sorted by name."""
        toys = self.call("list")["data"]["toys"]
        self.assertEqual(len(toys), 15)
        self.assertEqual([t["name"] for t in toys], sorted(t["name"] for t in toys))


class BuyTests(CatalogCase):
    """buy commits, updates the reads, and pushes an invalidation."""

    def test_buy_then_query(self) -> None:
        """After a buy, queries show the new stock and subscribers hear of it."""
        _, feed_transport = self.subscriber()
        reply = self.call("buy", name="Tux", quantity=4, key="k1", epoch=1)
        self.assertEqual(reply["data"]["remaining"], 6)
        self.assertEqual(self.call("query", name="Tux")["data"]["quantity"], 6)
        self.assertEqual(sent(feed_transport), [{"type": "invalidate", "names": ["Tux"], "reason": "buy"}])
        self.assertEqual(self.catalog.epoch, 1)

    def test_replay_pushes_nothing(self) -> None:
        """A repeated key changes nothing, so nothing is pushed or counted twice."""
        _, feed_transport = self.subscriber()
        first = self.call("buy", name="Tux", quantity=4, key="k1", epoch=1)
        sent(feed_transport)
        again = self.call("buy", name="Tux", quantity=4, key="k1", epoch=1)
        self.assertEqual(first["data"], again["data"])
        self.assertEqual(sent(feed_transport), [])
        self.assertEqual(self.catalog.metrics.buys._value.get(), 1)
        self.assertEqual(self.catalog.metrics.items_sold._value.get(), 4)

    def test_errors(self) -> None:
        """Each refusal has its own code; refused buys push nothing."""
        _, feed_transport = self.subscriber()
        self.call("buy", name="Tux", quantity=1, key="a", epoch=5)
        sent(feed_transport)
        cases = [
            ({"name": "Tux", "quantity": 11, "key": "b", "epoch": 5}, 409),
            ({"name": "Unicorn", "quantity": 1, "key": "c", "epoch": 5}, 404),
            ({"name": "Tux", "quantity": 0, "key": "d", "epoch": 5}, 400),
            ({"name": "Tux", "quantity": "1", "key": "d", "epoch": 5}, 400),
            ({"name": "Tux", "quantity": 1, "epoch": 5}, 400),
            ({"name": "Tux", "quantity": 1, "key": "e", "epoch": 4}, 412),
            ({"name": "Tux", "quantity": 2, "key": "a", "epoch": 5}, 422),
        ]
        for fields, code in cases:
            with self.subTest(fields=fields):
                self.assertEqual(self.call("buy", **fields)["error"]["code"], code)
        self.assertEqual(sent(feed_transport), [])
        self.assertEqual(self.call("query", name="Tux")["data"]["quantity"], 9)

    def test_reconcile_fences_and_lists(self) -> None:
        """reconcile raises the epoch (older buys get 412) and lists the buys after a seq."""
        self.call("buy", name="Tux", quantity=1, key="a", epoch=1)
        reply = self.call("reconcile", epoch=2, after=0)
        self.assertEqual(reply["data"]["buys"], [{"seq": 1, "key": "a", "name": "Tux", "quantity": 1}])
        self.assertEqual(self.catalog.epoch, 2)
        self.assertEqual(self.call("buy", name="Tux", quantity=1, key="b", epoch=1)["error"]["code"], 412)
        self.assertEqual(self.call("reconcile", epoch=1, after=0)["error"]["code"], 412)
        self.assertEqual(self.call("reconcile", epoch=2)["error"]["code"], 400)

    def test_metrics(self) -> None:
        """Calls are counted by type and outcome; stock is a gauge per toy."""
        self.call("buy", name="Tux", quantity=4, key="k1", epoch=1)
        self.call("buy", name="Tux", quantity=40, key="k2", epoch=1)
        registry = self.catalog.metrics.registry
        self.assertEqual(registry.get_sample_value("toystore_catalog_calls_total", {"type": "buy", "outcome": "ok"}), 1)
        self.assertEqual(
            registry.get_sample_value("toystore_catalog_calls_total", {"type": "buy", "outcome": "409"}), 1
        )
        self.assertEqual(registry.get_sample_value("toystore_catalog_stock", {"toy": "Tux"}), 6)
        self.assertEqual(registry.get_sample_value("toystore_catalog_commit_batch_size_count"), 2)


class RetryTests(CatalogCase):
    """
    A leader retries a buy whose reply it lost with the same key: the
    catalog looks the key up before it fences the epoch, so the retry gets
    the first reply even after a newer leader was seen, and only new buys
    of an older epoch are refused.
    """

    def test_recorded_key_answered_whatever_the_epoch(self) -> None:
        """A key recorded at epoch 3, retried at epoch 2 after epoch 5 was seen: the first reply, nothing sold."""
        first = self.call("buy", name="Tux", quantity=2, key="k1", epoch=3)
        self.assertEqual(self.call("reconcile", epoch=5, after=0)["data"]["epoch"], 5)
        again = self.call("buy", name="Tux", quantity=2, key="k1", epoch=2)
        self.assertEqual(again, first)
        self.assertEqual(again["data"]["epoch"], 3)
        self.assertEqual(self.call("query", name="Tux")["data"]["quantity"], 8)
        self.assertEqual(self.catalog.epoch, 5)

    def test_new_key_of_an_older_epoch_refused(self) -> None:
        """After epoch 5, a new key at epoch 2 is fenced (412) and sells nothing."""
        self.call("buy", name="Tux", quantity=2, key="k1", epoch=3)
        self.call("reconcile", epoch=5, after=0)
        reply = self.call("buy", name="Tux", quantity=1, key="k2", epoch=2)
        self.assertEqual(reply["error"]["code"], 412)
        self.assertEqual(self.call("query", name="Tux")["data"]["quantity"], 8)

    def test_recorded_key_with_another_body(self) -> None:
        """A recorded key that names another buy is a 422, whatever the epoch: the key is looked at first."""
        self.call("buy", name="Tux", quantity=2, key="k1", epoch=3)
        self.call("reconcile", epoch=5, after=0)
        for fields in ({"name": "Tux", "quantity": 3}, {"name": "Fox", "quantity": 2}):
            for epoch in (2, 5, 6):
                with self.subTest(fields=fields, epoch=epoch):
                    reply = self.call("buy", key="k1", epoch=epoch, **fields)
                    self.assertEqual(reply["error"]["code"], 422)
        self.assertEqual(self.call("query", name="Tux")["data"]["quantity"], 8)

    def test_fenced_key_stays_free(self) -> None:
        """A buy fenced (412) leaves its key free: the newer leader's buy of it is decided afresh."""
        self.call("reconcile", epoch=5, after=0)
        self.assertEqual(self.call("buy", name="Fox", quantity=1, key="k2", epoch=2)["error"]["code"], 412)
        self.assertEqual(self.call("buy", name="Fox", quantity=1, key="k2", epoch=5)["data"]["remaining"], 9)

    def test_late_first_attempt_after_a_refused_retry(self) -> None:
        """
        The fault seen with packets dropped: a leader gives up a buy's connection, retries the key
        on a new one and is refused for want of stock; a restock; then the first attempt's bytes,
        retransmitted on the old connection, arrive.  That attempt gets the refusal, sells nothing.
        """
        late = self.connect()
        self.call("buy", name="Tux", quantity=10, key="k0", epoch=3)
        self.assertEqual(self.call("buy", name="Tux", quantity=2, key="k1", epoch=3)["error"]["code"], 409)
        self.clock.advance(self.config.restock_interval)
        self.assertEqual(self.call("query", name="Tux")["data"]["quantity"], self.config.restock_quantity)
        reply = self.call_on(late, "buy", name="Tux", quantity=2, key="k1", epoch=3)
        self.assertEqual(reply["error"]["code"], 409)
        self.assertEqual(self.call("query", name="Tux")["data"]["quantity"], self.config.restock_quantity)
        self.assertEqual([b["key"] for b in read_ledger(Path(self.config.data_dir) / DB_FILE)[1]], ["k0"])


class LateFirstBuyTests(CatalogCase):
    """catalog.first-buy-late: each key's first buy waits; the ones after it pass at once."""

    def setUp(self) -> None:
        super().setUp()
        self.catalog._late = 6.0

    def test_first_buy_of_each_key_waits(self) -> None:
        """The first attempt is answered after the delay, behind a retry of the same key answered at once."""
        late = self.connect()
        protocol, transport = late
        feed(protocol, {"id": 1, "type": "buy", "name": "Tux", "quantity": 2, "key": "k1", "epoch": 1})
        self.assertEqual(sent(transport), [])
        retry = self.call("buy", name="Tux", quantity=2, key="k1", epoch=1)
        self.assertEqual(retry["data"]["remaining"], 8)
        self.clock.advance(6.0)
        [first] = sent(transport)
        self.assertEqual(first, retry)
        self.assertEqual(self.call("query", name="Tux")["data"]["quantity"], 8)


class FailpointTests(CatalogCase):
    """catalog.after-commit is reached once a sale is on disk, before its reply or push leaves."""

    def setUp(self) -> None:
        self.reached: list[tuple[str, bytes, bytes, list[str]]] = []
        super().setUp()
        self.feed_protocol, self.feed_transport = self.subscriber()

    def failpoint(self, name: str) -> None:
        buys = read_ledger(Path(self.config.data_dir) / DB_FILE)[1]
        self.reached.append((name, self.transport.value(), self.feed_transport.value(), [b["key"] for b in buys]))

    def test_after_commit(self) -> None:
        """The buy is committed when the point is reached, and neither its reply nor its push is written yet."""
        reply = self.call("buy", name="Tux", quantity=1, key="k1", epoch=1)
        self.assertEqual(reply["data"]["seq"], 1)
        self.assertEqual(self.reached, [("catalog.after-commit", b"", b"", ["k1"])])

    def test_only_sales(self) -> None:
        """A replay, a refusal and a restock pass the point: they leave nothing in doubt."""
        self.call("buy", name="Tux", quantity=10, key="k1", epoch=1)
        del self.reached[:]
        self.call("buy", name="Tux", quantity=10, key="k1", epoch=1)
        self.call("buy", name="Tux", quantity=1, key="k2", epoch=1)
        self.call("reconcile", epoch=2, after=0)
        self.clock.advance(self.config.restock_interval)
        self.assertEqual(self.reached, [])


class CommitTests(CatalogCase):
    """Writes are committed off the reactor thread, in batches."""

    def setUp(self) -> None:
        self.run_in_thread = HeldThread()
        super().setUp()

    def test_reads_see_only_committed_stock(self) -> None:
        """Until the commit is done, reads show the old stock and no reply is sent."""
        feed(self.protocol, {"id": 9, "type": "buy", "name": "Tux", "quantity": 4, "key": "k1", "epoch": 1})
        self.assertEqual(sent(self.transport), [])
        self.assertEqual(self.call("query", name="Tux")["data"]["quantity"], 10)
        self.run_in_thread.release()
        self.assertEqual(sent(self.transport)[0]["data"]["remaining"], 6)
        self.assertEqual(self.call("query", name="Tux")["data"]["quantity"], 6)

    def test_concurrent_buys_share_a_commit(self) -> None:
        """Buys that arrive during a commit go together in the next one."""
        for n in range(5):
            feed(self.protocol, {"id": n, "type": "buy", "name": "Fox", "quantity": 1, "key": f"k{n}", "epoch": 1})
        self.assertEqual(len(self.run_in_thread.held), 1, "the first buy's commit starts alone")
        self.run_in_thread.release()
        self.assertEqual(len(self.run_in_thread.held), 1, "the other four share the next commit")
        self.run_in_thread.release()
        replies = sent(self.transport)
        self.assertEqual(sorted(r["data"]["remaining"] for r in replies), [5, 6, 7, 8, 9])
        registry = self.catalog.metrics.registry
        self.assertEqual(registry.get_sample_value("toystore_catalog_commit_batch_size_count"), 2)
        self.assertEqual(registry.get_sample_value("toystore_catalog_commit_batch_size_sum"), 5)

    def test_stop_waits_for_writes(self) -> None:
        """stopService finishes the pending buy before closing the database."""
        feed(self.protocol, {"id": 9, "type": "buy", "name": "Tux", "quantity": 4, "key": "k1", "epoch": 1})
        stopped = self.catalog.stopService()
        self.assertNoResult(stopped)
        self.run_in_thread.release()  # the buy
        self.assertEqual(sent(self.transport)[0]["data"]["remaining"], 6)
        self.run_in_thread.release()  # closing the database
        self.successResultOf(stopped)


class RestockTests(CatalogCase):
    """Every restock_interval seconds, sold-out toys come back."""

    def test_restock_on_the_clock(self) -> None:
        """A sold-out toy is restocked at the next tick, and subscribers are told."""
        _, feed_transport = self.subscriber()
        self.call("buy", name="Kite", quantity=10, key="k1", epoch=1)
        sent(feed_transport)
        self.clock.advance(self.config.restock_interval - 0.1)
        self.assertEqual(self.call("query", name="Kite")["data"]["quantity"], 0)
        self.clock.advance(0.1)
        self.assertEqual(self.call("query", name="Kite")["data"]["quantity"], self.config.restock_quantity)
        self.assertEqual(sent(feed_transport), [{"type": "invalidate", "names": ["Kite"], "reason": "restock"}])

    def test_quiet_restock(self) -> None:
        """A restock that finds nothing sold out pushes nothing."""
        _, feed_transport = self.subscriber()
        self.clock.advance(self.config.restock_interval * 3)
        self.assertEqual(sent(feed_transport), [])

    def test_failed_restock_keeps_the_loop(self) -> None:
        """A restock that fails is logged and the next one still runs."""
        self.call("buy", name="Kite", quantity=10, key="k1", epoch=1)
        real = self.catalog._run_in_thread
        self.catalog._run_in_thread = lambda f, *a: maybeDeferred(lambda: 1 / 0)
        self.clock.advance(self.config.restock_interval)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.catalog._run_in_thread = real
        self.clock.advance(self.config.restock_interval)
        self.assertEqual(self.call("query", name="Kite")["data"]["quantity"], self.config.restock_quantity)


class FeedTests(CatalogCase):
    """Subscribers that leave or stall are dropped without harming the others."""

    def test_disconnected_subscriber_removed(self) -> None:
        """A subscriber that disconnects gets no more pushes; others still do."""
        gone, gone_transport = self.subscriber()
        _, kept_transport = self.subscriber()
        gone.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.catalog.status()["subscribers"], 1)
        self.call("buy", name="Tux", quantity=1, key="k1", epoch=1)
        self.assertEqual(gone_transport.value(), b"")
        self.assertEqual(len(sent(kept_transport)), 1)

    def test_stalled_subscriber_dropped(self) -> None:
        """A subscriber whose buffer stays full for stall_timeout is cut off; the others are kept."""
        stalled, stalled_transport = self.subscriber()
        _, kept_transport = self.subscriber()
        stalled.pauseProducing()
        self.clock.advance(self.config.stall_timeout)
        self.assertTrue(stalled_transport.disconnecting)
        stalled.connectionLost(Failure(ConnectionDone()))
        self.call("buy", name="Tux", quantity=1, key="k1", epoch=1)
        self.assertEqual(len(sent(kept_transport)), 1)
        self.assertEqual(self.catalog.status()["subscribers"], 1)

    def test_health(self) -> None:
        """status() reports what /health shows."""
        self.subscriber()
        status = self.catalog.status()
        self.assertEqual(
            {k: status[k] for k in ("service", "status", "toys", "in_stock", "subscribers")},
            {"service": "catalog", "status": "ok", "toys": 15, "in_stock": 15, "subscribers": 1},
        )


class StartupTests(SynchronousTestCase):
    """A catalog that cannot open its database says why in one line."""

    def test_unusable_data_dir(self) -> None:
        """A data directory that is a file stops the start with a StartupError."""
        path = Path(self.mktemp())
        path.write_text("not a directory")
        base = load().catalog
        config = base.__class__(**{**base.__dict__, "data_dir": str(path)})
        catalog = CatalogService(config, Clock(), inline)
        error = self.assertRaises(StartupError, catalog.startService)
        self.assertIn("cannot open the catalog database", str(error))


class StoppingTests(CatalogCase):
    """A buy that arrives while the catalog stops gets a clean 503, not a logged internal error."""

    def test_buy_while_stopping(self) -> None:
        self.successResultOf(self.catalog.stopService())
        reply = self.call("buy", name="Tux", quantity=1, key="late", epoch=1)
        self.assertEqual(reply["error"], {"code": 503, "message": "the catalog is stopping"})
        self.assertEqual(self.flushLoggedErrors(), [])
