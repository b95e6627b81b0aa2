"""
Outbound HTTP that logs nothing per connection.

Twisted's HTTP client factory is noisy: every connection it makes logs
"Starting factory" and "Stopping factory".  A replica asks the front-end
``GET /leader`` every few seconds over a new connection each time, which
would fill its log.  :class:`QuietConnectionPool` hands the factory of each
new connection a quiet endpoint, which turns ``noisy`` off before connecting,
with Twisted's public API only (the pool's ``getConnection``, an endpoint,
``Factory.noisy``).
"""

from __future__ import annotations

from typing import Any, Hashable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.web.client import HTTPConnectionPool
from zope.interface import implementer


@implementer(IStreamClientEndpoint)
class _QuietEndpoint:
    """An endpoint that connects as ``endpoint`` does, its factory told not to log its start and stop."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        protocolFactory.noisy = False
        return self._endpoint.connect(protocolFactory)

    def __repr__(self) -> str:
        return repr(self._endpoint)  # (the pool names its factory after its endpoint)


class QuietConnectionPool(HTTPConnectionPool):
    """An HTTPConnectionPool whose new connections log nothing."""

    def getConnection(self, key: Hashable, endpoint: IStreamClientEndpoint) -> Deferred[Any]:
        return super().getConnection(key, _QuietEndpoint(endpoint))
