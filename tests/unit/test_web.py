"""
Tests for the JSON HTTP layer (:mod:`toystore.web`) and the catalog's operator
endpoints, through treq's StubTreq: no sockets.
"""

from __future__ import annotations

import json
import re
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from toystore.catalog.service import CatalogService
from toystore.config import load
from toystore.envelope import Conflict
from toystore.web import JSONResource, JSONTree, operator_root

from .test_catalog_service import inline


class Slow(JSONResource):
    """A resource whose answers wait on Deferreds the test controls."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Deferred[Any]] = []
        self.cancelled = 0

    def json_GET(self, request: object) -> Deferred[Any]:
        def cancel(d: Deferred[Any]) -> None:
            self.cancelled += 1

        self.waiting.append(Deferred(cancel))
        return self.waiting[-1]

    def json_POST(self, request: object) -> Any:
        raise Conflict("sold out")

    async def json_PUT(self, request: object) -> Any:
        raise KeyError("a bug")


class JSONResourceTests(SynchronousTestCase):
    """Handlers return data; the adapter writes envelopes and statuses."""

    def setUp(self) -> None:
        self.slow = Slow()
        root = JSONTree()
        root.putChild(b"slow", self.slow)
        self.treq = StubTreq(root)

    def get(self, method: str, path: str) -> tuple[int, dict[str, Any], Any]:
        d = self.treq.request(method, "http://operator" + path)
        self.treq.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        return response.code, dict(response.headers.getAllRawHeaders()), json.loads(body)

    def test_deferred_answer(self) -> None:
        """A handler's Deferred result is written when it fires."""
        d = self.treq.get("http://operator/slow")
        self.treq.flush()
        self.assertNoResult(d)
        self.slow.waiting[0].callback({"ok": 1})
        self.treq.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        body = self.successResultOf(response.content())
        self.assertEqual(json.loads(body), {"data": {"ok": 1}})
        # Sent whole with its length (response.length is UNKNOWN_LENGTH for chunked encoding).
        self.assertEqual(response.length, len(body))

    def test_fired_deferred_that_waits(self) -> None:
        """A handler's Deferred that has fired but waits on another it chained is answered once that one fires."""
        inner: Deferred[Any] = Deferred()

        class Chained(JSONResource):
            def json_GET(self, request: object) -> Deferred[Any]:
                return succeed(None).addCallback(lambda _: inner)

        self.treq = StubTreq(Chained())
        d = self.treq.get("http://operator/")
        self.treq.flush()
        self.assertNoResult(d)
        inner.callback({"late": 1})
        self.treq.flush()
        response = self.successResultOf(d)
        self.assertEqual(json.loads(self.successResultOf(response.content())), {"data": {"late": 1}})

    def test_api_error(self) -> None:
        """An ApiError becomes its status and error envelope."""
        code, headers, body = self.get("POST", "/slow")
        self.assertEqual((code, body), (409, {"error": {"code": 409, "message": "sold out"}}))
        self.assertEqual(headers[b"Content-Type"], [b"application/json"])

    def test_bug_is_a_json_500(self) -> None:
        """An unexpected exception is logged and answered with a JSON 500, no traceback."""
        code, _, body = self.get("PUT", "/slow")
        self.assertEqual((code, body), (500, {"error": {"code": 500, "message": "internal error"}}))
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_method_not_allowed(self) -> None:
        """An unsupported method is a JSON 405 with an Allow header."""
        code, headers, body = self.get("DELETE", "/slow")
        self.assertEqual(code, 405)
        self.assertEqual(body["error"]["code"], 405)
        self.assertEqual(headers[b"Allow"], [b"GET, POST, PUT, HEAD"])

    def test_unknown_path(self) -> None:
        """Unknown paths, nested or not, are JSON 404s."""
        for path in ("/nope", "/", "/slow2/x"):
            with self.subTest(path=path):
                code, _, body = self.get("GET", path)
                self.assertEqual((code, body["error"]["code"]), (404, 404))

    def test_client_gone_cancels(self) -> None:
        """When the client disconnects, the handler's Deferred is cancelled."""
        # StubTreq cannot drop a connection, so drive the resource with a DummyRequest.
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest([b""])
        from twisted.web.server import NOT_DONE_YET

        self.assertEqual(self.slow.render(request), NOT_DONE_YET)
        request.processingFailed(Failure(ConnectionLost("gone")))
        self.assertEqual(self.slow.cancelled, 1)
        self.assertEqual(request.written, [])

    def test_replied_is_told_each_status(self) -> None:
        """respond() tells its callback the status written, at once or later, and 499 when the client left."""
        from twisted.web.test.requesthelper import DummyRequest as Dummy

        class DummyRequest(Dummy):
            @property
            def code(self) -> int:  # as twisted.web's Request calls it
                return self.responseCode or 200

        codes: list[int] = []
        now = DummyRequest([b""])
        now.method = b"POST"
        self.assertIn(b'"code":409', self.slow.respond(now, codes.append))
        later = DummyRequest([b""])
        self.slow.respond(later, codes.append)
        self.assertEqual(codes, [409])
        self.slow.waiting[0].callback({"ok": 1})
        gone = DummyRequest([b""])
        self.slow.respond(gone, codes.append)
        gone.processingFailed(Failure(ConnectionLost("gone")))
        self.assertEqual(codes, [409, 200, 499])


class OperatorEndpointTests(SynchronousTestCase):
    """The catalog's /health and /metrics."""

    def setUp(self) -> None:
        base = load().catalog
        config = base.__class__(**{**base.__dict__, "data_dir": self.mktemp()})
        self.catalog = CatalogService(config, Clock(), inline)
        self.catalog.startService()
        self.addCleanup(self.catalog.stopService)
        self.treq = StubTreq(operator_root(self.catalog.status, self.catalog.metrics.registry))

    def test_health(self) -> None:
        """GET /health is the catalog's status in a data envelope."""
        response = self.successResultOf(self.treq.get("http://catalog/health"))
        self.assertEqual(response.code, 200)
        body = json.loads(self.successResultOf(response.content()))
        self.assertEqual(body["data"]["service"], "catalog")
        self.assertEqual(body["data"]["toys"], 15)

    def test_metrics(self) -> None:
        """GET /metrics is Prometheus text with the stock of every toy."""
        response = self.successResultOf(self.treq.get("http://catalog/metrics"))
        self.assertEqual(response.code, 200)
        self.assertIn(b"text/plain", response.headers.getRawHeaders(b"content-type")[0])
        text = self.successResultOf(response.text())
        self.assertIn('toystore_catalog_stock{toy="Tux"} 100.0', text)
        self.assertIn("toystore_catalog_buys_total 0.0", text)

    def test_metrics_wrong_method(self) -> None:
        """POST /metrics is a JSON 405."""
        response = self.successResultOf(self.treq.post("http://catalog/metrics"))
        self.assertEqual(response.code, 405)
        self.assertEqual(json.loads(self.successResultOf(response.content()))["error"]["code"], 405)

    def test_registry_is_private(self) -> None:
        """Each service has its own registry: a second catalog in one process does not clash."""
        other = CatalogService(self.catalog.config, Clock(), inline)
        self.assertIsNot(other.metrics.registry, self.catalog.metrics.registry)


class BodyLimitTests(SynchronousTestCase):
    """JSONSite refuses bodies over max_body with a JSON 413 before any resource sees them."""

    def post(self, body: bytes, chunked: bool = False) -> bytes:
        from twisted.internet.testing import StringTransport

        from toystore.web import make_site

        seen: list[bytes] = []

        class Echo(JSONResource):
            def json_POST(self, request: Any) -> Any:
                seen.append(request.content.read())
                return {"length": len(seen[-1])}

        root = JSONTree()
        root.putChild(b"orders", Echo())
        channel = make_site(root, max_body=1024).buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        if chunked:
            head = b"POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            payload = b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + 500]), body[i : i + 500]) for i in range(0, len(body), 500)
            )
            channel.dataReceived(head + payload + b"0\r\n\r\n")
        else:
            channel.dataReceived(b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        self.seen = seen
        return transport.value()

    def test_small_body(self) -> None:
        """A body within the limit reaches the resource."""
        self.assertIn(b'{"data":{"length":10}}', self.post(b"x" * 10))

    def test_declared_too_long(self) -> None:
        """A Content-Length over the limit is a 413, and the resource never runs."""
        reply = self.post(b"x" * 5000)
        self.assertIn(b"HTTP/1.1 413", reply)
        self.assertIn(b"request body larger than 1024 bytes", reply)
        self.assertEqual(self.seen, [])

    def test_chunked_too_long(self) -> None:
        """A chunked body that grows over the limit is a 413 too."""
        reply = self.post(b"x" * 5000, chunked=True)
        self.assertIn(b"HTTP/1.1 413", reply)
        self.assertEqual(self.seen, [])


class ChannelTests(SynchronousTestCase):
    """What the channel and request of a JSONSite do per connection rather than per request."""

    def setUp(self) -> None:
        from twisted.internet.testing import StringTransport

        from toystore.web import JSONSite

        class Echo(JSONResource):
            def json_POST(self, request: Any) -> Any:
                return {
                    "args": sorted(k.decode() for k in request.args),
                    "body": request.content.read().decode(),
                    "peer": request.getClientAddress().host,
                }

        root = JSONTree()
        root.putChild(b"echo", Echo())
        self.channel = JSONSite(root, reactor=Clock()).buildProtocol(None)
        self.transport = StringTransport()
        self.host_asked = 0
        host = self.transport.getHost

        def counted() -> Any:
            self.host_asked += 1
            return host()

        self.transport.getHost = counted  # type: ignore[method-assign]
        self.channel.makeConnection(self.transport)

    def post(self, body: bytes, content_type: bytes) -> dict[str, Any]:
        self.transport.clear()
        self.channel.dataReceived(
            b"POST /echo?q=1 HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (content_type, len(body), body)
        )
        return json.loads(self.transport.value().split(b"\r\n\r\n", 1)[1])["data"]

    def test_form_bodies_are_not_parsed(self) -> None:
        """A form-encoded body stays the resource's to read: only the query string fills args."""
        echoed = self.post(b"name=Tux&quantity=1", b"application/x-www-form-urlencoded")
        self.assertEqual(echoed, {"args": ["q"], "body": "name=Tux&quantity=1", "peer": "192.168.1.1"})

    def test_addresses_asked_once_per_connection(self) -> None:
        """Three requests on one connection ask the socket for its address once."""
        for _ in range(3):
            self.assertEqual(self.post(b"{}", b"application/json")["args"], ["q"])
        self.assertEqual(self.host_asked, 1)


class RequestDeadlineTests(SynchronousTestCase):
    """
    A request must arrive whole within request_timeout seconds of its first
    byte, however it trickles in; idle keep-alive connections close after
    idle_timeout.  The site's timers run on a Clock.
    """

    GET = b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"

    def setUp(self) -> None:
        from twisted.internet.testing import StringTransport

        from toystore.web import JSONSite

        class Fast(JSONResource):
            def json_GET(self, request: Any) -> Any:
                return {"fast": True}

        self.slow = Slow()
        root = JSONTree()
        root.putChild(b"fast", Fast())
        root.putChild(b"slow", self.slow)
        self.clock = Clock()
        site = JSONSite(root, request_timeout=10.0, idle_timeout=60.0, reactor=self.clock)
        self.channel = site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def trickle(self, data: bytes, every: float) -> None:
        """Send ``data`` one byte at a time, ``every`` seconds apart."""
        for i in range(len(data)):
            if i:
                self.clock.advance(every)
            self.channel.dataReceived(data[i : i + 1])

    def replies(self) -> list[bytes]:
        """The status lines written so far."""
        return re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", self.transport.value())

    def assertOpen(self) -> None:
        self.assertFalse(self.transport.disconnecting)

    def assertCut(self) -> None:
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.replies()[-1], b"HTTP/1.1 408 Request Timeout")
        self.assertIn(b'{"error":{"code":408,"message":"request not received within 10.0 s"}}', self.transport.value())

    def test_slow_request_is_cut_at_the_deadline(self) -> None:
        """One byte every 2 s keeps the idle timer happy, but the deadline counts from the first byte."""
        self.trickle(self.GET[:5], every=2.0)  # bytes at 0, 2, 4, 6, 8 s
        self.clock.advance(1.9)
        self.channel.dataReceived(self.GET[5:6])  # 9.9 s
        self.assertOpen()
        self.clock.advance(0.1)  # 10 s after the first byte
        self.assertCut()
        self.assertEqual(self.replies(), [b"HTTP/1.1 408 Request Timeout"])

    def test_unread_408_is_cut_after_a_grace(self) -> None:
        """A client that does not read its 408 loses the connection CLOSE_GRACE seconds later."""
        from toystore.web import CLOSE_GRACE

        self.channel.dataReceived(b"GET /fa")
        self.clock.advance(10.0)
        self.assertCut()
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(CLOSE_GRACE)
        self.assertTrue(self.transport.disconnected)

    def test_slow_body_is_cut(self) -> None:
        """The body counts too: headers in time, body trickling past the deadline."""
        head = b"POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        self.channel.dataReceived(head)
        self.trickle(b"x" * 20, every=0.5)
        self.assertOpen()
        self.clock.advance(0.5)
        self.assertCut()

    def test_complete_request_in_time_is_served(self) -> None:
        """A request that trickles in but ends before the deadline is answered, and nothing fires later."""
        self.trickle(self.GET, every=9.0 / (len(self.GET) - 1))
        self.assertEqual(self.replies(), [b"HTTP/1.1 200 OK"])
        self.clock.advance(30.0)
        self.assertOpen()

    def test_deadline_restarts_per_request(self) -> None:
        """On a keep-alive connection each request gets its own deadline, counted from its own first byte."""
        step = 8.0 / (len(self.GET) - 1)
        self.trickle(self.GET, every=step)  # 8 s
        self.clock.advance(20.0)  # idle between requests: no deadline runs
        self.trickle(self.GET, every=step)  # 8 s more: 36 s after the first byte of all
        self.assertEqual(self.replies(), [b"HTTP/1.1 200 OK"] * 2)
        self.assertOpen()
        self.trickle(b"GET /", every=2.0)
        self.clock.advance(2.0)
        self.assertCut()

    def test_pipelined_partial_request_has_a_deadline(self) -> None:
        """A request whose first bytes came with the previous one's last is timed from then."""
        self.channel.dataReceived(self.GET + b"GET /fast HT")
        self.assertEqual(self.replies(), [b"HTTP/1.1 200 OK"])
        self.clock.advance(10.0)
        self.assertCut()

    def test_grace_timer_goes_with_the_connection(self) -> None:
        """A 408's grace timer is cancelled when the client reads it and the connection closes in time."""
        self.channel.dataReceived(b"GET /fa")
        self.clock.advance(10.0)
        self.assertCut()
        self.channel.connectionLost(Failure(ConnectionLost("gone")))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pipelined_request_timed_once_its_turn_comes(self) -> None:
        """
        Bytes of a next request that arrive while one is answered start no
        deadline; once the answer is written they are read, and the deadline
        counts from then.
        """
        self.channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fa")
        self.clock.advance(30.0)
        self.assertOpen()
        self.slow.waiting[0].callback({"late": True})
        self.assertEqual(self.replies(), [b"HTTP/1.1 200 OK"])
        self.clock.advance(9.9)
        self.assertOpen()
        self.clock.advance(0.1)
        self.assertCut()

    def test_one_timer_for_back_to_back_requests(self) -> None:
        """Keep-alive requests one after another share the connection's one deadline timer."""

        def deadlines() -> list[Any]:
            return [c for c in self.clock.getDelayedCalls() if c.func == self.channel._check_deadline]

        self.channel.dataReceived(self.GET)
        [timer] = deadlines()
        for _ in range(5):
            self.clock.advance(1.0)
            self.channel.dataReceived(self.GET)
        self.assertEqual(deadlines(), [timer])
        self.assertEqual(self.replies(), [b"HTTP/1.1 200 OK"] * 6)
        self.clock.advance(10.0)  # it runs between requests and is not set again
        self.assertEqual(deadlines(), [])
        self.assertOpen()

    def test_slow_answer_is_not_cut(self) -> None:
        """The deadline covers the request's arrival, not the time its answer takes."""
        self.channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(30.0)
        self.assertOpen()
        self.slow.waiting[0].callback({"late": True})
        self.assertEqual(self.replies(), [b"HTTP/1.1 200 OK"])
        self.assertOpen()

    def test_idle_connection_closes(self) -> None:
        """A keep-alive connection with no request for idle_timeout seconds is closed; before that it stays."""
        self.channel.dataReceived(self.GET)
        self.clock.advance(59.0)
        self.assertOpen()
        self.clock.advance(1.0)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.replies(), [b"HTTP/1.1 200 OK"])

    def test_make_site_takes_the_frontend_knobs(self) -> None:
        """make_site reads request_timeout and idle_timeout from the cluster file's [frontend]."""
        from dataclasses import replace

        from toystore.web import make_site

        frontend = replace(load().frontend, request_timeout=3.0, idle_timeout=7.0)
        site = make_site(JSONTree(), timeouts=frontend, reactor=self.clock)
        self.assertEqual((site.request_timeout, site.timeOut), (3.0, 7.0))
        self.assertEqual(site.buildProtocol(None).request_timeout, 3.0)


class MalformedRequestTests(SynchronousTestCase):
    """A request twisted.web cannot parse gets a JSON 400 and the connection closes, not Twisted's bare 400."""

    def send(self, data: bytes) -> bytes:
        from twisted.internet.testing import StringTransport

        from toystore.web import make_site

        channel = make_site(JSONTree()).buildProtocol(None)
        self.transport = StringTransport()
        channel.makeConnection(self.transport)
        channel.dataReceived(data)
        return self.transport.value()

    def assertJSON400(self, reply: bytes) -> None:
        head, body = reply.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), head)
        self.assertIn(b"content-type: application/json", head)
        self.assertEqual(json.loads(body), {"error": {"code": 400, "message": "malformed HTTP request"}})
        self.assertTrue(self.transport.disconnecting)

    def test_malformed(self) -> None:
        """A bad request line, header or chunk each get the JSON 400."""
        for data in (
            b"NONSENSE\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ):
            with self.subTest(data=data):
                self.assertJSON400(self.send(data))

    def test_line_too_long(self) -> None:
        """A header line longer than the channel's limit gets the JSON 400 too, not a silent close."""
        self.assertJSON400(self.send(b"GET / HTTP/1.1\r\nX-Long: " + b"x" * 20000 + b"\r\n\r\n"))
