"""
The public REST API (``docs/openapi.yaml``; ``docs/architecture.rst``, "Public API"), plus ``/leader``, ``/health``,
``/metrics`` and ``/cache`` for operators and the evaluation.

::

    GET  /products/<name>          also /products/product_name=<name>, /products?product_name=<name>
    POST /orders                   body {"name": "Tux", "quantity": 2}; optional Idempotency-Key header
    GET  /orders/<number>          also /orders/order_num=<n>, /orders?order_number=<n>
    GET  /leader                   {"data": {"leader": 3, "epoch": 7, "via": 3}}  (via: where calls go)
    GET  /cache                    the cached toys, least recently used first, and the counters
    GET  /dashboard                the live page, and its feed (:mod:`toystore.frontend.dashboard`)

Every reply is ``{"data": ...}`` or ``{"error": {"code", "message"}}`` with
the code as the HTTP status.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.web.resource import IResource
from twisted.web.server import Request

from ..contract import MAX_KEY, MAX_NAME, check_text
from ..envelope import BadRequest, loads
from ..web import JSONResource, JSONTree, operator_root, write_encoded, write_error
from .service import FrontendService, parse_order


def _segment(raw: bytes, prefixes: tuple[str, ...]) -> str:
    """
    A path segment or query value as text, without a seed-style ``key=``
    prefix.  twisted.web has already percent-decoded it (``postpath``,
    ``args``): decoding again would read ``%2554ux`` as ``Tux``.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the path is not valid UTF-8") from None
    for prefix in prefixes:
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _one_arg(request: Request, name: bytes) -> bytes | None:
    values = request.args.get(name) if request.args else None
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"give {name.decode()} once")
    return values[0]


def _check_number(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise BadRequest(f"an order number is a non-negative integer, not {text[:40]!r}")
    return int(text)


class Public(JSONResource):
    """A public endpoint, a leaf for its whole subtree, whose requests are counted and timed by ``kind``."""

    kind = "other"

    def __init__(self, frontend: FrontendService) -> None:
        super().__init__()
        self.frontend = frontend

    def _counter(self, request: Request, kind: str | None = None) -> Callable[[int], None]:
        """What counts and times ``request`` (as ``kind``, default this resource's) once its reply is written."""
        clock, record, kind = self.frontend.clock, self.frontend.metrics.record, kind or self.kind
        started = clock.seconds()
        return lambda code: record(kind, code, clock.seconds() - started)

    def _count(self, request: Request, body: bytes, kind: str | None = None) -> bytes:
        """Count a reply written at once (in no time worth timing)."""
        self.frontend.metrics.record(kind or self.kind, request.code, 0.0)
        return body


class Products(Public):
    """
    ``/products`` and everything under it: ``GET /products/<name>``,
    ``/products/product_name=<name>`` and ``/products?product_name=<name>``.

    One leaf serves them all, and serves ``GET`` itself rather than through
    a ``json_GET``: a cached reply is written at once, as the bytes the
    cache keeps, with no Deferred, coroutine or encoding in the way.
    """

    kind = "product"
    isLeaf = True

    def render(self, request: Request) -> bytes | int:
        postpath = request.postpath
        if len(postpath) > 1 and any(postpath[1:]):
            return self._count(request, JSONTree().render(request))
        try:
            # A path that is not UTF-8 is a 400 whatever the method.
            text = _segment(postpath[0], ("product_name=",)) if postpath and postpath[0] else None
            if request.method not in (b"GET", b"HEAD"):
                return self._count(request, self.not_allowed(request))
            if text is None:
                arg = _one_arg(request, b"product_name")
                text = _segment(arg, ()) if arg is not None else ""
            name = check_text(text, "a product name", MAX_NAME)
        except BadRequest as e:
            return self._count(request, write_error(request, e))
        cached = self.frontend.cached_product(name)
        if cached is not None:
            return self._count(request, write_encoded(request, cached))
        return self._later(self.frontend.product(name), request, self._counter(request))

    def allowed_methods(self, request: Request) -> list[str]:
        return ["GET", "HEAD"]


class Orders(Public):
    """
    ``/orders`` and everything under it: ``POST /orders`` places an order;
    ``GET /orders/<number>``, ``/orders/order_num=<n>`` and
    ``/orders?order_number=<n>`` read one.  One leaf serves them all; the
    metrics count placing as ``order`` and reading as ``order_query``.
    """

    isLeaf = True
    KINDS = {b"POST": "order", b"GET": "order_query", b"HEAD": "order_query"}

    def render(self, request: Request) -> bytes | int:
        kind = self.KINDS.get(request.method, Public.kind)
        postpath = request.postpath
        if len(postpath) > 1 and any(postpath[1:]):
            return self._count(request, JSONTree().render(request), kind)
        try:
            named = self._number_segment(request) is not None  # a path that is not UTF-8 is a 400 whatever the method
        except BadRequest as e:
            return self._count(request, write_error(request, e), kind)
        if named and request.method not in (b"GET", b"HEAD"):
            return self._count(request, self.not_allowed(request), kind)
        return self.respond(request, self._counter(request, kind))

    def allowed_methods(self, request: Request) -> list[str]:
        named = self._number_segment(request) is not None
        return ["GET", "HEAD"] if named else ["GET", "HEAD", "POST"]

    def json_GET(self, request: Request) -> Deferred[Any]:
        text = self._number_segment(request)
        if text is None:
            arg = _one_arg(request, b"order_number")
            if arg is None:
                raise BadRequest("an order number is required: /orders/<number>")
            text = _segment(arg, ())
        return self.frontend.order(_check_number(text))

    def json_POST(self, request: Request) -> Deferred[Any]:
        name, quantity = parse_order(loads(request.content.read()), self.frontend.config.max_quantity)
        raw_key = request.getHeader(b"idempotency-key")
        key = None
        if raw_key is not None:
            try:
                key = raw_key.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest("Idempotency-Key must be UTF-8") from None
            check_text(key, "Idempotency-Key", MAX_KEY)
        return Deferred.fromCoroutine(self.frontend.place_order(name, quantity, key))

    @staticmethod
    def _number_segment(request: Request) -> str | None:
        """The order number's text in the path, or None for ``/orders`` itself."""
        postpath = request.postpath
        if not postpath or not postpath[0]:
            return None
        return _segment(postpath[0], ("order_num=", "order_number="))


class Leader(JSONResource):
    """``GET /leader``."""

    def __init__(self, frontend: FrontendService) -> None:
        super().__init__()
        self.frontend = frontend

    def json_GET(self, request: Request) -> dict[str, Any]:
        return self.frontend.leader()


class Cache(JSONResource):
    """``GET /cache``: what the evaluation plots."""

    def __init__(self, frontend: FrontendService) -> None:
        super().__init__()
        self.frontend = frontend

    def json_GET(self, request: Request) -> dict[str, Any]:
        cache = self.frontend.cache
        stats = cache.stats
        return {
            "size": cache.size,
            "keys": cache.keys(),
            "hits": stats.hits,
            "misses": stats.misses,
            "evictions": stats.evictions,
            "invalidations": stats.invalidations,
            "clears": stats.clears,
        }


def frontend_root(frontend: FrontendService, dashboard: IResource | None = None) -> IResource:
    """The front-end's whole resource tree (with the live page, when given its resource)."""
    children: dict[bytes, IResource] = {
        b"products": Products(frontend),
        b"orders": Orders(frontend),
        b"leader": Leader(frontend),
        b"cache": Cache(frontend),
    }
    if dashboard is not None:
        children[b"dashboard"] = dashboard
    return operator_root(frontend.status, frontend.metrics.registry, children)
