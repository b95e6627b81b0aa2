"""
Tests for the wire's time limits on a connection's life: the connect timeout
of :class:`~toystore.wire.WireClient`, with its knobs in the cluster file.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.endpoints import clientFromString
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from toystore import config
from toystore.config import ConfigError
from toystore.wire import NotConnected, WireClient

from .helpers import WIRE, sent


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
