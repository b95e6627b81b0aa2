"""
The Site of every toystore HTTP port, public and operator alike:
:func:`make_site`, with limits against hostile clients (bodies over
``max_body`` refused unread, a deadline for each request to arrive, idle
keep-alive connections closed), no tracebacks shown and no access log.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from ..config import FrontendConfig
from .channel import NoDelayHTTPChannel
from .request import LimitedBody, LimitedRequest


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
