"""
Tests for the wire's time limits on a connection's life: the connect timeout
of :class:`~toystore.wire.WireClient` and the idle watch of
:mod:`toystore.wire.idle` (keepalive pings, closing a connection that hears
nothing), with their knobs in the cluster file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionAborted
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from toystore import config
from toystore.config import ConfigError
from toystore.wire import NotConnected, WireClient, WireProtocol
from toystore.wire.testing import Network

from .helpers import WIRE, Handler, feed, sent

KEEPALIVE = WIRE.keepalive
IDLE = WIRE.idle_timeout


def open_connection(clock: Clock, client: bool, handler: object = None) -> tuple[WireProtocol, StringTransport]:
    """A wire connection on a StringTransport: the connecting side's (``client``) or the accepting side's."""
    protocol = WireProtocol(handler, clock, WIRE, client=client)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def pings(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ping requests among ``lines``."""
    return [line for line in lines if line.get("type") == "ping"]


class ConnectTimeoutTests(SynchronousTestCase):
    """
    A connection attempt that hangs (the peer's SYNs dropped: no connection
    made, no error either) fails after wire.connect_timeout and is retried.
    MemoryReactorClock records each attempt and never completes it.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def client(self, connect: str) -> WireClient:
        """A started WireClient of the endpoint ``connect`` (a cluster file's string) on the memory reactor."""
        endpoint = clientFromString(self.reactor, connect)
        client = WireClient(endpoint, self.reactor, WIRE, name="catalog", jitter=lambda: 0)
        client.startService()
        self.addCleanup(client.stopService)
        return client

    def test_hanging_attempt_fails_then_is_retried(self) -> None:
        """
        The attempt is stopped at connect_timeout, not at Twisted's 30 s; a
        call waiting for it fails with NotConnected saying so; the next
        attempt comes after the backoff delay.
        """
        client = self.client("tcp:host=192.0.2.1:port=8101")
        [(host, port, _, twisted_timeout, _)] = self.reactor.tcpClients
        self.assertEqual((host, port, twisted_timeout), ("192.0.2.1", 8101, 30))
        d = client.call("ping")
        self.reactor.advance(WIRE.connect_timeout - 0.01)
        self.assertNoResult(d)
        self.assertFalse(self.reactor.connectors[0].stoppedConnecting)
        self.reactor.advance(0.01)
        message = self.failureResultOf(d, NotConnected).value.message
        self.assertIn("cannot connect to catalog", message)
        self.assertIn(f"no connection within {WIRE.connect_timeout} s", message)
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        delay = WIRE.reconnect_initial * 1.5  # the backoff after one failed attempt (no jitter)
        self.reactor.advance(delay - 0.01)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.reactor.advance(0.01)
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_unix_endpoint(self) -> None:
        """The timeout wraps whatever endpoint the cluster file names: a UNIX socket's attempt is stopped too."""
        client = self.client("unix:path=/nonexistent/catalog.sock")
        d = client.call("ping")
        self.reactor.advance(WIRE.connect_timeout)
        self.assertIn("no connection within", self.failureResultOf(d, NotConnected).value.message)
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        self.reactor.advance(WIRE.reconnect_max)
        self.assertEqual(len(self.reactor.unixClients), 2)

    def test_attempt_made_in_time_is_kept(self) -> None:
        """A connection made just before the timeout is used, and the timeout no longer applies to it."""
        client = self.client("tcp:host=127.0.0.1:port=8101")
        self.reactor.advance(WIRE.connect_timeout - 0.1)
        connection = self.reactor.tcpClients[0][2].buildProtocol(None)
        transport = StringTransport()
        connection.makeConnection(transport)
        self.reactor.advance(0.5)  # past the connect timeout
        self.assertFalse(transport.disconnecting)
        self.assertFalse(self.reactor.connectors[0].stoppedConnecting)
        d = client.call("add", {"a": 1, "b": 2})
        [request] = sent(transport)
        connection.dataReceived(b'{"data":{"sum":3},"id":%d}\n' % request["id"])
        self.assertEqual(self.successResultOf(d), {"sum": 3})
        self.assertEqual(len(self.reactor.tcpClients), 1)


class IdleCloseTests(SynchronousTestCase):
    """Either side closes a connection on which it hears nothing for wire.idle_timeout."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.handler = Handler()

    def tick(self, seconds: float, step: float = KEEPALIVE) -> None:
        """Let ``seconds`` pass in steps, as a running reactor would."""
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def test_silent_peer_closed(self) -> None:
        """
        The accepting side aborts a connection silent for idle_timeout (and
        logs it), having sent nothing on it: it does not ping.
        """
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        protocol, transport = open_connection(self.clock, client=False, handler=self.handler)
        self.tick(IDLE - KEEPALIVE)
        self.assertFalse(transport.disconnecting)
        self.tick(KEEPALIVE)
        self.assertTrue(transport.disconnected, "not aborted")
        self.assertEqual(sent(transport), [])
        self.assertIn("heard nothing", [e["log_format"] for e in logged][-1])

    def test_any_line_keeps_it_open(self) -> None:
        """A line resets the silence: it is closed idle_timeout (up to one keepalive more) after the last one."""
        protocol, transport = open_connection(self.clock, client=False, handler=self.handler)
        self.tick(IDLE - KEEPALIVE)
        self.clock.advance(KEEPALIVE / 2)
        feed(protocol, {"type": "note"})
        self.clock.advance(KEEPALIVE / 2)
        self.tick(IDLE - KEEPALIVE)
        self.assertFalse(transport.disconnecting)
        self.tick(KEEPALIVE)
        self.assertTrue(transport.disconnected)

    def test_pinged_connection_kept(self) -> None:
        """A connection that receives a ping every keepalive is never closed, and every ping is answered."""
        protocol, transport = open_connection(self.clock, client=False, handler=self.handler)
        for i in range(30):
            feed(protocol, {"id": i, "type": "ping"})
            self.clock.advance(KEEPALIVE)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(sent(transport), [{"id": i, "data": {"pong": True}} for i in range(30)])

    def test_late_reactor_is_one_look(self) -> None:
        """
        A timer that runs late (the reactor was held up, and the data it has
        not read yet may be waiting) counts as one look, not as the whole
        silence: the connection stays open.
        """
        protocol, transport = open_connection(self.clock, client=False, handler=self.handler)
        self.clock.advance(IDLE * 6)
        self.assertFalse(transport.disconnecting)
        feed(protocol, {"type": "note"})
        self.tick(IDLE - KEEPALIVE)
        self.assertFalse(transport.disconnecting)

    def test_connecting_side_closes_without_pongs(self) -> None:
        """The connecting side pings a silent peer, and aborts the connection when no pong comes back."""
        protocol, transport = open_connection(self.clock, client=True, handler=self.handler)
        self.tick(IDLE - KEEPALIVE)
        self.assertEqual(len(pings(sent(transport))), IDLE / KEEPALIVE - 1)
        self.assertFalse(transport.disconnecting)
        self.tick(KEEPALIVE)
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(self.clock.getDelayedCalls(), [])  # (the unanswered pings failed quietly)

    def test_closed_connection_is_not_watched(self) -> None:
        """A connection that closed leaves no timer behind."""
        protocol, transport = open_connection(self.clock, client=True, handler=self.handler)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class KeepaliveTests(SynchronousTestCase):
    """The connecting side pings when, since its last look, it sent or heard nothing; else it does not."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.protocol, self.transport = open_connection(self.clock, client=True, handler=Handler())

    def answer(self, lines: list[dict[str, Any]]) -> None:
        """Answer every request among ``lines``, as a live peer would."""
        for line in lines:
            if "id" in line:
                feed(self.protocol, {"id": line["id"], "data": {"pong": True}})

    def test_idle_connection_pinged_every_keepalive(self) -> None:
        """Idle, it pings at each look; the pongs keep the connection open."""
        for _ in range(20):
            self.clock.advance(KEEPALIVE)
            lines = sent(self.transport)
            self.assertEqual(len(pings(lines)), 1)
            self.answer(lines)
        self.assertFalse(self.transport.disconnecting)

    def test_busy_connection_not_pinged(self) -> None:
        """Sending and hearing between looks (calls and their replies), it sends no ping."""
        for i in range(20):
            self.clock.advance(KEEPALIVE / 2)
            self.protocol.call("add", {"a": i, "b": 1})
            lines = sent(self.transport)
            self.answer(lines)
            self.clock.advance(KEEPALIVE / 2)
            self.assertEqual(pings(lines + sent(self.transport)), [])
        self.assertFalse(self.transport.disconnecting)

    def test_listening_connection_pinged(self) -> None:
        """Hearing pushes but sending nothing (a subscription), it still pings, so that its peer hears it."""
        for _ in range(5):
            feed(self.protocol, {"type": "note", "n": 1})
            self.clock.advance(KEEPALIVE)
            lines = sent(self.transport)
            self.assertEqual(len(pings(lines)), 1)
            self.answer(lines)

    def test_talking_connection_pinged(self) -> None:
        """
        Sending pushes but hearing nothing else, it pings, so that the pong
        tells it the peer is there: at every other look, the pong heard in
        between making the next look's period a busy one.
        """
        sent_pings = 0
        for _ in range(20):
            self.protocol.push("note", n=1)
            self.clock.advance(KEEPALIVE)
            lines = sent(self.transport)
            sent_pings += len(pings(lines))
            self.answer(lines)
        self.assertEqual(sent_pings, 10)
        self.assertFalse(self.transport.disconnecting)


class HalfOpenTests(SynchronousTestCase):
    """On the in-memory network, a link that delivers nothing either way (half-open) is replaced."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = Network(self.clock, WIRE)
        self.handler = Handler()
        self.network.listen("adder", self.handler)

    def run_for(self, seconds: float) -> None:
        """Let ``seconds`` pass a tenth of a second at a time, delivering as a live network would."""
        for _ in range(round(seconds * 10)):
            self.clock.advance(0.1)
            self.network.flush()

    def test_wire_client_reconnects(self) -> None:
        """A WireClient's held connection is closed by both sides after idle_timeout, and a new one serves calls."""
        client = WireClient(self.network.endpoint("adder"), self.clock, WIRE, jitter=lambda: 0)
        client.startService()
        self.addCleanup(client.stopService)
        d = client.call("add", {"a": 1, "b": 1})
        self.network.flush()
        self.assertEqual(self.successResultOf(d), {"sum": 2})
        self.run_for(30)  # idle but healthy: the pings keep it
        [held] = self.network.pipes
        held.hold()
        self.run_for(IDLE - KEEPALIVE)
        self.assertFalse(held.closed)
        self.run_for(KEEPALIVE + WIRE.reconnect_max)
        self.assertTrue(held.closed)
        self.assertEqual(self.handler.lost, [held.server])
        [fresh] = self.network.pipes
        self.assertIsNot(fresh, held)
        d = client.call("add", {"a": 2, "b": 2})
        self.network.flush()
        self.assertEqual(self.successResultOf(d), {"sum": 4})

    def test_loopback_client_reconnects(self) -> None:
        """The stand-in client's held link is closed the same way; once released, the next call connects again."""
        client = self.network.client("adder")
        self.successResultOf(client.connection())
        client.hold()
        self.run_for(IDLE + KEEPALIVE)
        self.assertEqual(self.network.pipes, [])
        client.release()
        d = client.call("add", {"a": 3, "b": 3})
        self.network.flush()
        self.assertEqual(self.successResultOf(d), {"sum": 6})


class ConfigTests(SynchronousTestCase):
    """The knobs are in the cluster file, with defaults, and idle_timeout must exceed keepalive."""

    def test_packaged_defaults(self) -> None:
        """The packaged cluster file sets them to 2, 1 and 5 seconds."""
        wire = config.load().wire
        self.assertEqual((wire.connect_timeout, wire.keepalive, wire.idle_timeout), (2.0, 1.0, 5.0))
        self.assertEqual((WIRE.connect_timeout, WIRE.keepalive, WIRE.idle_timeout), (2.0, 1.0, 5.0))

    def test_file_without_them(self) -> None:
        """A cluster file that predates them gets the same defaults."""
        raw = config.read_raw(None)
        for key in ("connect_timeout", "keepalive", "idle_timeout"):
            del raw["wire"][key]
        path = Path(self.mktemp())
        path.write_text(config.dump(raw), "utf-8")
        wire = config.load(str(path)).wire
        self.assertEqual((wire.connect_timeout, wire.keepalive, wire.idle_timeout), (2.0, 1.0, 5.0))

    def test_idle_timeout_above_keepalive(self) -> None:
        """An idle_timeout not above keepalive (a pong could not come back in time) is refused, naming both."""
        for idle in (1.0, 0.5):
            with self.assertRaises(ConfigError) as raised:
                config.load(overrides={"wire": {"idle_timeout": idle}})
            self.assertEqual(str(raised.exception), f"wire.idle_timeout must be > wire.keepalive (1.0), not {idle}")
        config.load(overrides={"wire": {"idle_timeout": 1.5}})

    def test_positive(self) -> None:
        """Each must be a positive number."""
        for key in ("connect_timeout", "keepalive", "idle_timeout"):
            with self.assertRaises(ConfigError) as raised:
                config.load(overrides={"wire": {key: 0}})
            self.assertEqual(str(raised.exception), f"wire.{key} must be > 0, not 0")
