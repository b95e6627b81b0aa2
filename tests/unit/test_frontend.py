"""
Tests for the front-end: elections, and the public API through StubTreq,
against a real catalog service and three real order replicas on an in-memory
network (:mod:`toystore.wire.testing`).  No sockets.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from toystore.envelope import BadRequest
from toystore.frontend.election import LeaderTracker
from toystore.frontend.resources import frontend_root
from toystore.frontend.service import RETRY_PAUSE, FrontendService
from toystore.wire.testing import LoopbackClient

from .replicas import CATALOG, STOCK, ReplicaCase


class ElectionTests(ReplicaCase):
    """The highest answering replica leads, in an epoch above every one reported."""

    def tracker(self, epochs: dict[int, int] | None = None) -> LeaderTracker:
        """Start the replicas (at ``epochs``, if given) and a tracker with links to them, as the front-end's."""
        self.make({i: ([], epoch) for i, epoch in (epochs or {}).items()})
        self.links = {i: self.network.client(i, label=f"replica {i}") for i in self.replicas}
        return LeaderTracker(self.links, self.clock, status_timeout=0.5, retry=lambda attempt: 1.0)

    def election(self, tracker: LeaderTracker) -> Deferred[int]:
        d = tracker.elect()
        self.network.flush()
        return d

    def test_highest_id_new_epoch(self) -> None:
        """Replica 3 leads in epoch max(reported)+1, and the others are told."""
        tracker = self.tracker({1: 4, 2: 7, 3: 2})
        self.assertEqual(self.successResultOf(self.election(tracker)), 3)
        self.assertEqual((tracker.leader, tracker.epoch), (3, 8))
        for i in (1, 2):
            self.assertIn(("lead", {"epoch": 8, "leader": 3}), self.links[i].calls)
            self.assertEqual((self.replicas[i].epoch, self.replicas[i].leader), (8, 3))

    def test_dead_highest(self) -> None:
        """With replica 3 down, replica 2 leads."""
        tracker = self.tracker()
        self.network.cut(3)
        self.assertEqual(self.successResultOf(self.election(tracker)), 2)

    def test_candidate_that_cannot_lead(self) -> None:
        """A candidate that refuses (no majority reachable) is passed over, with a fresh epoch for the next."""
        tracker = self.tracker()
        for link in self.replicas[3].peers.values():
            link.cut()
        self.assertEqual(self.successResultOf(self.election(tracker)), 2)
        self.assertEqual(tracker.epoch, 2)
        self.assertEqual(self.replicas[3].status()["role"], "follower")

    def test_single_flight(self) -> None:
        """Callers that need a leader during an election share it: one round of status calls."""
        tracker = self.tracker()
        for link in self.links.values():
            link.cut()
        waiting = [tracker.elect() for _ in range(5)]
        self.network.flush()
        for link in self.links.values():
            link.restore()
        self.clock.advance(1.0)
        self.network.flush()
        self.assertEqual([self.successResultOf(d) for d in waiting], [3] * 5)
        self.assertEqual(tracker.elections, 1)
        self.assertEqual(sum(1 for c in self.links[3].calls if c[0] == "status"), 2, "two rounds, not ten")

    def test_retries_until_a_replica_answers(self) -> None:
        """No replica answering: the election tries again after the backoff delay."""
        tracker = self.tracker()
        for link in self.links.values():
            link.cut()
        d = tracker.elect()
        self.clock.advance(1.0)
        self.network.flush()
        self.assertNoResult(d)
        self.links[1].restore()
        self.clock.advance(1.0)
        self.network.flush()
        self.assertEqual(self.successResultOf(d), 1)

    def test_failed(self) -> None:
        """failed() forgets the leader only if it is the one that failed."""
        tracker = self.tracker()
        self.successResultOf(self.election(tracker))
        tracker.failed(2, "not ours")
        self.assertEqual(tracker.leader, 3)
        tracker.failed(3, "timed out")
        self.assertIsNone(tracker.leader)


#: The reply of :class:`OddlyEncodingCatalog` to every query.
ODD_REPLY = b'{"data":{"name":"Tux","price":15.990,"quantity":100}}'


class OddlyEncodingCatalog(LineOnlyReceiver):
    """
    A catalog that writes its query reply as toystore's encoder never would
    (``15.990``).  No real service can be made to; only bytes that differ
    from a re-encoding show that the front-end passes a reply on as it came.
    """

    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(ODD_REPLY[:-1] + b',"id":%d}' % json.loads(line)["id"])


class APITests(ReplicaCase):
    """
    The public API through StubTreq, with the catalog and three replicas
    behind it; replica 3 leads epoch 1 from the start.  The front-end holds
    a link per replica (``self.links``) and the catalog's feed
    (``self.feed``), as its tap wires them.
    """

    def setUp(self) -> None:
        super().setUp()
        config = dataclasses.replace(self.cluster, frontend=dataclasses.replace(self.cluster.frontend, max_body=1024))
        self.links = {i: LoopbackClient(self.network, i, label=f"replica {i}") for i in (1, 2, 3)}
        self.frontend = FrontendService(config, self.clock, None, self.links)
        self.feed = LoopbackClient(self.network, CATALOG, handler=self.frontend, prepare=self.frontend.subscribe)
        self.frontend.catalog = self.feed
        self.make()
        for client in (self.feed, *self.links.values()):
            client.startService()
        self.frontend.startService()
        self.addCleanup(self.frontend.stopService)
        self.treq = StubTreq(frontend_root(self.frontend))
        self.network.flush()
        self.assertEqual((self.frontend.tracker.leader, self.frontend.tracker.epoch), (3, 1))

    def find_leader(self) -> Deferred[dict[str, int]]:
        """What the replicas ask: the front-end's ``GET /leader``."""
        return maybeDeferred(self.frontend.leader)

    def settle(self) -> None:
        """Deliver every HTTP request and response, and every wire message, under way."""
        while True:
            self.treq.flush()
            if not self.network.flush():
                return

    def request(self, method: str, path: str, body: Any = None, headers: dict | None = None) -> tuple[int, Any, Any]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        d = self.treq.request(method, "http://store" + path, data=data, headers=headers)
        self.settle()
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        return response.code, json.loads(content), response.headers

    def raw(self, path: str) -> bytes:
        d = self.treq.get("http://store" + path)
        self.settle()
        return self.successResultOf(self.successResultOf(d).content())

    def post_order(self, headers: dict | None = None) -> Deferred[Any]:
        """POST an order for one Tux, left under way."""
        d = self.treq.post("http://store/orders", json.dumps({"name": "Tux", "quantity": 1}).encode(), headers=headers)
        self.settle()
        return d

    def queries(self) -> int:
        """Product queries the front-end sent the catalog."""
        return sum(1 for type, _ in self.feed.calls if type == "query")

    def sent(self, replica: int, *types: str) -> list[dict[str, Any]]:
        """The fields of the front-end's calls of ``types`` to ``replica``."""
        return [fields for type, fields in self.links[replica].calls if type in types]

    def test_product_forms_and_cache(self) -> None:
        """The three URL forms answer alike; the second query is served from the cache."""
        for path in ("/products/Tux", "/products/product_name=Tux", "/products?product_name=Tux"):
            code, body, _ = self.request("GET", path)
            self.assertEqual((code, body["data"]["name"]), (200, "Tux"))
        self.assertEqual(self.queries(), 1)
        self.assertEqual(self.frontend.cache.stats.hits, 2)

    def test_cache_keeps_the_encoded_reply(self) -> None:
        """A hit writes the very bytes the miss wrote, without asking the catalog, until the feed says it changed."""
        first = self.raw("/products/Tux")
        self.assertEqual(json.loads(first), {"data": {"name": "Tux", "price": 15.99, "quantity": STOCK}})
        self.feed.hold()  # the catalog's push of the next change waits
        self.successResultOf(self.to_catalog("buy", name="Tux", quantity=1, key="elsewhere", epoch=1))
        self.assertEqual(self.raw("/products/Tux"), first)
        self.assertEqual(self.queries(), 1)
        self.feed.release()
        self.network.flush()
        self.assertEqual(json.loads(self.raw("/products/Tux"))["data"]["quantity"], STOCK - 1)
        self.assertEqual(self.queries(), 2)

    def test_peer_bytes_passed_through(self) -> None:
        """
        A product query the catalog answers, and an order query the leader
        answers, are written as the bytes of the peer's reply: nothing is
        decoded and encoded again on the way.
        """
        self.assertEqual(self.request("POST", "/orders", {"name": "Tux", "quantity": 2})[0], 200)
        self.assertEqual(self.raw("/orders/0"), b'{"data":{"name":"Tux","number":0,"quantity":2}}')
        self.assertIn({"number": 0}, self.sent(3, "get"))
        self.network.listen("odd catalog", Factory.forProtocol(OddlyEncodingCatalog))
        self.frontend.catalog = self.network.client("odd catalog")
        self.assertEqual(self.raw("/products/Tux"), ODD_REPLY)

    def test_refused_queries_are_not_cached(self) -> None:
        """A 404 from the catalog is not kept: the next query asks again."""
        for _ in range(2):
            self.assertEqual(self.request("GET", "/products/Unicorn")[0], 404)
        self.assertEqual(self.queries(), 2)
        self.assertEqual(self.frontend.cache.keys(), [])

    def test_push_and_order_invalidate(self) -> None:
        """The catalog's push of a change, and a successful order, each make the next query go to the catalog."""
        self.request("GET", "/products/Tux")
        self.successResultOf(self.to_catalog("buy", name="Tux", quantity=1, key="elsewhere", epoch=1))
        self.assertEqual(self.frontend.cache.keys(), [])
        self.request("GET", "/products/Tux")
        self.assertEqual(self.queries(), 2)
        self.feed.hold()  # the order's own invalidation, before the catalog's push of its buy
        self.assertEqual(self.request("POST", "/orders", {"name": "Tux", "quantity": 1})[0], 200)
        self.assertEqual(self.frontend.cache.keys(), [])
        self.feed.release()
        self.request("GET", "/products/Tux")
        self.assertEqual(self.queries(), 3)

    def test_malformed_push_changes_nothing(self) -> None:
        """A push whose names are not a list of strings is refused by the contract; the cache keeps its entry."""
        self.request("GET", "/products/Tux")
        for bad in ({"names": "Tux", "reason": "buy"}, {"names": ["Tux", 3], "reason": "buy"}, {"names": ["Tux"]}):
            with self.subTest(push=bad):
                self.assertRaises(BadRequest, self.frontend.push_invalidate, bad, None)
        self.assertEqual(self.frontend.cache.keys(), ["Tux"])

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
        keys = [fields["key"] for fields in self.sent(3, "order")]
        self.assertEqual(keys[:2], ["abc", "abc"])
        self.assertTrue(keys[2].startswith("fe-"))
        self.assertEqual(len(self.buys()), 2)

    def test_same_key_while_under_way(self) -> None:
        """While a key's first order is under way: 409 for the same body, 422 for another; then the same reply."""
        self.links[3].hold()  # the leader stops answering the front-end: the first order is under way until failover
        headers = {"Idempotency-Key": ["k"]}
        first = self.post_order(headers)
        code, body, _ = self.request("POST", "/orders", {"name": "Tux", "quantity": 1}, headers)
        self.assertEqual(code, 409)
        self.assertIn("still being placed", body["error"]["message"])
        self.assertEqual(self.request("POST", "/orders", {"name": "Fox", "quantity": 1}, headers)[0], 422)
        for _ in range(40):  # the held try times out; the order fails over to replica 2
            self.clock.advance(0.1)
            self.settle()
        response = self.successResultOf(first)
        placed = json.loads(self.successResultOf(response.content()))
        self.assertEqual((response.code, placed), (200, {"data": {"order_number": 0}}))
        self.assertEqual(self.request("POST", "/orders", {"name": "Tux", "quantity": 1}, headers)[1], placed)
        self.assertEqual([buy["key"] for buy in self.buys()], ["k"])

    def test_failover_keeps_the_key(self) -> None:
        """The leader dies: the order is retried on the new leader with the same key, and the client sees success."""
        self.request("POST", "/orders", {"name": "Tux", "quantity": 1})
        self.network.cut(3)
        code, body, _ = self.request("POST", "/orders", {"name": "Tux", "quantity": 1}, {"Idempotency-Key": ["k"]})
        self.assertEqual((code, body), (200, {"data": {"order_number": 1}}))
        self.assertEqual(self.frontend.tracker.leader, 2)
        self.assertEqual([fields["key"] for fields in self.sent(2, "order")], ["k"])
        self.assertEqual(self.request("GET", "/leader")[1], {"data": {"leader": 2, "epoch": 2}})

    def test_busy_leader_is_asked_again(self) -> None:
        """A leader that answers 503 (the catalog unreachable) keeps leading and is asked again after RETRY_PAUSE."""
        self.replicas[3].catalog.cut()
        d = self.post_order()
        self.assertEqual(len(self.sent(3, "order")), 1)
        self.clock.advance(RETRY_PAUSE * 0.9)
        self.settle()
        self.assertEqual(len(self.sent(3, "order")), 1)  # not before the pause
        self.clock.advance(RETRY_PAUSE * 0.2)
        self.settle()
        self.assertEqual(len(self.sent(3, "order")), 2)  # 503 again: twice if need be
        self.replicas[3].catalog.restore()
        self.clock.advance(RETRY_PAUSE)
        self.settle()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(len(self.sent(3, "order")), 3)
        self.assertEqual(self.frontend.tracker.leader, 3)
        self.assertEqual(self.sent(2, "order", "get"), [])

    def test_hung_leader(self) -> None:
        """A leader that stops answering (paused) is given half the deadline, then the order fails over."""
        self.links[3].hold()
        d = self.post_order()
        self.clock.advance(2.4)
        self.settle()
        self.assertNoResult(d)
        for _ in range(10):
            self.clock.advance(0.1)
            self.settle()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.frontend.tracker.leader, 2)

    def test_no_replica_in_time(self) -> None:
        """No replica can serve within the deadline: 503 with Retry-After."""
        for link in self.links.values():
            link.cut()
        d = self.post_order()
        for _ in range(60):
            self.clock.advance(0.1)
            self.settle()
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
        self.assertEqual(self.sent(3, "order", "get"), [])

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
        """Every (re)subscription to the feed clears the cache: after the catalog connection drops and comes back."""
        self.request("GET", "/products/Tux")
        self.assertEqual(self.frontend.cache.keys(), ["Tux"])
        self.feed.cut()
        self.feed.restore()
        self.network.flush()
        self.assertEqual(self.frontend.cache.keys(), [])
        self.assertEqual(self.frontend.cache.stats.clears, 2)  # at start, and again
