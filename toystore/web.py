"""
HTTP with JSON envelopes, and the operator endpoints every service serves.

:class:`JSONResource` is the adapter between twisted.web and toystore
handlers: a subclass defines ``json_GET(request)`` (``json_POST``, ...) that
returns the reply's ``data`` (directly, as a Deferred or as a coroutine; or
a whole success envelope already encoded, as
:class:`~toystore.envelope.Encoded` bytes) or raises :class:`ApiError`; the
adapter writes ``{"data": ...}`` or ``{"error": ...}`` with the matching
status.  :meth:`JSONResource.respond` also tells a callback the status of
each reply once it is written, for metrics.  An unsupported method is a JSON 405, an
unknown path a JSON 404, an unexpected exception a logged JSON 500: no
traceback or HTML page ever reaches a client.

:func:`operator_root` builds the tree for ``GET /health`` and ``GET
/metrics`` (Prometheus text format, from the service's own registry).

:func:`make_site` serves a tree on every toystore HTTP port, public and
operator alike, with limits against hostile clients: a body larger than
``max_body`` is refused unread, a request must arrive whole within
``request_timeout`` seconds of its first byte (slow clients cannot hold
connections by trickling bytes), and an idle keep-alive connection closes
after ``idle_timeout`` seconds.
"""

from __future__ import annotations

import io
import time
from typing import Any, Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from .config import FrontendConfig
from .envelope import ApiError, Encoded, NotFound, dumps, error_body, ok
from .wire import no_delay

JSON = b"application/json"
#: The status counted for a request whose client left before its reply was ready (as nginx counts it).
CLIENT_LEFT = 499


def _json_headers(request: Request, code: int) -> None:
    request.setResponseCode(code)
    request.setHeader(b"content-type", JSON)
    request.setHeader(b"cache-control", b"no-store")


def write_json(request: Request, code: int, body: dict[str, Any]) -> bytes:
    """Set the status and headers of a JSON reply and return its bytes."""
    _json_headers(request, code)
    return dumps(body)


def write_encoded(request: Request, body: bytes) -> bytes:
    """Set the status and headers of a 200 JSON reply whose body is ``body``, encoded already."""
    _json_headers(request, 200)
    return body


def write_error(request: Request, error: ApiError) -> bytes:
    """The JSON reply for ``error`` (a 503 says when to try again)."""
    if error.code == 503:
        request.setHeader(b"retry-after", b"1")
    return write_json(request, error.code, error.to_json())


class JSONResource(Resource):
    """
    A leaf resource whose ``json_<METHOD>(request)`` methods return data.

    ``HEAD`` is served by ``json_GET`` when there is no ``json_HEAD``.
    """

    isLeaf = True
    log = Logger()

    def render(self, request: Request) -> bytes | int:
        return self.respond(request)

    def respond(self, request: Request, replied: Callable[[int], None] | None = None) -> bytes | int:
        """
        Render ``request``, and tell ``replied`` the status of the reply once
        it is written (499 if the client left before its reply was ready).
        """
        method = request.method.decode("ascii", "replace")
        handler = getattr(self, f"json_{method}", None)
        if handler is None and method == "HEAD":
            handler = getattr(self, "json_GET", None)
        if handler is None:
            body = self.not_allowed(request)
        else:
            d = maybeDeferred(handler, request)
            if not d.called or d.paused:  # (paused: it waits on a Deferred it chained)
                return self._later(d, request, replied)
            # The common, synchronous case: answer without NOT_DONE_YET.
            result: list[Any] = []
            d.addBoth(result.append)
            body = self._body(request, result[0])
        if replied is not None:
            replied(request.code)
        return body

    def allowed_methods(self, request: Request) -> list[str]:
        """The methods this resource serves ``request``: those with a ``json_`` handler, and ``HEAD`` with ``GET``."""
        allowed = sorted({name[5:] for name in dir(self) if name.startswith("json_")})
        if "GET" in allowed:
            allowed.append("HEAD")
        return allowed

    def not_allowed(self, request: Request) -> bytes:
        """The JSON 405 for ``request``, with the ``Allow`` header."""
        request.setHeader(b"allow", ", ".join(self.allowed_methods(request)).encode())
        method = request.method.decode("ascii", "replace")
        return write_error(request, ApiError(f"method {method} not allowed here", 405))

    def _later(self, d: Deferred[Any], request: Request, replied: Callable[[int], None] | None) -> int:
        """Write the reply once ``d`` fires (unless the client has left, which cancels ``d``)."""
        gone: list[bool] = []

        def client_left(reason: Failure) -> None:
            gone.append(True)
            d.cancel()
            if replied is not None:
                replied(CLIENT_LEFT)

        def finish(result: Any) -> None:
            if gone:
                return  # the client left and the handler was cancelled: nobody to answer
            body = self._body(request, result)
            # With its length known the reply goes out whole, not in chunked encoding.
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()
            if replied is not None:
                replied(request.code)

        request.notifyFinish().addErrback(client_left)
        d.addBoth(finish)
        return NOT_DONE_YET

    def _body(self, request: Request, result: Any) -> bytes:
        if isinstance(result, Encoded):
            return write_encoded(request, result)
        if not isinstance(result, Failure):
            return write_json(request, 200, ok(result))
        if result.check(ApiError):
            return write_error(request, result.value)
        self.log.failure("while serving {method} {uri}", result, method=request.method, uri=request.uri)
        return write_error(request, ApiError("internal error", 500))


class JSONNotFound(JSONResource):
    """Every method on an unknown path: a JSON 404."""

    def render(self, request: Request) -> bytes:
        path = request.path.decode("utf-8", "replace")
        return write_error(request, NotFound(f"no such path: {path}"))


class JSONTree(Resource):
    """An inner node whose unknown children are JSON 404s, not HTML pages."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        return JSONNotFound()

    def render(self, request: Request) -> bytes:
        return JSONNotFound().render(request)


class Health(JSONResource):
    """``GET /health``: the service's own account of itself."""

    def __init__(self, status: Callable[[], dict[str, Any] | Deferred[dict[str, Any]]]) -> None:
        super().__init__()
        self._status = status

    def json_GET(self, request: Request) -> Any:
        return self._status()


class Metrics(Resource):
    """``GET /metrics``: the registry in the Prometheus text format."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self._registry)

    def render(self, request: Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return write_error(request, ApiError("method not allowed here", 405))
        return super().render(request)


def operator_root(
    status: Callable[[], Any], registry: CollectorRegistry, children: dict[bytes, IResource] | None = None
) -> JSONTree:
    """The resource tree of a service's operator port."""
    root = JSONTree()
    root.putChild(b"health", Health(status))
    root.putChild(b"metrics", Metrics(registry))
    for name, child in (children or {}).items():
        root.putChild(name, child)
    return root


class LimitedBody:
    """
    A request body that keeps at most ``limit`` bytes: beyond that it drops
    what arrives (nothing more is buffered) and remembers it was too large.
    """

    def __init__(self, limit: int, length: int | None) -> None:
        self.limit = limit
        self.too_large = length is not None and length > limit
        self._buffer = io.BytesIO()

    def write(self, data: bytes) -> None:
        if self.too_large:
            return
        if self._buffer.tell() + len(data) > self.limit:
            self.too_large = True
            self._buffer = io.BytesIO()
            return
        self._buffer.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._buffer.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        return self._buffer.read(size)

    def tell(self) -> int:
        return self._buffer.tell()

    def close(self) -> None:
        self._buffer.close()


class LimitedRequest(Request):
    """
    A request whose over-long body is answered with a JSON 413 before any
    resource sees it.  Bodies are JSON, read by the resources: twisted.web
    is not asked to parse them as HTML form submissions (which cost a MIME
    header parse per POST).
    """

    def __init__(self, channel: HTTPChannel, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(channel, *args, **kwargs)

    def process(self) -> None:
        if self.path == b"*" and self.method != b"OPTIONS":
            # Twisted's own answer to ``GET *`` is a 405 without a body.
            self.setHeader(b"allow", b"OPTIONS")
            self.write(write_error(self, ApiError("only OPTIONS may ask for *", 405)))
            self.finish()
            return
        if getattr(self.content, "too_large", False):
            self.setHeader(b"connection", b"close")
            limit = self.content.limit
            self.write(write_error(self, ApiError(f"request body larger than {limit} bytes", 413)))
            self.finish()
            return
        super().process()


#: Seconds a 408 may take to leave before its connection is cut anyway.
CLOSE_GRACE = 1.0


class NoDelayHTTPChannel(HTTPChannel):
    """
    An HTTP/1.1 channel with Nagle's algorithm off (see
    :func:`toystore.wire.no_delay`) and a deadline for every request.

    A request, headers and body, must arrive whole within ``request_timeout``
    seconds of its first byte; otherwise the client gets a JSON 408 and the
    connection closes (cut :data:`CLOSE_GRACE` seconds later if the client
    does not read).  Site's idle timeout cannot do this: every byte resets it,
    so a client sending one byte every few seconds would hold the connection
    for ever.  The deadline does not run while a request is being answered;
    on a keep-alive connection each request gets a deadline of its own.

    :ivar request_timeout: seconds, or None for no deadline; set by
        :class:`JSONSite`.
    """

    request_timeout: float | None = None
    #: The reactor's clock; set by :class:`JSONSite`.
    seconds: Callable[[], float] = staticmethod(time.time)
    _deadline: IDelayedCall | None = None  # the one timer; it may run later than needed, never earlier
    _started: float | None = None  # when the request now arriving began; None between requests

    _host: Any = None
    _peer: Any = None

    def connectionMade(self) -> None:
        no_delay(self.transport)
        super().connectionMade()

    def getHost(self) -> Any:
        """This end's address, asked of the socket once (every Request asks: a system call each)."""
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def getPeer(self) -> Any:
        """The client's address, made once per connection rather than once per request."""
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted answers a malformed request line, header or chunk (or too
        # many headers) with a bare 400 from here, before any Request exists.
        self._write_raw_error(400, b"Bad Request", "malformed HTTP request")
        self.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        """A request line or header longer than ``MAX_LENGTH``: a JSON 400, not a silent close."""
        self._respondToBadRequestAndDisconnect()

    def dataReceived(self, data: bytes) -> None:
        if not self._handlingRequest:
            self._start_deadline()  # the first byte of a request
        super().dataReceived(data)
        # A request may have ended inside ``data`` and the next one begun:
        # a partial line, or a request line and some headers, are left over.
        if not self._handlingRequest and (self.requests or self._buffer):
            self._start_deadline()

    def allContentReceived(self) -> None:
        self._started = None
        super().allContentReceived()

    def connectionLost(self, reason: Failure) -> None:
        self._started = None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        super().connectionLost(reason)

    def _write_raw_error(self, code: int, reason: bytes, message: str) -> None:
        """A JSON error reply written straight to the transport, for when there is no Request to answer it."""
        body = dumps(error_body(code, message))
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncache-control: no-store\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (code, reason, JSON, len(body), body)
        )

    def _start_deadline(self) -> None:
        """
        A request begins.  Keep-alive connections send request after request,
        so the timer is not made and cancelled for each: one timer runs, and
        when it fires it moves itself to the deadline of the request then
        arriving, if that one is not late yet (:meth:`_check_deadline`).
        """
        if self._started is not None or self.request_timeout is None or self.transport.disconnecting:
            return
        self._started = self.seconds()
        if self._deadline is None:
            self._deadline = self.callLater(self.request_timeout, self._check_deadline)

    def _check_deadline(self) -> None:
        self._deadline = None
        if self._started is None or self.request_timeout is None:
            return  # between requests: the next one starts a timer
        left = self._started + self.request_timeout - self.seconds()
        if left > 1e-6:  # (a microsecond for rounding)
            self._deadline = self.callLater(left, self._check_deadline)
            return
        self._too_slow()

    def _too_slow(self) -> None:
        if self.transport.disconnecting:
            # Already closing (after a 400, say) and the client is not reading.
            self.transport.abortConnection()
            return
        timeout = self.request_timeout
        self._log.info(
            "dropping {peer}: no whole request within {timeout} s", peer=self.transport.getPeer(), timeout=timeout
        )
        self._write_raw_error(408, b"Request Timeout", f"request not received within {timeout} s")
        # HTTPChannel.connectionLost cancels this once the connection is gone.
        self._abortingCall = self.callLater(CLOSE_GRACE, self.forceAbortClient)
        self.loseConnection()


class JSONSite(Site):
    """
    A Site that never shows tracebacks, logs nothing per request, refuses
    bodies longer than ``max_body`` without buffering them, gives each
    request ``request_timeout`` seconds to arrive (see
    :class:`NoDelayHTTPChannel`) and closes connections idle for
    ``idle_timeout`` seconds.  Its timers run on ``reactor``.
    """

    requestFactory = LimitedRequest
    protocol = NoDelayHTTPChannel
    displayTracebacks = False

    def __init__(
        self,
        root: IResource,
        max_body: int = 64 * 1024,
        request_timeout: float | None = 10.0,
        idle_timeout: float | None = 60.0,
        reactor: IReactorTime | None = None,
    ) -> None:
        super().__init__(root, timeout=idle_timeout, reactor=reactor)
        self.max_body = max_body
        self.request_timeout = request_timeout

    def buildProtocol(self, addr: Any) -> NoDelayHTTPChannel:
        channel = super().buildProtocol(addr)
        channel.request_timeout = self.request_timeout
        channel.seconds = self.reactor.seconds
        return channel

    def getContentFile(self, length: int | None) -> LimitedBody:
        return LimitedBody(self.max_body, length)

    def log(self, request: Request) -> None:
        """No access log: the metrics count requests."""


def make_site(
    root: IResource,
    max_body: int = 64 * 1024,
    timeouts: FrontendConfig | None = None,
    reactor: IReactorTime | None = None,
) -> Site:
    """
    The Site of a toystore HTTP port.

    :param timeouts: where ``request_timeout`` and ``idle_timeout`` come
        from: every HTTP port, public and operator, uses the front-end's
        (``[frontend]`` of the cluster file); None for the defaults.
    :param reactor: runs the timers (default: the global reactor).
    """
    if timeouts is None:
        return JSONSite(root, max_body, reactor=reactor)
    return JSONSite(root, max_body, timeouts.request_timeout, timeouts.idle_timeout, reactor)
