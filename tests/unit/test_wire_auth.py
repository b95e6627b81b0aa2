"""Tests for the cluster secret on the wire (:mod:`toystore.wire`): the ``auth`` call, its refusals, and WireClient."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from toystore.envelope import Unauthorized
from toystore.wire import NotConnected, WireClient, WireProtocol

from .helpers import WIRE, Handler, ScriptedEndpoint, connect, feed, sent

SECRET = "a-cluster-secret-for-tests"
SECURE = replace(WIRE, secret=SECRET)


class SecretTests(SynchronousTestCase):
    """With wire.secret, a lines port serves a connection only after an auth call that carries it."""

    def setUp(self) -> None:
        self.handler = Handler()
        self.clock = Clock()
        self.protocol, self.transport = connect(self.handler, self.clock, SECURE)

    def assertRefused(self, reply_id: Any, words: str) -> None:
        [reply] = sent(self.transport)
        self.assertEqual((reply["id"], reply["error"]["code"]), (reply_id, 401))
        self.assertIn(words, reply["error"]["message"])
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.handler.finished, [("auth", "401")])
        self.assertEqual(self.handler.pushes, [])

    def test_no_secret_works_as_before(self) -> None:
        """Without a secret, calls are served at once, and an auth call is a harmless no-op."""
        protocol, transport = connect(self.handler, self.clock, WIRE)
        feed(protocol, {"id": 1, "type": "add", "a": 1, "b": 2}, {"id": 2, "type": "auth", "secret": "whatever"})
        self.assertEqual(sent(transport), [{"id": 1, "data": {"sum": 3}}, {"id": 2, "data": {"authenticated": True}}])
        self.clock.advance(WIRE.call_timeout * 2)
        self.assertFalse(transport.disconnecting)

    def test_call_before_auth(self) -> None:
        """A call before authenticating gets a 401 and the connection closes; nothing after it is read."""
        feed(self.protocol, {"id": 1, "type": "add", "a": 1, "b": 2}, {"id": 2, "type": "auth", "secret": SECRET})
        self.assertRefused(1, "authenticate first")

    def test_other_first_lines(self) -> None:
        """A push, a ping or a line that is not JSON as the first line are refused too."""
        cases = [
            (b'{"type": "note", "n": 1}\n', None),
            (b'{"id": 5, "type": "ping"}\n', 5),
            (b"not json\n", None),
            (b'{"id": true, "type": "auth"}\n', None),
        ]
        for line, reply_id in cases:
            with self.subTest(line=line):
                self.setUp()
                self.protocol.dataReceived(line)
                self.assertRefused(reply_id, "authenticate first")

    def test_wrong_secret(self) -> None:
        """A wrong secret (or one that is not a string) gets a 401 and the connection closes."""
        for secret in ("not-the-secret", SECRET[:-1], 42, None):
            with self.subTest(secret=secret):
                self.setUp()
                feed(self.protocol, {"id": "a", "type": "auth", "secret": secret})
                self.assertRefused("a", "wrong secret")

    def test_right_secret_then_calls(self) -> None:
        """The right secret opens the connection for good: calls and pushes are served."""
        feed(
            self.protocol,
            {"id": 1, "type": "auth", "secret": SECRET},
            {"id": 2, "type": "add", "a": 1, "b": 2},
            {"type": "note", "n": 1},
        )
        self.assertEqual(
            sent(self.transport), [{"id": 1, "data": {"authenticated": True}}, {"id": 2, "data": {"sum": 3}}]
        )
        self.assertEqual(self.handler.pushes, [{"type": "note", "n": 1}])
        self.clock.advance(SECURE.call_timeout * 2)
        self.assertFalse(self.transport.disconnecting)

    def test_silent_connection_closed(self) -> None:
        """A connection that sends no auth call within call_timeout is closed."""
        self.clock.advance(SECURE.call_timeout - 0.1)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertRefused(None, "no auth call in time")

    def test_connecting_side_does_not_ask(self) -> None:
        """The side that connected serves its peer's pushes and calls without asking it for the secret."""
        protocol = WireProtocol(self.handler, self.clock, SECURE, client=True)
        transport = iosim.FakeTransport(protocol, isServer=False)
        protocol.makeConnection(transport)
        feed(protocol, {"type": "note", "n": 1})
        self.assertEqual(self.handler.pushes, [{"type": "note", "n": 1}])

    def test_authenticate_over_a_connection(self) -> None:
        """authenticate() sends the secret; with the right one calls follow, with a wrong one it fails 401."""
        for secret, works in ((SECRET, True), ("another-secret-entirely", False)):
            with self.subTest(secret=secret):
                client, server, pump = iosim.connectedServerAndClient(
                    lambda: WireProtocol(Handler(), self.clock, SECURE),
                    lambda secret=secret: WireProtocol(None, self.clock, replace(SECURE, secret=secret), client=True),
                )
                authenticated = client.authenticate()
                pump.flush()
                if works:
                    self.assertEqual(self.successResultOf(authenticated), {"authenticated": True})
                    d = client.call("add", {"a": 2, "b": 2})
                    pump.flush()
                    self.assertEqual(self.successResultOf(d), {"sum": 4})
                else:
                    self.failureResultOf(authenticated, Unauthorized)
                    self.assertFalse(client.connected)

    def test_authenticate_without_secret(self) -> None:
        """Without a secret, authenticate() sends nothing and succeeds at once."""
        protocol, transport = connect(None, self.clock, WIRE)
        self.assertIsNone(self.successResultOf(protocol.authenticate()))
        self.assertEqual(sent(transport), [])


class WireClientSecretTests(SynchronousTestCase):
    """WireClient authenticates every new connection before prepare runs or any call uses it."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = ScriptedEndpoint()
        self.prepared: list[WireProtocol] = []
        self.client = WireClient(
            self.endpoint, self.clock, SECURE, prepare=self.prepared.append, name="catalog", jitter=lambda: 0
        )
        self.client.startService()
        self.protocol, self.transport = self.endpoint.connected[0]
        [self.auth] = sent(self.transport)

    def test_authenticates_first(self) -> None:
        """The first line is the auth call; prepare and calls wait for its answer."""
        self.assertEqual((self.auth["type"], self.auth["secret"]), ("auth", SECRET))
        d = self.client.call("ping")
        self.assertEqual((self.prepared, sent(self.transport)), ([], []))
        feed(self.protocol, {"id": self.auth["id"], "data": {"authenticated": True}})
        self.assertEqual(self.prepared, [self.protocol.connection])
        [ping] = sent(self.transport)
        feed(self.protocol, {"id": ping["id"], "data": {"pong": True}})
        self.assertEqual(self.successResultOf(d), {"pong": True})

    def test_refused_secret(self) -> None:
        """A peer refusing the secret makes calls fail with NotConnected (a 503), never a 401; prepare never runs."""
        d = self.client.call("ping")
        feed(self.protocol, {"id": self.auth["id"], "error": {"code": 401, "message": "wrong secret"}})
        failure = self.failureResultOf(d, NotConnected)
        self.assertIn("catalog refuses this process's cluster secret (wrong secret)", failure.value.message)
        self.assertEqual(self.prepared, [])
