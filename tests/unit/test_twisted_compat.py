"""
Tests for :mod:`toystore._twisted_compat`: each private name of Twisted that
toystore touches, and each undocumented behaviour it relies on, is still
there and still does what toystore needs.

A failure here names the Twisted version and the attribute: that release
removed or changed it, and ``toystore/_twisted_compat.py`` (or the public API
that now does the job) must change before ``setup.py`` admits the release.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from twisted.application.internet import ClientService
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Site

import toystore
import twisted
from toystore._twisted_compat import BadRequestHook, unparsed

from .helpers import ScriptedEndpoint

#: Malformed requests that HTTPChannel refuses before any Request exists, one of each kind.
MALFORMED = {
    "request line": b"NONSENSE\r\n\r\n",
    "header without a colon": b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
    "bad header name": b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n",
    "bad content-length": b"POST / HTTP/1.1\r\nContent-Length: ten\r\n\r\n",
    "bad chunk": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


class Answer(Resource):
    """A leaf that answers every request at once."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        return b"ok"


def channel(protocol: type[HTTPChannel]) -> tuple[HTTPChannel, StringTransport]:
    """A ``protocol`` channel of a Site serving :class:`Answer`, connected to a StringTransport."""
    site = Site(Answer())
    site.protocol = protocol
    built = site.buildProtocol(None)
    transport = StringTransport()
    built.makeConnection(transport)
    return built, transport


class CompatCase(SynchronousTestCase):
    """Failures that say which Twisted release broke which private."""

    def assertTwisted(self, holds: bool, attribute: str, what: str) -> None:
        """Fail, naming the Twisted version and ``attribute``, unless ``holds``."""
        if not holds:
            self.fail(
                f"Twisted {twisted.__version__}: {attribute} {what}. toystore relies on it "
                "(see toystore/_twisted_compat.py): adapt that module before allowing this release in setup.py."
            )


class BadRequestHookTests(CompatCase):
    """Entry 1: HTTPChannel._respondToBadRequestAndDisconnect, overridden by BadRequestHook."""

    ATTRIBUTE = "twisted.web.http.HTTPChannel._respondToBadRequestAndDisconnect"

    def test_exists(self) -> None:
        """HTTPChannel still has the method, taking no argument but the channel."""
        method = getattr(HTTPChannel, "_respondToBadRequestAndDisconnect", None)
        self.assertTwisted(callable(method), self.ATTRIBUTE, "is gone")
        code = method.__code__
        self.assertTwisted(code.co_argcount == 1, self.ATTRIBUTE, f"now takes {code.co_varnames[: code.co_argcount]}")

    def test_called_for_every_malformed_request(self) -> None:
        """Each kind of malformed request reaches bad_request through the private method, once."""
        calls: list[str] = []

        class Recording(BadRequestHook):
            """Counts each kind of malformed request that reaches bad_request."""

            def bad_request(self) -> None:
                calls.append(kind)
                super().bad_request()

        for kind, data in MALFORMED.items():
            with self.subTest(kind=kind):
                built, transport = channel(Recording)
                built.dataReceived(data)
                self.assertTwisted(calls.count(kind) == 1, self.ATTRIBUTE, f"is no longer called for a {kind}")

    def test_default_is_twisted_answer(self) -> None:
        """Without an override, bad_request answers as Twisted does: a bare 400, and the connection closes."""
        built, transport = channel(BadRequestHook)
        built.dataReceived(MALFORMED["request line"])
        self.assertEqual(transport.value(), b"HTTP/1.1 400 Bad Request\r\n\r\n")
        self.assertTrue(transport.disconnecting)


class UnparsedTests(CompatCase):
    """Entry 2: LineReceiver._buffer, read by unparsed()."""

    ATTRIBUTE = "twisted.protocols.basic.LineReceiver._buffer"

    def test_exists(self) -> None:
        """A new LineReceiver holds no bytes, as bytes."""
        self.assertTwisted(getattr(LineReceiver(), "_buffer", None) == b"", self.ATTRIBUTE, "is gone or not bytes")

    def test_partial_line(self) -> None:
        """The bytes of a line not yet ended are held there, and only those."""
        built, _ = channel(HTTPChannel)
        built.dataReceived(b"GET / HT")
        self.assertTwisted(unparsed(built) == b"GET / HT", self.ATTRIBUTE, "no longer holds a partial line")
        built.dataReceived(b"TP/1.1\r\nHost: x")
        self.assertTwisted(unparsed(built) == b"Host: x", self.ATTRIBUTE, "keeps bytes already parsed")

    def test_next_request_begun(self) -> None:
        """After a request answered within one read, the first bytes of the next one are held there."""
        built, transport = channel(HTTPChannel)
        built.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /fa")
        self.assertIn(b"HTTP/1.1 200 OK", transport.value())
        self.assertEqual(built.requests, [])
        self.assertTwisted(unparsed(built) == b"GET /fa", self.ATTRIBUTE, "does not hold the next request's bytes")


class ClientServiceProxyTests(CompatCase):
    """
    Relied on, no private named: ClientService hands out its
    _ReconnectingProtocolProxy, which forwards attributes to the protocol.
    """

    ATTRIBUTE = "twisted.application.internet.ClientService's _ReconnectingProtocolProxy"

    def test_connection_reaches_the_protocol(self) -> None:
        """Through what prepareConnection and whenConnected get, .connection is the factory's own protocol."""
        built: list[Protocol] = []

        class Connection(Protocol):
            """A protocol with the ``connection`` property of WireProtocol."""

            @property
            def connection(self) -> Protocol:
                return self

        class Building(Factory):
            """Keeps each protocol it builds."""

            def buildProtocol(self, addr: Any) -> Protocol:
                built.append(Connection())
                return built[-1]

        prepared: list[Any] = []
        service = ClientService(ScriptedEndpoint(), Building(), clock=Clock(), prepareConnection=prepared.append)
        service.startService()
        self.addCleanup(service.stopService)
        connected = self.successResultOf(service.whenConnected())
        for what, handed in (("prepareConnection", prepared[0]), ("whenConnected", connected)):
            self.assertTwisted(
                handed.connection is built[0], self.ATTRIBUTE, f"no longer forwards attributes given to {what}"
            )


class OnlyThroughCompatTests(SynchronousTestCase):
    """No toystore module but the compat module imports a private name or module of Twisted."""

    def test_no_private_imports(self) -> None:
        """Every ``from twisted... import`` outside _twisted_compat names public modules and names only."""
        package = Path(toystore.__file__).parent
        private = re.compile(r"(^|\.)_")
        found = []
        for path in sorted(package.rglob("*.py")):
            if path.name == "_twisted_compat.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "twisted":
                    names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names if a.name.split(".")[0] == "twisted"]
                else:
                    continue
                found += [f"{path.relative_to(package)}:{node.lineno}: {n}" for n in names if private.search(n)]
        self.assertEqual(found, [])
