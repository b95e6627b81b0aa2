"""
The harness's TCP proxy (:mod:`toystore.testing.proxy`), which the fault
suite puts between processes, over real loopback sockets: it passes bytes, and cuts, stalls and drops as told.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol

from toystore.testing import Proxy, sleep

pytestmark = pytest.mark.integration


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Client(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[None] = Deferred()
        self._wanted: tuple[int, Deferred[bytes]] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self._wanted and len(self.received) >= self._wanted[0]:
            self._wanted[1].callback(self.received)

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(None)

    def wait_for(self, size: int, reactor: Any, timeout: float = 5.0) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self._wanted = (size, d)
        return d.addTimeout(timeout, reactor)


@pytest_twisted.ensureDeferred
async def test_pass_stall_drop_cut(reactor: Any) -> None:
    """Bytes echo through; a stall holds them until healed; a drop loses replies; a cut closes the connection."""
    server = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
    proxy = Proxy(reactor, server.getHost().port)
    port = proxy.start()
    try:
        client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Client())
        client.transport.write(b"one")
        assert await client.wait_for(3, reactor) == b"one"

        proxy.stall()
        client.transport.write(b"two")
        await sleep(reactor, 0.3)
        assert client.received == b"one"  # held, not lost
        proxy.heal()
        assert await client.wait_for(6, reactor) == b"onetwo"

        proxy.drop()
        client.transport.write(b"three")
        await sleep(reactor, 0.3)
        assert client.received == b"onetwo"
        proxy.heal()  # the connection lost bytes: it is aborted
        await client.closed.addTimeout(5, reactor)

        again = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Client())
        proxy.cut()
        await again.closed.addTimeout(5, reactor)
        refused = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Client())
        await refused.closed.addTimeout(5, reactor)  # accepted, then aborted at once
        assert refused.received == b""
    finally:
        await proxy.stop()
        await server.stopListening()
