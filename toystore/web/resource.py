"""
The adapter between twisted.web and toystore handlers: JSON replies.

A :class:`JSONResource` subclass defines ``json_GET(request)`` (``json_POST``,
...) that returns the reply's ``data`` (directly, as a Deferred or as a
coroutine; or a whole success envelope already encoded, as
:class:`~toystore.envelope.Encoded` bytes) or raises :class:`ApiError`; the
adapter writes ``{"data": ...}`` or ``{"error": ...}`` with the matching
status.  :meth:`JSONResource.respond` also tells a callback the status of
each reply once it is written, for metrics.  An unsupported method is a JSON
405, an unknown path a JSON 404 (:class:`JSONTree`), an unexpected exception
a logged JSON 500: no traceback or HTML page ever reaches a client.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from ..envelope import ApiError, Encoded, NotFound, dumps, ok

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


def write_not_allowed(request: Request, allowed: list[str]) -> bytes:
    """The JSON 405 for ``request`` on a resource that serves only ``allowed``, with the ``Allow`` header."""
    request.setHeader(b"allow", ", ".join(allowed).encode())
    method = request.method.decode("ascii", "replace")
    return write_error(request, ApiError(f"method {method} not allowed here", 405))


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
        return write_not_allowed(request, self.allowed_methods(request))

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
