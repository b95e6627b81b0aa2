"""
A TCP proxy in front of one port, which a test can cut, stall or make drop
replies: the network between two processes, made unreliable on purpose.

``cut``
    Every connection through it is aborted, and new ones are aborted as soon
    as they are accepted (a partition that the peers notice at once).
``stall``
    Nothing more is read from either side, so bytes stop flowing while the
    connections stay open (a partition that looks like a hung peer).
``drop``
    Requests still go through, but replies are thrown away (a response lost
    on its way back); on healing, the connections that lost bytes are
    aborted, since their framing is broken.
``heal``
    Everything flows again.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import Factory
from twisted.protocols import portforward


class _Client(portforward.ProxyClient):
    """The proxy's connection to the target."""

    def connectionMade(self) -> None:
        super().connectionMade()  # starts reading from the accepted side
        if self.peer.factory.proxy.mode == "stall":
            self.peer.pause()

    def dataReceived(self, data: bytes) -> None:
        proxy: Proxy = self.peer.factory.proxy
        if proxy.mode == "drop":
            self.peer.dropped = True
            return
        super().dataReceived(data)


class _ClientFactory(portforward.ProxyClientFactory):
    """Makes the proxy's connection to the target for each accepted one."""

    protocol = _Client


class _Server(portforward.ProxyServer):
    """A connection accepted by the proxy."""

    clientProtocolFactory = _ClientFactory
    dropped = False

    def connectionMade(self) -> None:
        proxy: Proxy = self.factory.proxy
        if proxy.mode == "cut":
            self.transport.abortConnection()
            return
        proxy.connections.add(self)
        self.reactor = proxy.reactor
        super().connectionMade()
        if proxy.mode == "stall":
            self.transport.pauseProducing()

    def connectionLost(self, reason: Any) -> None:
        self.factory.proxy.connections.discard(self)
        super().connectionLost(reason)

    def pause(self) -> None:
        self.transport.pauseProducing()
        if self.peer is not None:
            self.peer.transport.pauseProducing()

    def resume(self) -> None:
        self.transport.resumeProducing()
        if self.peer is not None:
            self.peer.transport.resumeProducing()

    def abort(self) -> None:
        self.transport.abortConnection()
        if self.peer is not None:
            self.peer.transport.abortConnection()


class Proxy:
    """
    A proxy from a free port to ``host:target``.

    :ivar port: the port it listens on, once :meth:`start` ran.
    """

    def __init__(self, reactor: Any, target: int, name: str = "", host: str = "127.0.0.1") -> None:
        self.reactor = reactor
        self.target = target
        self.host = host
        self.name = name or f"proxy to {host}:{target}"
        self.mode = "pass"
        self.connections: set[_Server] = set()
        self._listening: Any = None
        self.port = 0

    def start(self, port: int = 0, interface: str = "127.0.0.1") -> int:
        """Listen on ``interface`` (on ``port``, or a free one); return the port."""
        factory = Factory.forProtocol(_Server)
        factory.host, factory.port, factory.proxy = self.host, self.target, self  # type: ignore[attr-defined]
        self._listening = self.reactor.listenTCP(port, factory, interface=interface)
        self.port = self._listening.getHost().port
        return self.port

    def stop(self) -> Deferred[None]:
        """Stop listening (if it still does) and abort every connection."""
        for connection in list(self.connections):
            connection.abort()
        return maybeDeferred(self._listening.stopListening)

    def cut(self) -> None:
        self.mode = "cut"
        for connection in list(self.connections):
            connection.abort()

    def stall(self) -> None:
        self.mode = "stall"
        for connection in list(self.connections):
            connection.pause()

    def drop(self) -> None:
        self.mode = "drop"

    def heal(self) -> None:
        mode, self.mode = self.mode, "pass"
        for connection in list(self.connections):
            if mode == "stall":
                connection.resume()
            elif connection.dropped:
                connection.abort()


class ProxyGroup:
    """Several proxies cut, stalled, made to drop and healed as one link (all of a replica's peers to it)."""

    def __init__(self, name: str, proxies: list[Proxy]) -> None:
        self.name = name
        self.proxies = proxies

    def cut(self) -> None:
        for proxy in self.proxies:
            proxy.cut()

    def stall(self) -> None:
        for proxy in self.proxies:
            proxy.stall()

    def drop(self) -> None:
        for proxy in self.proxies:
            proxy.drop()

    def heal(self) -> None:
        for proxy in self.proxies:
            proxy.heal()
