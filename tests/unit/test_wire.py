"""Tests for the JSON-lines wire of :mod:`toystore.wire`."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from toystore.envelope import ApiError, Conflict, Encoded, dumps
from toystore.wire import CallTimeout, ConnectionDropped, NotConnected, WireClient, WireProtocol
from toystore.wire.testing import Network

from .helpers import WIRE, Handler, ScriptedEndpoint, connect, feed, sent


class ServerSideTests(SynchronousTestCase):
    """Requests are dispatched by type; every bad input gets an error line."""

    def setUp(self) -> None:
        self.handler = Handler()
        self.protocol, self.transport = connect(self.handler)

    def test_request_reply(self) -> None:
        """A request is answered with its id and the handler's data."""
        feed(self.protocol, {"id": 1, "type": "add", "a": 2, "b": 3})
        self.assertEqual(sent(self.transport), [{"id": 1, "data": {"sum": 5}}])
        self.assertEqual(self.handler.finished, [("add", "ok")])

    def test_coroutine_handler(self) -> None:
        """A handler may be a coroutine function; string ids are echoed."""
        feed(self.protocol, {"id": "x-1", "type": "echo", "value": [1, 2]})
        self.assertEqual(sent(self.transport), [{"id": "x-1", "data": [1, 2]}])

    def test_replies_in_completion_order(self) -> None:
        """Slow calls do not hold back fast ones on the same connection."""
        feed(self.protocol, {"id": 1, "type": "wait", "tag": "a"}, {"id": 2, "type": "wait", "tag": "b"})
        self.assertEqual(sent(self.transport), [])
        self.handler.waiting["b"].callback("B")
        self.handler.waiting["a"].callback("A")
        self.assertEqual(sent(self.transport), [{"id": 2, "data": "B"}, {"id": 1, "data": "A"}])

    def test_reply_then_act(self) -> None:
        """A Reply is sent first, then its after() runs (here: a push that must follow the reply)."""
        feed(self.protocol, {"id": 3, "type": "stream"})
        self.assertEqual(sent(self.transport), [{"id": 3, "data": {"streaming": True}}, {"type": "note", "n": 1}])

    def test_api_error(self) -> None:
        """An ApiError raised by the handler becomes the reply's error."""
        feed(self.protocol, {"id": 4, "type": "refuse"})
        self.assertEqual(sent(self.transport), [{"id": 4, "error": {"code": 409, "message": "no stock"}}])
        self.assertEqual(self.handler.finished, [("refuse", "409")])

    def test_missing_field(self) -> None:
        """A handler's field check that fails is a 400 naming the field; the connection stays up."""
        feed(self.protocol, {"id": 5, "type": "add", "a": 1}, {"id": 6, "type": "add", "a": 1, "b": True})
        replies = sent(self.transport)
        self.assertEqual([r["error"]["code"] for r in replies], [400, 400])
        self.assertIn("'b' must be an integer", replies[0]["error"]["message"])
        self.assertIn("'b' must be an integer", replies[1]["error"]["message"])

    def test_unexpected_exception(self) -> None:
        """An unexpected exception is logged and answered with a 500, and the connection stays up."""
        feed(self.protocol, {"id": 7, "type": "crash"}, {"id": 8, "type": "add", "a": 1, "b": 1})
        replies = sent(self.transport)
        self.assertEqual(
            replies[0], {"id": 7, "error": {"code": 500, "message": "internal error while serving 'crash'"}}
        )
        self.assertEqual(replies[1], {"id": 8, "data": {"sum": 2}})
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertFalse(self.transport.disconnecting)

    def test_unencodable_reply(self) -> None:
        """A handler whose data cannot be encoded gets a logged 500 in its stead, and the connection stays up."""
        feed(self.protocol, {"id": 7, "type": "unencodable"}, {"id": 8, "type": "add", "a": 1, "b": 2})
        replies = sent(self.transport)
        self.assertEqual(replies[0]["error"]["code"], 500)
        self.assertEqual(replies[1], {"id": 8, "data": {"sum": 3}})
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(self.handler.finished[0], ("unencodable", "500"))
        self.assertFalse(self.transport.disconnecting)

    def test_bad_lines(self) -> None:
        """Each malformed line gets a 400 error line; none closes the connection."""
        cases = [
            (b"not json", None, "invalid JSON"),
            (b"[1, 2]", None, "must be a JSON object"),
            (b'{"x": 1}', None, "needs a type or an id"),
            (b'{"id": true, "type": "add"}', None, "id must be an integer or string"),
            (b'{"id": 3, "type": "nosuch"}', 3, "unknown request type 'nosuch'"),
            (b'{"id": 3, "type": "__class__"}', 3, "unknown request type"),
            (b'{"id": 3, "type": 12}', 3, "unknown request type 12"),
            (b'{"type": "add"}', None, "unknown push type 'add'"),
            (b'{"id": 2, "type": "add", "a": NaN, "b": 1}', None, "NaN"),
        ]
        for line, reply_id, words in cases:
            with self.subTest(line=line):
                self.protocol.dataReceived(line + b"\n")
                [reply] = sent(self.transport)
                self.assertEqual(reply["id"], reply_id)
                self.assertEqual(reply["error"]["code"], 400)
                self.assertIn(words, reply["error"]["message"])
        self.assertFalse(self.transport.disconnecting)

    def test_line_too_long(self) -> None:
        """An over-long line is answered with an error and the connection is closed."""
        self.protocol.dataReceived(b"x" * (WIRE.max_line + 10))
        [reply] = sent(self.transport)
        self.assertIn("longer than 4096 bytes", reply["error"]["message"])
        self.assertTrue(self.transport.disconnecting)

    def test_ping(self) -> None:
        """Every service answers ping without writing a handler for it."""
        feed(self.protocol, {"id": 1, "type": "ping"})
        self.assertEqual(sent(self.transport), [{"id": 1, "data": {"pong": True}}])

    def test_push_received(self) -> None:
        """A push goes to push_<type> and gets no reply."""
        feed(self.protocol, {"type": "note", "text": "hi"})
        self.assertEqual(self.handler.pushes, [{"type": "note", "text": "hi"}])
        self.assertEqual(sent(self.transport), [])

    def test_reply_after_disconnect_is_dropped(self) -> None:
        """A call that finishes after its connection closed writes nothing."""
        feed(self.protocol, {"id": 1, "type": "wait", "tag": "a"})
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.handler.waiting["a"].callback("late")
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.handler.lost, [self.protocol])


class ClientSideTests(SynchronousTestCase):
    """Calls match replies by id, time out, and fail when the connection drops."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.protocol, self.transport = connect(None, self.clock)

    def test_call_and_reply(self) -> None:
        """A call writes a request and fires with the reply's data."""
        d = self.protocol.call("query", {"name": "Tux"})
        [request] = sent(self.transport)
        self.assertEqual(request["type"], "query")
        self.assertEqual(request["name"], "Tux")
        feed(self.protocol, {"id": request["id"], "data": {"quantity": 3}})
        self.assertEqual(self.successResultOf(d), {"quantity": 3})

    def test_concurrent_calls_out_of_order(self) -> None:
        """Replies arriving in any order reach their own calls."""
        first = self.protocol.call("a")
        second = self.protocol.call("b")
        one, two = sent(self.transport)
        self.assertNotEqual(one["id"], two["id"])
        feed(self.protocol, {"id": two["id"], "data": 2}, {"id": one["id"], "data": 1})
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (1, 2))

    def test_error_reply(self) -> None:
        """An error reply fails the call with the matching ApiError."""
        d = self.protocol.call("buy")
        [request] = sent(self.transport)
        feed(self.protocol, {"id": request["id"], "error": {"code": 409, "message": "sold out"}})
        failure = self.failureResultOf(d, Conflict)
        self.assertEqual(failure.value.message, "sold out")

    def test_timeout(self) -> None:
        """A call with no reply fails with CallTimeout; the late reply is ignored."""
        d = self.protocol.call("slow", timeout=2.0)
        [request] = sent(self.transport)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        failure = self.failureResultOf(d, CallTimeout)
        self.assertIn("'slow' call to", failure.value.message)
        self.assertEqual(failure.value.code, 503)
        feed(self.protocol, {"id": request["id"], "data": "late"})

    def test_encoded_reply(self) -> None:
        """
        A call made with encoded=True gets the reply's success envelope as
        the bytes the peer sent, cut out of its line (a nested "id" key
        included); its other calls still get decoded data.
        """
        encoded = self.protocol.call("query", {"name": "Tux"}, encoded=True)
        plain = self.protocol.call("query", {"name": "Tux"})
        first, second = sent(self.transport)
        toy = {"id": 9, "name": 'Tüx, "id":', "price": 15.99}
        self.protocol.dataReceived(dumps({"id": first["id"], "data": toy}) + b"\n")
        self.protocol.dataReceived(dumps({"id": second["id"], "data": toy}) + b"\n")
        reply = self.successResultOf(encoded)
        self.assertIsInstance(reply, Encoded)
        self.assertEqual(reply, dumps({"data": toy}))
        self.assertEqual(self.successResultOf(plain), toy)

    def test_encoded_call_errors_and_other_forms(self) -> None:
        """
        An encoded call still fails with the peer's error, and a reply line
        in another form (keys in another order, spaces) is decoded and
        encoded again, to the same bytes.
        """
        refused = self.protocol.call("buy", encoded=True)
        spaced = self.protocol.call("query", encoded=True)
        one, two = sent(self.transport)
        feed(self.protocol, {"id": one["id"], "error": {"code": 409, "message": "sold out"}})
        self.failureResultOf(refused, Conflict)
        self.protocol.dataReceived(b'{"id": %d, "data": {"quantity": 3, "name": "Tux"}}\n' % two["id"])
        self.assertEqual(self.successResultOf(spaced), b'{"data":{"name":"Tux","quantity":3}}')

    def test_default_timeout(self) -> None:
        """Without a timeout argument, wire.call_timeout applies."""
        d = self.protocol.call("slow")
        self.clock.advance(WIRE.call_timeout)
        self.failureResultOf(d, CallTimeout)

    def only_the_idle_look(self) -> None:
        """Nothing is left on the connection's one timer but the idle watch's next look, a keepalive away at most."""
        [timer] = self.clock.getDelayedCalls()
        now = self.clock.seconds()
        self.assertTrue(now < timer.getTime() <= now + WIRE.keepalive, (now, timer.getTime()))

    def test_one_timer_for_all_calls(self) -> None:
        """However many calls are pending, one timer (the idle watch's too) watches their deadlines."""
        calls = [self.protocol.call("x", timeout=5.0) for _ in range(10)]
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        for request in sent(self.transport):
            feed(self.protocol, {"id": request["id"], "data": 1})
        self.assertEqual([self.successResultOf(d) for d in calls], [1] * 10)
        self.clock.advance(5.0)  # the timer runs, finds nothing late, and is set again for the idle watch only
        self.only_the_idle_look()

    def test_shorter_timeout_after_longer(self) -> None:
        """A call with a shorter timeout than those pending still fails at its own deadline, and they at theirs."""
        long = self.protocol.call("long", timeout=10.0)
        self.clock.advance(1.0)
        short = self.protocol.call("short", timeout=2.0)
        self.clock.advance(1.9)
        self.assertNoResult(short)
        self.clock.advance(0.1)  # 3 s: the short one's deadline
        self.assertIn("'short' call", self.failureResultOf(short, CallTimeout).value.message)
        self.assertNoResult(long)
        self.clock.advance(6.9)
        self.assertNoResult(long)
        self.clock.advance(0.1)  # 10 s
        self.assertIn("in 10.0 s", self.failureResultOf(long, CallTimeout).value.message)
        self.only_the_idle_look()

    def test_later_calls_keep_their_own_deadlines(self) -> None:
        """Once the first deadline passes, the timer moves on to the next pending call's."""
        first = self.protocol.call("first", timeout=2.0)
        self.clock.advance(1.5)
        second = self.protocol.call("second", timeout=2.0)  # due at 3.5 s
        self.clock.advance(0.5)
        self.failureResultOf(first, CallTimeout)
        self.clock.advance(1.4)
        self.assertNoResult(second)
        self.clock.advance(0.1)
        self.failureResultOf(second, CallTimeout)

    def test_cancelled_call_is_forgotten(self) -> None:
        """A call its caller cancels fails with CancelledError, and its late reply is ignored."""
        d = self.protocol.call("x", timeout=2.0)
        [request] = sent(self.transport)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        feed(self.protocol, {"id": request["id"], "data": "late"})
        self.clock.advance(2.0)
        self.only_the_idle_look()

    def test_connection_lost_fails_pending(self) -> None:
        """Every pending call fails with ConnectionDropped when the connection closes."""
        calls = [self.protocol.call("x") for _ in range(3)]
        self.protocol.connectionLost(Failure(ConnectionDone()))
        for d in calls:
            self.failureResultOf(d, ConnectionDropped)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_call_when_disconnected(self) -> None:
        """Calling on a closed connection raises NotConnected at once."""
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertRaises(NotConnected, self.protocol.call, "x")

    def test_reply_without_data_or_error(self) -> None:
        """A reply that has neither data nor error fails the call (502)."""
        d = self.protocol.call("x")
        [request] = sent(self.transport)
        feed(self.protocol, {"id": request["id"]})
        self.assertEqual(self.failureResultOf(d, ApiError).value.code, 502)


class StallTests(SynchronousTestCase):
    """A connection marked drop_if_stalled is aborted if its peer stops reading."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.protocol, self.transport = connect(Handler(), self.clock)

    def test_stalled_peer_dropped(self) -> None:
        """Paused for the whole timeout: the connection is aborted."""
        self.protocol.drop_if_stalled(5.0)
        self.assertIs(self.transport.producer, self.protocol)
        self.protocol.pauseProducing()
        self.clock.advance(4.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnecting)
        self.flushLoggedErrors()

    def test_resumed_in_time(self) -> None:
        """A peer that resumes reading within the timeout is kept."""
        self.protocol.drop_if_stalled(5.0)
        self.protocol.pauseProducing()
        self.clock.advance(3)
        self.protocol.resumeProducing()
        self.clock.advance(10)
        self.assertFalse(self.transport.disconnecting)

    def test_not_marked(self) -> None:
        """Ordinary connections are never dropped for being paused."""
        self.protocol.pauseProducing()
        self.clock.advance(100)
        self.assertFalse(self.transport.disconnecting)


class LoopbackTests(SynchronousTestCase):
    """Both ends of a real protocol pair, through iosim."""

    def test_many_calls_share_one_connection(self) -> None:
        """A hundred concurrent calls on one connection each get their own answer."""
        handler = Handler()
        clock = Clock()
        client, server, pump = iosim.connectedServerAndClient(
            lambda: WireProtocol(handler, clock, WIRE), lambda: WireProtocol(None, clock, WIRE)
        )
        calls = [client.call("add", {"a": n, "b": n}) for n in range(100)]
        pump.flush()
        self.assertEqual([self.successResultOf(d) for d in calls], [{"sum": 2 * n} for n in range(100)])

    def test_server_pushes_to_client(self) -> None:
        """A push from the server reaches the client's handler."""
        client_handler = Handler()
        clock = Clock()
        client, server, pump = iosim.connectedServerAndClient(
            lambda: WireProtocol(Handler(), clock, WIRE), lambda: WireProtocol(client_handler, clock, WIRE)
        )
        server.push("note", n=1)
        pump.flush()
        self.assertEqual(client_handler.pushes, [{"type": "note", "n": 1}])

    def test_disconnect_fails_calls_on_client(self) -> None:
        """When the server side closes, the client's pending calls fail."""
        handler = Handler()
        clock = Clock()
        client, server, pump = iosim.connectedServerAndClient(
            lambda: WireProtocol(handler, clock, WIRE), lambda: WireProtocol(None, clock, WIRE)
        )
        d = client.call("wait", {"tag": "t"})
        pump.flush()
        server.transport.loseConnection()
        pump.flush()
        self.failureResultOf(d, ConnectionDropped)


class WireClientTests(SynchronousTestCase):
    """WireClient keeps a connection, reconnects with backoff, and reports failures as 503s."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = ScriptedEndpoint()
        self.prepared: list[WireProtocol] = []
        self.client = WireClient(
            self.endpoint, self.clock, WIRE, prepare=self.prepared.append, name="catalog", jitter=lambda: 0
        )

    def reply(self, index: int, data: Any) -> None:
        protocol, transport = self.endpoint.connected[index]
        [request] = sent(transport)
        protocol.dataReceived(b'{"id": %d, "data": %s}\n' % (request["id"], str(data).encode()))

    def test_call(self) -> None:
        """A call goes over the connection; prepare ran on it first."""
        self.client.startService()
        d = self.client.call("ping")
        self.reply(0, 1)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(len(self.prepared), 1)

    def test_unreachable(self) -> None:
        """With the peer refusing, a call fails with NotConnected naming it."""
        self.endpoint.refuse = True
        self.client.startService()
        d = self.client.call("ping")
        self.assertNoResult(d)
        self.clock.advance(WIRE.reconnect_max)
        failure = self.failureResultOf(d, NotConnected)
        self.assertIn("cannot connect to catalog", failure.value.message)

    def test_reconnects_after_drop(self) -> None:
        """A dropped connection fails its calls, then is replaced after the backoff delay."""
        self.client.startService()
        d = self.client.call("ping")
        protocol, transport = self.endpoint.connected[0]
        protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, ConnectionDropped)
        self.clock.advance(WIRE.reconnect_initial)
        self.assertEqual(len(self.endpoint.connected), 1, "reconnected before the backoff delay")
        self.clock.advance(WIRE.reconnect_max)
        self.assertEqual(len(self.endpoint.connected), 2)
        d = self.client.call("ping")
        self.reply(1, 2)
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual(len(self.prepared), 2)

    def test_stopped(self) -> None:
        """After stopService, calls fail with NotConnected instead of hanging."""
        self.client.startService()
        stopped = self.client.stopService()
        protocol, transport = self.endpoint.connected[0]
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)
        d = self.client.call("ping")
        self.failureResultOf(d, NotConnected)


class PreparingTests(SynchronousTestCase):
    """
    A connection lost, or a client stopped, while a new connection is being
    prepared (a subscription, a follower's sync): an ordinary drop, retried
    after the backoff delay, and a stop that closes the connection.
    """

    class Slow:
        """A peer whose ``subscribe`` answers only when the test says."""

        def __init__(self) -> None:
            self.waiting: list[Deferred[Any]] = []

        def call_subscribe(self, message: dict[str, Any], connection: WireProtocol) -> Deferred[Any]:
            self.waiting.append(Deferred())
            return self.waiting[-1]

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = Network(self.clock, WIRE)
        self.peer = self.Slow()
        self.network.listen("catalog", self.peer)
        self.client = WireClient(
            self.network.endpoint("catalog"),
            self.clock,
            WIRE,
            prepare=lambda connection: connection.call("subscribe"),
            name="catalog",
            jitter=lambda: 0,
        )
        self.client.startService()
        self.network.flush()
        self.assertEqual((len(self.network.to("catalog")), len(self.peer.waiting)), (1, 1))

    def test_drop_while_preparing(self) -> None:
        """The drop fails the waiting call, and the next connection is made and prepared after the backoff."""
        d = self.client.call("ping")
        self.network.drop("catalog")  # raised NoTransition when ClientService awaited the preparation
        self.network.flush()
        self.failureResultOf(d, ConnectionDropped)
        self.clock.advance(WIRE.reconnect_max)
        self.network.flush()
        self.assertEqual(len(self.peer.waiting), 2, "no new connection after the backoff delay")
        d = self.client.call("ping")
        self.assertNoResult(d)
        self.peer.waiting[-1].callback({"subscribed": True})
        self.network.flush()
        self.assertEqual(self.successResultOf(d), {"pong": True})

    def test_stop_while_preparing(self) -> None:
        """Stopping closes the connection under preparation; nothing is left open to fail later."""
        d = self.client.call("ping")
        stopped = self.client.stopService()
        self.network.flush()
        self.successResultOf(stopped)
        self.assertEqual(self.network.to("catalog"), [], "the connection stayed open after the stop")
        self.assertIn("stopped", self.failureResultOf(d, NotConnected).value.message)
        self.failureResultOf(self.client.call("ping"), NotConnected)

    def test_prepared_after_stop(self) -> None:
        """A preparation that ends after the stop does not make its closing connection the one calls go onto."""

        class Late:
            """A prepare that ends when the test says, whatever happens to the connection."""

            done: Deferred[None] = Deferred()

            def __call__(self, connection: WireProtocol) -> Deferred[None]:
                return self.done

        late = Late()
        client = WireClient(self.network.endpoint("catalog"), self.clock, WIRE, prepare=late, jitter=lambda: 0)
        client.startService()
        self.network.flush()
        client.stopService()  # the connection is closing, not closed yet
        late.done.callback(None)
        d = client.call("ping")  # not onto the closing connection, to fail with ConnectionDropped
        self.network.flush()
        self.assertIn("stopped", self.failureResultOf(d, NotConnected).value.message)

    def test_refused_preparations_back_off(self) -> None:
        """A peer that fails every preparation is tried again after growing delays, not the first one each time."""
        delays = []
        for attempt in range(3):
            self.peer.waiting[-1].errback(ApiError("not now", 503))
            self.network.flush()
            waited = 0.0
            while len(self.peer.waiting) == attempt + 1:
                self.clock.advance(0.25)
                self.network.flush()
                waited += 0.25
            delays.append(waited)
        self.assertEqual(delays, sorted(delays))
        self.assertLess(delays[0], delays[-1], f"the delays did not grow: {delays}")


class NoDelayTests(SynchronousTestCase):
    """Wire connections and HTTP channels turn Nagle's algorithm off (small writes must not wait 40 ms)."""

    def test_no_delay(self) -> None:
        """Both kinds of connection call setTcpNoDelay(True) on their TCP transport."""
        from twisted.internet.testing import StringTransport

        from toystore.web import JSONTree, make_site

        class TCPTransport(StringTransport):
            no_delay = False

            def setTcpNoDelay(self, enabled: bool) -> None:
                self.no_delay = enabled

        wire, http = TCPTransport(), TCPTransport()
        WireProtocol(None, Clock(), WIRE).makeConnection(wire)
        make_site(JSONTree()).buildProtocol(None).makeConnection(http)
        self.assertEqual((wire.no_delay, http.no_delay), (True, True))
