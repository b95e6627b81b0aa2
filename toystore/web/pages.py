"""
The operator pages every service serves: ``GET /health`` (the service's own
account of itself, as JSON) and ``GET /metrics`` (its Prometheus registry,
in the Prometheus text format), under one :func:`operator_root`.
"""

from __future__ import annotations

from typing import Any, Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from .resource import JSONResource, JSONTree, write_not_allowed


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
            return write_not_allowed(request, ["GET", "HEAD"])
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
