"""
The replica's operator port: ``GET /health``, ``GET /metrics`` and
``GET /orders/<n>`` from the replica's own log, as far as it is durable
there (on followers too; the front-end reads through the leader, which
confirms it still leads first: this answer is for operators and tests).
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import IResource
from twisted.web.server import Request

from ..envelope import BadRequest
from ..web import JSONResource, JSONTree, operator_root
from .replica import Replica


class Order(JSONResource):
    """``GET /orders/<n>``."""

    def __init__(self, replica: Replica, segment: bytes) -> None:
        super().__init__()
        self._replica = replica
        self._segment = segment

    def json_GET(self, request: Request) -> Any:
        text = self._segment.decode("utf-8", "replace")
        if not text.isdigit() or len(text) > 18:
            raise BadRequest(f"order number must be a non-negative integer, not {text!r}")
        return self._replica.local_order(int(text))


class Orders(JSONTree):
    """``/orders/``: one child per order number."""

    def __init__(self, replica: Replica) -> None:
        super().__init__()
        self._replica = replica

    def getChild(self, path: bytes, request: Request) -> IResource:
        return Order(self._replica, path)


def replica_root(replica: Replica) -> IResource:
    """The resource tree of a replica's operator port."""
    return operator_root(replica.status, replica.metrics.registry, {b"orders": Orders(replica)})
