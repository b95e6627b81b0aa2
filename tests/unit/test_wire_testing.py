"""
Tests for the in-memory wire (:mod:`toystore.wire.testing`): calls go through
the real framing and dispatch on both sides, connections end as real ones
do, and a test can cut, hold and restore them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from toystore.envelope import BadRequest, Conflict
from toystore.wire import CallTimeout, ConnectionDropped, NotConnected, WireClient, WireFactory, WireProtocol
from toystore.wire.testing import Network

from .helpers import WIRE, Handler


class Lines(LineOnlyReceiver):
    """A raw client: keeps every line it receives, and how its connection ended."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.lines: list[Any] = []
        self.reason: Failure | None = None

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(json.loads(line))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.reason = reason


class NetworkCase(SynchronousTestCase):
    """A network serving :class:`~tests.unit.helpers.Handler` as ``"adder"``."""

    config = WIRE

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = Network(self.clock, self.config)
        self.handler = Handler()
        self.network.listen("adder", self.handler)

    def raw(self) -> Lines:
        """A raw line client connected to the adder."""
        pipe = self.network.connect(Factory.forProtocol(Lines), "adder")
        return pipe.client  # type: ignore[return-value]


class CallTests(NetworkCase):
    """A call goes through both protocols, and only when the network is flushed."""

    def test_call_answered_on_flush(self) -> None:
        """The reply comes back once the network is flushed, not before; the client records the call."""
        client = self.network.client("adder")
        d = client.call("add", {"a": 2, "b": 3})
        self.assertNoResult(d)
        self.assertTrue(self.network.flush())
        self.assertEqual(self.successResultOf(d), {"sum": 5})
        self.assertEqual(client.calls, [("add", {"a": 2, "b": 3})])
        self.assertFalse(self.network.flush(), "nothing more to deliver")

    def test_errors_are_the_handlers(self) -> None:
        """A bad field, an error the handler raises and an unknown type come back as the real error replies."""
        client = self.network.client("adder")
        missing, refused, unknown = client.call("add", {"a": 1}), client.call("refuse"), client.call("nope")
        self.network.flush()
        self.assertIn("'b'", self.failureResultOf(missing, BadRequest).value.message)
        self.failureResultOf(refused, Conflict)
        self.assertIn("'nope'", self.failureResultOf(unknown, BadRequest).value.message)
        self.assertEqual(self.handler.finished, [("add", "400"), ("refuse", "409")])

    def test_bad_line_gets_the_real_error_reply(self) -> None:
        """A line that is not JSON, and one with neither type nor id, get the protocol's 400 replies with a null id."""
        raw = self.raw()
        raw.transport.write(b"not json\n")
        raw.sendLine(b'{"a":1}')
        self.network.flush()
        self.assertEqual([(line["id"], line["error"]["code"]) for line in raw.lines], [(None, 400), (None, 400)])
        self.assertIn("needs a type or an id", raw.lines[1]["error"]["message"])

    def test_long_line_closes_the_connection(self) -> None:
        """A line over wire.max_line gets its error, then the connection closes on both sides."""
        raw = self.raw()
        raw.transport.write(b"x" * (WIRE.max_line + 1) + b"\n")
        self.network.flush()
        self.assertEqual(raw.lines[0]["error"]["code"], 400)
        raw.reason.trap(ConnectionDone)
        self.assertEqual(len(self.handler.lost), 1)
        self.assertEqual(self.network.pipes, [])

    def test_pushes_reach_the_clients_handler(self) -> None:
        """A push from the served side goes to the client's handler; a reply with ``after`` is sent first."""
        pushes = Handler()
        client = self.network.client("adder", handler=pushes)
        d = client.call("stream")
        self.network.flush()
        self.assertEqual(self.successResultOf(d), {"streaming": True})
        self.assertEqual(pushes.pushes, [{"type": "note", "n": 1}])

    def test_encoded_reply(self) -> None:
        """A call made with encoded=True gets the reply as the bytes the served side wrote."""
        client = self.network.client("adder")
        d = client.call("add", {"a": 1, "b": 1}, encoded=True)
        self.network.flush()
        self.assertEqual(self.successResultOf(d), b'{"data":{"sum":2}}')

    def test_no_delay(self) -> None:
        """Both sides turn Nagle's algorithm off on their transport, as on TCP."""
        self.network.client("adder")
        [pipe] = self.network.pipes
        self.assertEqual((pipe.client_transport.no_delay, pipe.server_transport.no_delay), (True, True))

    def test_flush_runs_what_is_due_now(self) -> None:
        """flush runs the clock's calls due now (the end of a reactor turn), not later ones."""
        ran: list[str] = []
        self.clock.callLater(0, ran.append, "now")
        self.clock.callLater(1, ran.append, "later")
        self.assertTrue(self.network.flush())
        self.assertEqual(ran, ["now"])


class EndingTests(NetworkCase):
    """Connections end as real ones do."""

    def connected(self) -> Any:
        pipe = self.network.connect(WireFactory(Handler(), self.clock, WIRE, client=True), "adder")
        return pipe

    def test_close_delivers_first(self) -> None:
        """loseConnection delivers what was written, then both sides lose the connection cleanly."""
        pipe = self.connected()
        pipe.server.push("note", n=1)
        pipe.server.transport.loseConnection()
        self.network.flush()
        self.assertEqual(pipe.client.handler.pushes, [{"type": "note", "n": 1}])
        self.assertFalse(pipe.client.connected)
        self.assertEqual(self.handler.lost, [pipe.server])
        self.assertTrue(pipe.closed)

    def test_abort_delivers_nothing_more(self) -> None:
        """abortConnection ends the connection at the next delivery, dropping what was written."""
        raw = self.raw()
        pipe = self.network.pipes[0]
        pipe.server.push("note", n=1)
        pipe.server.transport.abortConnection()
        self.network.flush()
        self.assertEqual(raw.lines, [])
        self.assertIs(type(raw.reason.value), ConnectionLost)  # the aborting side's is ConnectionAborted
        self.assertEqual(self.handler.lost, [pipe.server])

    def test_producer_stopped_on_loss(self) -> None:
        """Each side registers itself as its transport's producer, which is stopped when the connection ends."""
        pipe = self.connected()
        self.assertIs(pipe.server_transport.producer, pipe.server)
        pipe.drop()
        self.assertIsNone(pipe.server_transport.producer)
        self.assertFalse(pipe.server.connected)


class FaultTests(NetworkCase):
    """A test cuts, holds and restores links and services."""

    def setUp(self) -> None:
        super().setUp()
        self.prepared: list[WireProtocol] = []
        self.client = self.network.client("adder", prepare=self.prepared.append)

    def test_cut_link_fails_pending_calls(self) -> None:
        """Cutting a client's link fails its pending calls with ConnectionDropped, the peer loses the connection."""
        d = self.client.call("wait", {"tag": "a"})
        self.network.flush()
        self.assertNoResult(d)
        self.client.cut()
        self.failureResultOf(d, ConnectionDropped)
        self.assertEqual(len(self.handler.lost), 1)

    def test_cut_link_refuses_then_reconnects(self) -> None:
        """While cut, calls fail with NotConnected at once; restore connects again, running prepare again."""
        self.client.cut()
        self.failureResultOf(self.client.call("add", {"a": 1, "b": 1}), NotConnected)
        self.client.restore()
        d = self.client.call("add", {"a": 1, "b": 1})
        self.network.flush()
        self.assertEqual(self.successResultOf(d), {"sum": 2})
        self.assertEqual(len(self.prepared), 2)
        self.assertEqual(len(self.network.pipes), 1)

    def test_cut_service(self) -> None:
        """A service cut off loses every connection and refuses new ones until restored; clients connect on demand."""
        other = self.network.client("adder")
        pending = other.call("wait", {"tag": "b"})
        self.network.flush()
        self.network.cut("adder")
        self.failureResultOf(pending, ConnectionDropped)
        refused = self.failureResultOf(self.client.call("add", {"a": 1, "b": 2}), NotConnected)
        self.assertIn("cut off", refused.value.message)
        self.network.restore("adder")
        d = self.client.call("add", {"a": 1, "b": 2})
        self.network.flush()
        self.assertEqual(self.successResultOf(d), {"sum": 3})

    def test_held_link_times_out(self) -> None:
        """
        A held link delivers nothing: the call times out; once released,
        its late reply is ignored (the keepalive ping the client sent
        meanwhile is served too).
        """
        self.client.hold()
        d = self.client.call("add", {"a": 1, "b": 1})
        self.network.flush()
        self.clock.advance(WIRE.call_timeout)
        self.failureResultOf(d, CallTimeout)
        self.client.release()
        self.network.flush()
        self.assertEqual(self.handler.finished, [("add", "ok"), ("ping", "ok")])

    def test_unserved_name(self) -> None:
        """A client of a name nothing serves fails its calls with NotConnected."""
        refused = self.failureResultOf(self.network.client("nobody").call("ping"), NotConnected)
        self.assertIn("not served", refused.value.message)

    def test_failed_prepare(self) -> None:
        """A failing prepare fails the call waiting for the connection, which is closed; the next call tries again."""
        attempts: list[WireProtocol] = []

        def prepare(connection: WireProtocol) -> Any:
            attempts.append(connection)
            return connection.call("refuse") if len(attempts) == 1 else None

        client = self.network.client("adder", prepare=prepare)
        d = client.call("ping")
        self.network.flush()
        self.failureResultOf(d, Conflict)
        d = client.call("ping")
        self.network.flush()
        self.assertEqual(self.successResultOf(d), {"pong": True})
        self.assertEqual(len(attempts), 2)
        self.assertFalse(attempts[0].connected)

    def test_stop(self) -> None:
        """A stopped client closes its connection and makes no more calls."""
        self.network.flush()
        self.successResultOf(self.client.stopService())
        self.network.flush()
        self.assertEqual(len(self.handler.lost), 1)
        self.failureResultOf(self.client.call("ping"), NotConnected)

    def test_real_wire_client_through_an_endpoint(self) -> None:
        """A real WireClient connects through the network's endpoint, and reports a cut service as NotConnected."""
        client = WireClient(self.network.endpoint("adder"), self.clock, WIRE, jitter=lambda: 0)
        client.startService()
        self.addCleanup(client.stopService)
        d = client.call("add", {"a": 4, "b": 4})
        self.network.flush()
        self.assertEqual(self.successResultOf(d), {"sum": 8})
        self.network.cut("adder")
        d = client.call("ping")
        for _ in range(3):  # the first reconnection delay: reconnect_initial, times the backoff factor
            self.clock.advance(WIRE.reconnect_initial)
        self.assertIn("cannot connect", self.failureResultOf(d, NotConnected).value.message)


class SecretTests(NetworkCase):
    """With a cluster secret, the served side asks for it, and the stand-in client gives it."""

    config = dataclasses.replace(WIRE, secret="s" * 16)

    def test_client_authenticates(self) -> None:
        """The stand-in client authenticates before its calls, as a WireClient does."""
        client = self.network.client("adder")
        d = client.call("add", {"a": 1, "b": 2})
        self.network.flush()
        self.assertEqual(self.successResultOf(d), {"sum": 3})
        self.assertEqual(self.handler.finished, [("auth", "ok"), ("add", "ok")])

    def test_wrong_secret(self) -> None:
        """A client with another secret fails its calls with NotConnected, never the peer's 401."""
        d = self.network.client("adder", config=dataclasses.replace(WIRE, secret="t" * 16)).call("ping")
        self.network.flush()
        self.assertIn("refuses this process's cluster secret", self.failureResultOf(d, NotConnected).value.message)

    def test_first_line_must_authenticate(self) -> None:
        """A raw connection whose first line is not the auth call gets a 401 and is closed."""
        raw = self.raw()
        raw.sendLine(b'{"id":1,"type":"ping"}')
        self.network.flush()
        self.assertEqual(raw.lines[0]["error"]["code"], 401)
        raw.reason.trap(ConnectionDone)
