"""
The public REST API (DESIGN.md section 2), plus ``/leader``, ``/health``,
``/metrics`` and ``/cache`` for replicas, operators and the evaluation.

::

    GET  /products/<name>          also /products/product_name=<name>, /products?product_name=<name>
    POST /orders                   body {"name": "Tux", "quantity": 2}; optional Idempotency-Key header
    GET  /orders/<number>          also /orders/order_num=<n>, /orders?order_number=<n>
    GET  /leader                   {"data": {"leader": 3, "epoch": 7}}
    GET  /cache                    the cached toys, least recently used first, and the counters

Every reply is ``{"data": ...}`` or ``{"error": {"code", "message"}}`` with
the code as the HTTP status.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.web.resource import IResource
from twisted.web.server import Request

from ..envelope import BadRequest, loads
from ..web import JSONResource, JSONTree, operator_root, write_encoded, write_error
from .service import FrontendService, parse_order

MAX_NAME = 100


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


def _check_name(name: str) -> str:
    if not name:
        raise BadRequest("a product name is required")
    if len(name) > MAX_NAME or not name.isprintable():
        raise BadRequest(f"a product name has at most {MAX_NAME} printable characters")
    return name


def _check_number(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise BadRequest(f"an order number is a non-negative integer, not {text[:40]!r}")
    return int(text)


class Public(JSONResource):
    """A public endpoint: counted and timed in the metrics by ``kind``."""

    kind = "other"

    def __init__(self, frontend: FrontendService) -> None:
        super().__init__()
        self.frontend = frontend

    def render(self, request: Request) -> bytes | int:
        if [segment for segment in request.postpath if segment]:
            return self._count(request, JSONTree().render(request))
        return self.respond(request, self._counter(request))

    def _counter(self, request: Request) -> Callable[[int], None]:
        """What counts and times ``request`` once its reply is written."""
        clock, record, kind = self.frontend.clock, self.frontend.metrics.record, self.kind
        started = clock.seconds()
        return lambda code: record(kind, code, clock.seconds() - started)

    def _count(self, request: Request, body: bytes) -> bytes:
        """Count a reply written at once (in no time worth timing)."""
        self.frontend.metrics.record(self.kind, request.code, 0.0)
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
            name = _check_name(text)
        except BadRequest as e:
            return self._count(request, write_error(request, e))
        cached = self.frontend.cached_product(name)
        if cached is not None:
            return self._count(request, write_encoded(request, cached))
        return self._later(self.frontend.product(name), request, self._counter(request))

    def allowed_methods(self) -> list[str]:
        return ["GET", "HEAD"]


class Order(Public):
    """``GET /orders/<number>``."""

    kind = "order_query"

    def __init__(self, frontend: FrontendService, number: str | None) -> None:
        super().__init__(frontend)
        self._number = number

    def json_GET(self, request: Request) -> Deferred[Any]:
        text = self._number
        if text is None:
            arg = _one_arg(request, b"order_number")
            if arg is None:
                raise BadRequest("an order number is required: /orders/<number>")
            text = _segment(arg, ())
        return self.frontend.order(_check_number(text))


class PlaceOrder(Public):
    """``POST /orders``."""

    kind = "order"

    def json_POST(self, request: Request) -> Deferred[Any]:
        name, quantity = parse_order(loads(request.content.read()), self.frontend.config.max_quantity)
        raw_key = request.getHeader(b"idempotency-key")
        key = None
        if raw_key is not None:
            try:
                key = raw_key.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest("Idempotency-Key must be UTF-8") from None
            if not 0 < len(key) <= 200 or not key.isprintable():
                raise BadRequest("Idempotency-Key must have 1 to 200 printable characters")
        return Deferred.fromCoroutine(self.frontend.place_order(name, quantity, key))


class OrdersHere(Public):
    """
    ``/orders`` itself: ``POST`` places an order, ``GET`` reads the one
    named by ``?order_number=``; a 405 allows both.
    """

    def render(self, request: Request) -> bytes | int:
        kinds = {b"POST": PlaceOrder.kind, b"GET": Order.kind, b"HEAD": Order.kind}
        self.kind = kinds.get(request.method, Public.kind)
        return super().render(request)

    def json_GET(self, request: Request) -> Deferred[Any]:
        return Order(self.frontend, None).json_GET(request)

    def json_POST(self, request: Request) -> Deferred[Any]:
        return PlaceOrder(self.frontend).json_POST(request)


class Orders(JSONTree):
    """``/orders``: placing and the query-string form here, one child per number."""

    def __init__(self, frontend: FrontendService) -> None:
        super().__init__()
        self.frontend = frontend

    def getChild(self, path: bytes, request: Request) -> IResource:
        if not path:
            return OrdersHere(self.frontend)
        try:
            return Order(self.frontend, _segment(path, ("order_num=", "order_number=")))
        except BadRequest as e:
            return _Refuse(self.frontend, e)

    def render(self, request: Request) -> bytes | int:
        return OrdersHere(self.frontend).render(request)


class _Refuse(Public):
    """Any method: the error found while reading the path."""

    def __init__(self, frontend: FrontendService, error: BadRequest) -> None:
        super().__init__(frontend)
        self._error = error

    def render(self, request: Request) -> bytes | int:
        return write_error(request, self._error)


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


def frontend_root(frontend: FrontendService) -> IResource:
    """The front-end's whole resource tree."""
    return operator_root(
        frontend.status,
        frontend.metrics.registry,
        {
            b"products": Products(frontend),
            b"orders": Orders(frontend),
            b"leader": Leader(frontend),
            b"cache": Cache(frontend),
        },
    )
