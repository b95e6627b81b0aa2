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

from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.resource import IResource
from twisted.web.server import Request

from ..envelope import BadRequest, loads
from ..web import JSONResource, JSONTree, operator_root, write_error
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
        clock, metrics = self.frontend.clock, self.frontend.metrics
        started = clock.seconds()

        def done(_: object) -> None:
            metrics.requests.labels(self.kind, str(request.code)).inc()
            metrics.seconds.labels(self.kind).observe(clock.seconds() - started)

        request.notifyFinish().addBoth(done)
        if [segment for segment in request.postpath if segment]:
            return JSONTree().render(request)
        return super().render(request)


class Product(Public):
    """``GET /products/<name>``."""

    kind = "product"

    def __init__(self, frontend: FrontendService, name: str | None) -> None:
        super().__init__(frontend)
        self._name = name

    def json_GET(self, request: Request) -> Deferred[Any]:
        name = self._name
        if name is None:
            arg = _one_arg(request, b"product_name")
            name = _segment(arg, ()) if arg is not None else ""
        return Deferred.fromCoroutine(self.frontend.product(_check_name(name)))


class Products(JSONTree):
    """``/products``: the query-string form here, one child per name."""

    def __init__(self, frontend: FrontendService) -> None:
        super().__init__()
        self.frontend = frontend

    def getChild(self, path: bytes, request: Request) -> IResource:
        try:
            name = _segment(path, ("product_name=",)) if path else None
        except BadRequest as e:
            return _Refuse(self.frontend, e)
        return Product(self.frontend, name)

    def render(self, request: Request) -> bytes | int:
        return Product(self.frontend, None).render(request)


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
        return Deferred.fromCoroutine(self.frontend.order(_check_number(text)))


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
