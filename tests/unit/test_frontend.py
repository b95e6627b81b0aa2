"""
Tests for the front-end: elections with a Clock and fake replicas, and the
public API through StubTreq with a fake catalog.  No sockets.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from toystore.config import load
from toystore.envelope import ApiError, Encoded, NotFound, Unavailable, dumps
from toystore.frontend.election import LeaderTracker
from toystore.frontend.resources import frontend_root
from toystore.frontend.service import FrontendService
from toystore.order.replica import NotLeader
from toystore.wire import CallTimeout, NotConnected


def _encode(data: Any) -> Encoded:
    """What a peer's reply gives a call made with ``encoded=True``."""
    return Encoded(dumps({"data": data}))


class FakeReplica:
    """An order replica as the front-end sees it: status, lead, order, get."""

    def __init__(self, id: int, epoch: int = 0) -> None:
        self.id = id
        self.epoch = epoch
        self.leading = False
        self.down = False
        self.hung = False  # paused: calls get no answer
        self.clock: Clock | None = None
        self.refuse_lead: ApiError | None = None
        self.busy = 0  # order and get calls to answer 503 first (no majority yet)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.book: dict[str, int] = {}  # shared between replicas by the test, like a replicated log
        self.orders: list[dict[str, Any]] = []

    def call(
        self, type: str, fields: dict[str, Any] | None = None, timeout: float | None = None, encoded: bool = False
    ) -> Deferred[Any]:
        d = self._answer(type, fields or {}, timeout)
        return d.addCallback(_encode) if encoded else d

    def _answer(self, type: str, fields: dict[str, Any], timeout: float | None) -> Deferred[Any]:
        self.calls.append((type, fields))
        if self.down:
            return fail(NotConnected(f"cannot connect to replica {self.id}"))
        if self.hung:
            return Deferred().addTimeout(timeout or 5.0, self.clock, lambda result, t: _timed_out(self.id))
        if type == "status":
            return succeed({"id": self.id, "epoch": self.epoch, "role": "leader" if self.leading else "follower"})
        if type == "lead":
            if self.refuse_lead is not None:
                return fail(self.refuse_lead)
            self.epoch = fields["epoch"]
            self.leading = fields["leader"] == self.id
            return succeed({"epoch": self.epoch, "leader": fields["leader"], "ready": self.leading})
        if not self.leading:
            return fail(NotLeader(f"replica {self.id} is not the leader"))
        if self.busy:
            self.busy -= 1
            return fail(Unavailable("no majority yet"))
        if type == "order":
            if fields["name"] == "Unicorn":
                return fail(NotFound("product 'Unicorn' not found"))
            if fields["key"] not in self.book:
                self.book[fields["key"]] = len(self.orders)
                self.orders.append(fields)
            return succeed({"order_number": self.book[fields["key"]]})
        if type == "get":
            number = fields["number"]
            if number >= len(self.orders):
                return fail(NotFound(f"order {number} not found"))
            order = self.orders[number]
            return succeed({"number": number, "name": order["name"], "quantity": order["quantity"]})
        raise AssertionError(type)


def _timed_out(replica: int) -> None:
    raise CallTimeout(f"replica {replica} did not answer")


def cluster(*epochs: int) -> dict[int, FakeReplica]:
    """Fake replicas 1, 2, 3 sharing one order book."""
    replicas = {i + 1: FakeReplica(i + 1, epoch) for i, epoch in enumerate(epochs or (0, 0, 0))}
    book: dict[str, int] = {}
    orders: list[dict[str, Any]] = []
    for replica in replicas.values():
        replica.book, replica.orders = book, orders
    return replicas


class ElectionTests(SynchronousTestCase):
    """The highest answering replica leads, in an epoch above every one reported."""

    def setUp(self) -> None:
        self.clock = Clock()

    def tracker(self, replicas: dict[int, FakeReplica]) -> LeaderTracker:
        return LeaderTracker(replicas, self.clock, status_timeout=0.5, retry=lambda attempt: 1.0)

    def test_highest_id_new_epoch(self) -> None:
        """Replica 3 leads in epoch max(reported)+1, and the others are told."""
        replicas = cluster(4, 7, 2)
        tracker = self.tracker(replicas)
        self.assertEqual(self.successResultOf(tracker.elect()), 3)
        self.assertEqual((tracker.leader, tracker.epoch), (3, 8))
        for i in (1, 2):
            self.assertIn(("lead", {"epoch": 8, "leader": 3}), replicas[i].calls)

    def test_dead_highest(self) -> None:
        """With replica 3 down, replica 2 leads."""
        replicas = cluster()
        replicas[3].down = True
        tracker = self.tracker(replicas)
        self.assertEqual(self.successResultOf(tracker.elect()), 2)

    def test_candidate_that_cannot_lead(self) -> None:
        """A candidate that refuses (no majority reachable) is passed over, with a fresh epoch for the next."""
        replicas = cluster()
        replicas[3].refuse_lead = Unavailable("cannot reach a majority")
        tracker = self.tracker(replicas)
        self.assertEqual(self.successResultOf(tracker.elect()), 2)
        self.assertEqual(tracker.epoch, 2)

    def test_single_flight(self) -> None:
        """Callers that need a leader during an election share it: one round of status calls."""
        replicas = cluster()
        replicas[3].down = replicas[2].down = replicas[1].down = True
        tracker = self.tracker(replicas)
        waiting = [tracker.elect() for _ in range(5)]
        for replica in replicas.values():
            replica.down = False
        self.clock.advance(1.0)
        self.assertEqual([self.successResultOf(d) for d in waiting], [3] * 5)
        self.assertEqual(tracker.elections, 1)
        self.assertEqual(sum(1 for c in replicas[3].calls if c[0] == "status"), 2, "two rounds, not ten")

    def test_retries_until_a_replica_answers(self) -> None:
        """No replica answering: the election tries again after the backoff delay."""
        replicas = cluster()
        for replica in replicas.values():
            replica.down = True
        tracker = self.tracker(replicas)
        d = tracker.elect()
        self.clock.advance(1.0)
        self.assertNoResult(d)
        replicas[1].down = False
        self.clock.advance(1.0)
        self.assertEqual(self.successResultOf(d), 1)

    def test_failed(self) -> None:
        """failed() forgets the leader only if it is the one that failed."""
        tracker = self.tracker(cluster())
        self.successResultOf(tracker.elect())
        tracker.failed(2, "not ours")
        self.assertEqual(tracker.leader, 3)
        tracker.failed(3, "timed out")
        self.assertIsNone(tracker.leader)


class FakeCatalog:
    """Answers queries from a dict; counts them."""

    def __init__(self) -> None:
        self.toys = {"Tux": {"name": "Tux", "price": 15.99, "quantity": 100}}
        self.queries = 0

    def call(
        self, type: str, fields: dict[str, Any] | None = None, timeout: float | None = None, encoded: bool = False
    ) -> Deferred[Any]:
        self.queries += 1
        toy = self.toys.get(fields["name"])
        if toy is None:
            return fail(NotFound(f"product {fields['name']!r} not found"))
        return succeed(_encode(toy) if encoded else toy)


class APITests(SynchronousTestCase):
    """The public API through StubTreq."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.replicas = cluster()
        self.catalog = FakeCatalog()
        config = load()
        config = dataclasses.replace(config, frontend=dataclasses.replace(config.frontend, max_body=1024))
        self.frontend = FrontendService(config, self.clock, self.catalog, self.replicas)
        self.frontend.startService()
        self.addCleanup(self.frontend.stopService)
        self.treq = StubTreq(frontend_root(self.frontend))

    def request(self, method: str, path: str, body: Any = None, headers: dict | None = None) -> tuple[int, Any, Any]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        d = self.treq.request(method, "http://store" + path, data=data, headers=headers)
        self.treq.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        return response.code, json.loads(content), response.headers

    def test_product_forms_and_cache(self) -> None:
        """The three URL forms answer alike; the second query is served from the cache."""
        for path in ("/products/Tux", "/products/product_name=Tux", "/products?product_name=Tux"):
            code, body, _ = self.request("GET", path)
            self.assertEqual((code, body["data"]["name"]), (200, "Tux"))
        self.assertEqual(self.catalog.queries, 1)
        self.assertEqual(self.frontend.cache.stats.hits, 2)

    def raw(self, path: str) -> bytes:
        d = self.treq.get("http://store" + path)
        self.treq.flush()
        return self.successResultOf(self.successResultOf(d).content())

    def test_cache_keeps_the_encoded_reply(self) -> None:
        """A hit writes the very bytes the miss wrote, without asking the catalog."""
        first = self.raw("/products/Tux")
        self.catalog.toys["Tux"] = {"name": "Tux", "price": 1.0, "quantity": 1}  # unseen until invalidated
        self.assertEqual(self.raw("/products/Tux"), first)
        self.assertEqual(json.loads(first), {"data": {"name": "Tux", "price": 15.99, "quantity": 100}})
        self.assertEqual(self.catalog.queries, 1)
        self.frontend.cache.invalidate("Tux")
        self.assertEqual(json.loads(self.raw("/products/Tux"))["data"]["price"], 1.0)

    def test_peer_bytes_passed_through(self) -> None:
        """
        A product query the catalog answers, and an order query the leader
        answers, are written as the bytes of the peer's reply: nothing is
        decoded and encoded again on the way.
        """
        self.assertEqual(self.request("POST", "/orders", {"name": "Tux", "quantity": 2})[0], 200)
        self.assertEqual(self.raw("/orders/0"), b'{"data":{"name":"Tux","number":0,"quantity":2}}')
        self.assertIn(("get", {"number": 0}), self.replicas[self.frontend.tracker.leader].calls)
        sent = Encoded(b'{"data":{"name":"Tux","price":15.990,"quantity":100}}')  # not how dumps writes it
        self.catalog.call = lambda type, fields=None, timeout=None, encoded=False: succeed(sent if encoded else None)
        self.assertEqual(self.raw("/products/Tux"), sent)

    def test_refused_queries_are_not_cached(self) -> None:
        """A 404 from the catalog is not kept: the next query asks again."""
        for _ in range(2):
            self.assertEqual(self.request("GET", "/products/Unicorn")[0], 404)
        self.assertEqual(self.catalog.queries, 2)
        self.assertEqual(self.frontend.cache.keys(), [])

    def test_push_and_order_invalidate(self) -> None:
        """An invalidate push, and a successful order, make the next query go to the catalog."""
        self.request("GET", "/products/Tux")
        self.frontend.push_invalidate({"type": "invalidate", "names": ["Tux"], "reason": "restock"}, None)
        self.request("GET", "/products/Tux")
        self.assertEqual(self.catalog.queries, 2)
        self.request("POST", "/orders", {"name": "Tux", "quantity": 1})
        self.request("GET", "/products/Tux")
        self.assertEqual(self.catalog.queries, 3)

    def test_order_and_query(self) -> None:
        """An order placed is readable in all three forms."""
        code, body, _ = self.request("POST", "/orders", {"name": "Tux", "quantity": 2})
        self.assertEqual((code, body), (200, {"data": {"order_number": 0}}))
        for path in ("/orders/0", "/orders/order_num=0", "/orders?order_number=0"):
            code, body, _ = self.request("GET", path)
            self.assertEqual((code, body), (200, {"data": {"number": 0, "name": "Tux", "quantity": 2}}))

    def test_idempotency_key(self) -> None:
        """The client's key is passed through (a retry places nothing new); without one, the front-end makes one."""
        headers = {"Idempotency-Key": ["abc"]}
        first = self.request("POST", "/orders", {"name": "Tux", "quantity": 1}, headers)[1]
        again = self.request("POST", "/orders", {"name": "Tux", "quantity": 1}, headers)[1]
        self.assertEqual(first, again)
        self.request("POST", "/orders", {"name": "Tux", "quantity": 1})
        keys = [fields["key"] for type, fields in self.replicas[3].calls if type == "order"]
        self.assertEqual(keys[:2], ["abc", "abc"])
        self.assertTrue(keys[2].startswith("fe-"))

    def test_same_key_while_under_way(self) -> None:
        """While a key's first order is under way: 409 for the same body, 422 for another; then the same reply."""
        self.successResultOf(self.frontend.tracker.elect())
        self.replicas[3].clock = self.clock
        self.replicas[3].hung = True
        headers = {"Idempotency-Key": ["k"]}
        first = self.treq.post(
            "http://store/orders", json.dumps({"name": "Tux", "quantity": 1}).encode(), headers=headers
        )
        self.treq.flush()
        code, body, _ = self.request("POST", "/orders", {"name": "Tux", "quantity": 1}, headers)
        self.assertEqual(code, 409)
        self.assertIn("still being placed", body["error"]["message"])
        self.assertEqual(self.request("POST", "/orders", {"name": "Fox", "quantity": 1}, headers)[0], 422)
        self.replicas[3].hung = False
        self.clock.advance(2.5)  # the hung try times out; the retry goes through
        self.treq.flush()
        response = self.successResultOf(first)
        placed = json.loads(self.successResultOf(response.content()))
        self.assertEqual((response.code, placed), (200, {"data": {"order_number": 0}}))
        self.assertEqual(self.request("POST", "/orders", {"name": "Tux", "quantity": 1}, headers)[1], placed)
        self.assertEqual(len(self.replicas[3].orders), 1)

    def test_failover_keeps_the_key(self) -> None:
        """The leader dies: the order is retried on the new leader with the same key, and the client sees success."""
        self.request("POST", "/orders", {"name": "Tux", "quantity": 1})
        self.replicas[3].down = True
        code, body, _ = self.request("POST", "/orders", {"name": "Tux", "quantity": 1}, {"Idempotency-Key": ["k"]})
        self.assertEqual((code, body), (200, {"data": {"order_number": 1}}))
        self.assertEqual(self.frontend.tracker.leader, 2)
        self.assertEqual([f["key"] for t, f in self.replicas[2].calls if t == "order"], ["k"])
        self.assertEqual(self.request("GET", "/leader")[1], {"data": {"leader": 2, "epoch": 2}})

    def test_busy_leader_is_asked_again(self) -> None:
        """A leader that answers 503 keeps leading and is asked again after RETRY_PAUSE, twice if need be."""
        from toystore.frontend.service import RETRY_PAUSE

        self.request("POST", "/orders", {"name": "Tux", "quantity": 1})
        self.replicas[3].busy = 2
        d = self.treq.get("http://store/orders/0")
        self.treq.flush()
        gets = lambda: [t for t, _ in self.replicas[3].calls if t == "get"]  # noqa: E731
        self.assertEqual(len(gets()), 1)
        self.clock.advance(RETRY_PAUSE * 0.9)
        self.assertEqual(len(gets()), 1)  # not before the pause
        for _ in range(2):
            self.clock.advance(RETRY_PAUSE)
            self.treq.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(len(gets()), 3)
        self.assertEqual(self.frontend.tracker.leader, 3)
        self.assertEqual([t for t, _ in self.replicas[2].calls if t == "get"], [])

    def test_hung_leader(self) -> None:
        """A leader that stops answering (paused) is given half the deadline, then the order fails over."""
        self.successResultOf(self.frontend.tracker.elect())
        for replica in self.replicas.values():
            replica.clock = self.clock
        self.replicas[3].hung = True
        d = self.treq.post("http://store/orders", json.dumps({"name": "Tux", "quantity": 1}).encode())
        self.treq.flush()
        self.clock.advance(2.4)
        self.treq.flush()
        self.assertNoResult(d)
        for _ in range(10):
            self.clock.advance(0.1)
            self.treq.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.frontend.tracker.leader, 2)

    def test_no_replica_in_time(self) -> None:
        """No replica can serve within the deadline: 503 with Retry-After."""
        self.successResultOf(self.frontend.tracker.elect())
        for replica in self.replicas.values():
            replica.down = True
        d = self.treq.post("http://store/orders", json.dumps({"name": "Tux", "quantity": 1}).encode())
        for _ in range(60):
            self.clock.advance(0.1)
            self.treq.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"1"])
        self.assertIn(
            "no order replica could serve", json.loads(self.successResultOf(response.content()))["error"]["message"]
        )

    def test_errors_pass_through(self) -> None:
        """Business errors from the replicas and the catalog reach the client as they are."""
        self.assertEqual(self.request("POST", "/orders", {"name": "Unicorn", "quantity": 1})[0], 404)
        self.assertEqual(self.request("GET", "/products/Unicorn")[0], 404)
        self.assertEqual(self.request("GET", "/orders/7")[0], 404)

    def test_bad_requests(self) -> None:
        """Every malformed request is a 4xx JSON error and reaches no replica."""
        cases = [
            ("POST", "/orders", b"{", 400),
            ("POST", "/orders", b"[1]", 400),
            ("POST", "/orders", b'{"name": "Tux", "quantity": NaN}', 400),
            ("POST", "/orders", b'{"name": "Tux", "quantity": 1, "quantity": 2}', 400),
            ("POST", "/orders", {"name": "Tux", "quantity": True}, 400),
            ("POST", "/orders", {"name": "Tux", "quantity": 1.0}, 400),
            ("POST", "/orders", {"name": "Tux", "quantity": "1"}, 400),
            ("POST", "/orders", {"name": "Tux", "quantity": 0}, 400),
            ("POST", "/orders", {"name": "Tux", "quantity": 101}, 400),
            ("POST", "/orders", {"name": "Tux", "quantity": 1, "extra": 1}, 400),
            ("POST", "/orders", {"name": "", "quantity": 1}, 400),
            ("POST", "/orders", b'{"name": "\xff", "quantity": 1}', 400),
            ("DELETE", "/orders", None, 405),
            ("PUT", "/products/Tux", None, 405),
            ("GET", "/orders/-1", None, 400),
            ("GET", "/orders/1.5", None, 400),
            ("GET", "/orders", None, 400),
            ("GET", "/products/", None, 400),
            ("GET", "/products/%00", None, 400),
            ("GET", "/products/%ff", None, 400),
            ("GET", "/nowhere", None, 404),
            ("GET", "/products/Tux/more", None, 404),
        ]
        for method, path, body, code in cases:
            with self.subTest(method=method, path=path, body=body):
                got, envelope, _ = self.request(method, path, body)
                self.assertEqual((got, envelope["error"]["code"]), (code, code))
        self.assertEqual([t for t, _ in self.replicas[3].calls if t in ("order", "get")], [])

    def test_orders_methods_and_kinds(self) -> None:
        """/orders allows GET, HEAD and POST; /orders/<n> GET and HEAD; each request counts under its kind."""
        self.assertEqual(self.request("POST", "/orders", {"name": "Tux", "quantity": 1})[0], 200)
        code, _, headers = self.request("POST", "/orders/0", {"name": "Tux", "quantity": 1})
        self.assertEqual((code, headers.getRawHeaders("allow")), (405, ["GET, HEAD"]))
        code, _, headers = self.request("PUT", "/orders")
        self.assertEqual((code, headers.getRawHeaders("allow")), (405, ["GET, HEAD, POST"]))
        self.assertEqual(self.request("POST", "/orders/%FF")[0], 400)
        for path in ("/orders/0", "/orders/order_num=0", "/orders?order_number=0"):
            self.assertEqual(self.request("GET", path)[1]["data"]["number"], 0)
        self.assertEqual(self.request("GET", "/orders/0/more")[0], 404)
        requests = self.frontend.metrics.requests
        self.assertEqual(
            [requests.count(*key) for key in [("order", "200"), ("order", "405"), ("order", "400")]], [1, 1, 1]
        )
        self.assertEqual([requests.count("order_query", code) for code in ("200", "404")], [3, 1])
        self.assertEqual(requests.count("other", "405"), 1)

    def test_operator_endpoints(self) -> None:
        """/health, /cache and /metrics report the front-end's state."""
        self.request("GET", "/products/Tux")
        self.request("GET", "/products/Tux")
        self.assertEqual(self.request("GET", "/health")[1]["data"]["leader"], 3)
        self.assertEqual(self.request("GET", "/cache")[1]["data"]["keys"], ["Tux"])
        response = self.successResultOf(self.treq.get("http://store/metrics"))
        text = self.successResultOf(response.text())
        self.assertIn("toystore_frontend_cache_hits 1.0", text)
        self.assertIn('toystore_frontend_requests_total{code="200",kind="product"} 2.0', text)
        self.assertIn('toystore_frontend_request_seconds_count{kind="product"} 2.0', text)
        self.request("GET", "/products/x/y")
        self.request("PUT", "/orders")
        text = self.successResultOf(self.successResultOf(self.treq.get("http://store/metrics")).text())
        self.assertIn('toystore_frontend_requests_total{code="404",kind="product"} 1.0', text)
        self.assertIn('toystore_frontend_requests_total{code="405",kind="other"} 1.0', text)

    def test_subscribe_clears(self) -> None:
        """Every (re)subscription to the feed clears the cache."""

        class Connection:
            def call(self, type: str, fields: Any = None, timeout: Any = None) -> Deferred[Any]:
                return succeed({"subscribed": True})

        self.request("GET", "/products/Tux")
        self.successResultOf(Deferred.fromCoroutine(self.frontend.subscribe(Connection())))
        self.assertEqual(self.frontend.cache.keys(), [])
