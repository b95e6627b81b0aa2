"""
Tests for the live page's feed: :class:`toystore.web.events.EventStream`
over a real HTTP channel on a StringTransport, and
:class:`toystore.frontend.dashboard.Dashboard` in front of a catalog and
three replicas on an in-memory network (:mod:`toystore.wire.testing`), with
a Clock.  No sockets.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from toystore.frontend.dashboard import INTERVAL, POLICY, Dashboard
from toystore.frontend.resources import frontend_root
from toystore.web import make_site
from toystore.web.events import EventStream

from .replicas import ReplicaCase


class Transport(StringTransport):
    """A StringTransport a toystore HTTP channel accepts (it turns Nagle off), which records an abort."""

    aborted = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def abortConnection(self) -> None:
        self.aborted = True
        super().loseConnection()


class Browser:
    """One HTTP connection to a site, reading the reply as it comes: headers, then a chunked event stream."""

    def __init__(self, site: Any, path: bytes, method: bytes = b"GET") -> None:
        self.channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = Transport(IPv4Address("TCP", "127.0.0.1", 8000), IPv4Address("TCP", "127.0.0.1", 40000))
        self.channel.makeConnection(self.transport)
        self.channel.dataReceived(b"%s %s HTTP/1.1\r\nHost: store\r\n\r\n" % (method, path))
        self._raw = b""
        self.head: bytes | None = None
        self._body = b""

    def read(self) -> list[tuple[str, Any]]:
        """The events (name, decoded data) that arrived since the last read; comments as ("", text)."""
        self._raw += self.transport.value()
        self.transport.clear()
        if self.head is None:
            if b"\r\n\r\n" not in self._raw:
                return []
            self.head, self._raw = self._raw.split(b"\r\n\r\n", 1)
        while True:  # chunked transfer encoding
            size_line, sep, rest = self._raw.partition(b"\r\n")
            if not sep:
                break
            size = int(size_line, 16)
            if len(rest) < size + 2:
                break
            self._body += rest[:size]
            self._raw = rest[size + 2 :]
        events = []
        while b"\n\n" in self._body:
            block, self._body = self._body.split(b"\n\n", 1)
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line and line[:1] != b":")
            if block.startswith(b":"):
                events.append(("", block[2:].decode()))
            elif b"event" in fields:
                events.append((fields[b"event"].decode(), json.loads(fields[b"data"])))
        return events

    def header(self, name: bytes) -> bytes | None:
        assert self.head is not None
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b": ")
            if key.lower() == name:
                return value
        return None


class EventStreamTests(SynchronousTestCase):
    """A snapshot first, then every published event, to every client; a client that stops reading is dropped."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.watching: list[bool] = []
        self.state = {"n": 0}
        self.stream = EventStream(
            self.clock, lambda: ("snapshot", json.dumps(self.state).encode()), self.watching.append, stall_timeout=5.0
        )
        root = Resource()
        root.putChild(b"events", self.stream)
        self.site = make_site(root, reactor=self.clock)

    def test_snapshot_then_changes_to_every_client(self) -> None:
        first = Browser(self.site, b"/events")
        self.assertEqual(first.read(), [("snapshot", {"n": 0})])
        self.assertEqual(first.header(b"content-type"), b"text/event-stream; charset=utf-8")
        self.assertEqual(self.watching, [True])
        self.state["n"] = 1
        second = Browser(self.site, b"/events")
        self.stream.publish("change", b'{"n": 2}')
        self.assertEqual(first.read(), [("change", {"n": 2})])
        self.assertEqual(second.read(), [("snapshot", {"n": 1}), ("change", {"n": 2})])
        self.assertEqual(self.watching, [True])  # told once, for the first

    def test_last_client_leaving_is_told(self) -> None:
        browsers = [Browser(self.site, b"/events") for _ in range(2)]
        browsers[0].channel.connectionLost(Exception("gone"))
        self.assertEqual(self.watching, [True])
        browsers[1].channel.connectionLost(Exception("gone"))
        self.assertEqual(self.watching, [True, False])
        self.assertEqual(self.stream.watchers, set())

    def test_a_client_that_stops_reading_is_dropped_and_the_others_go_on(self) -> None:
        slow, reading = Browser(self.site, b"/events"), Browser(self.site, b"/events")
        slow.channel.pauseProducing()  # what its transport does once its buffer is full
        self.clock.advance(4.9)
        self.stream.publish("change", b"{}")
        self.assertFalse(slow.transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(slow.transport.aborted)
        self.assertEqual((len(self.stream.watchers), self.stream.dropped), (1, 1))
        self.stream.publish("change", b'{"after": 1}')
        self.assertEqual(reading.read()[-1], ("change", {"after": 1}))

    def test_a_client_that_reads_again_in_time_stays(self) -> None:
        browser = Browser(self.site, b"/events")
        browser.channel.pauseProducing()
        self.clock.advance(4.0)
        browser.channel.resumeProducing()
        self.clock.advance(10.0)
        self.assertFalse(browser.transport.aborted)
        self.assertEqual(len(self.stream.watchers), 1)

    def test_keepalive_when_quiet_and_the_idle_timeout_does_not_cut_a_stream(self) -> None:
        browser = Browser(self.site, b"/events")
        browser.read()
        for _ in range(8):  # two minutes, past the site's 60-s idle timeout
            self.clock.advance(15.0)
        self.assertEqual(browser.read(), [("", "keepalive")] * 8)
        self.assertFalse(browser.transport.disconnecting)

    def test_only_get(self) -> None:
        browser = Browser(self.site, b"/events", b"POST")
        browser.read()
        self.assertIn(b" 405 ", browser.head.split(b"\r\n")[0])
        self.assertEqual(browser.header(b"allow"), b"GET")
        self.assertEqual(self.watching, [])


class DashboardTests(ReplicaCase):
    """
    The dashboard of a front-end in front of the catalog and three replicas
    (replica 3 leads): what a page sees, through the real resource tree.
    """

    def setUp(self) -> None:
        super().setUp()
        self.make()
        self.serving(3)
        self.frontend = self.start_frontend()
        self.dashboard = Dashboard(self.frontend, self.clock)
        self.dashboard.startService()
        self.addCleanup(self.dashboard.stopService)
        root = frontend_root(self.frontend, self.dashboard.resource())
        self.site = make_site(root, reactor=self.clock)
        self.treq = StubTreq(root)
        self.network.flush()

    def elapse(self, seconds: float, step: float = 0.05) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.treq.flush()
            self.network.flush()

    def state_of(self, events: list[tuple[str, Any]], state: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a page holds after ``events``: a snapshot replaces, a change replaces sections, appends events."""
        state = dict(state or {})
        for name, data in events:
            if name == "snapshot":
                state = dict(data)
            elif name == "change":
                for key, value in data.items():
                    state[key] = state.get(key, []) + value if key in ("events", "elections") else value
        return state

    def test_the_page_and_its_files(self) -> None:
        for path, kind in [
            (b"/dashboard", b"text/html"),
            (b"/dashboard/", b"text/html"),
            (b"/dashboard/app.js", b"text/javascript"),
            (b"/dashboard/style.css", b"text/css"),
        ]:
            browser = Browser(self.site, path)
            browser.read()
            self.assertIn(b" 200 ", browser.head.split(b"\r\n")[0], path)
            self.assertTrue(browser.header(b"content-type").startswith(kind), path)
            self.assertEqual(browser.header(b"content-security-policy"), POLICY)
        posted = Browser(self.site, b"/dashboard", b"POST")
        posted.read()
        self.assertIn(b" 405 ", posted.head.split(b"\r\n")[0])
        self.assertEqual(posted.header(b"allow"), b"GET, HEAD")
        for path in (b"/dashboard/nothing", b"/dashboard/app.js/more"):
            browser = Browser(self.site, path)
            browser.read()
            self.assertIn(b" 404 ", browser.head.split(b"\r\n")[0], path)

    def test_nobody_watching_nothing_runs(self) -> None:
        self.elapse(2.0)
        self.assertFalse(self.dashboard._looking.running)
        self.assertIsNone(self.frontend.on_push)
        self.assertEqual(self.dashboard.view.state, {})

    def test_what_a_page_sees_then_a_failover(self) -> None:
        page = Browser(self.site, b"/dashboard/events")
        self.elapse(2 * INTERVAL)
        state = self.state_of(page.read())
        roles = {p["name"]: p["role"] for p in state["processes"]}
        self.assertEqual(
            roles,
            {
                "frontend": "front-end",
                "catalog": "catalog",
                "order-1": "follower",
                "order-2": "follower",
                "order-3": "leader",
            },
        )
        self.assertEqual(state["leader"]["id"], 3)
        self.assertEqual(len(state["catalog"]["toys"]), 15)
        self.assertIsNotNone(self.frontend.on_push)

        self.kill(3)
        self.elapse(5.0)
        state = self.state_of(page.read(), state)
        self.assertIn(state["leader"]["id"], (1, 2))
        order3 = next(p for p in state["processes"] if p["name"] == "order-3")
        self.assertEqual((order3["up"], order3["role"]), (False, "down"))
        [election] = state["elections"]
        self.assertEqual((election["previous"], election["leader"]), (3, state["leader"]["id"]))
        kinds = [e["kind"] for e in state["events"]]
        self.assertIn("down", kinds)
        self.assertIn("election", kinds)

    def test_a_purchase_shows_in_stock_and_requests(self) -> None:
        page = Browser(self.site, b"/dashboard/events")
        self.elapse(2 * INTERVAL)
        state = self.state_of(page.read())
        before = {toy["name"]: toy["quantity"] for toy in state["catalog"]["toys"]}
        d = self.treq.post(
            "http://store/orders",
            json.dumps({"name": "Tux", "quantity": 2}).encode(),
            headers={"Idempotency-Key": "page-1"},
        )
        self.elapse(1.0)
        self.assertEqual(self.successResultOf(d).code, 200)
        self.elapse(3 * INTERVAL)
        state = self.state_of(page.read(), state)
        after = {toy["name"]: toy["quantity"] for toy in state["catalog"]["toys"]}
        self.assertEqual(after["Tux"], before["Tux"] - 2)
        self.assertGreater(state["requests"]["kinds"]["order"]["rate"], 0)

    def test_a_look_that_fails_is_logged_and_the_looks_go_on(self) -> None:
        page = Browser(self.site, b"/dashboard/events")
        self.elapse(INTERVAL)
        page.read()
        cache = self.frontend.cache
        keys = cache.keys
        cache.keys = lambda: 1 // 0  # type: ignore[method-assign]
        self.elapse(2 * INTERVAL)
        self.assertGreaterEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        cache.keys = keys  # type: ignore[method-assign]
        self.assertTrue(self.dashboard._looking.running)
        self.frontend.cache.stats.hits += 1
        self.elapse(2 * INTERVAL)
        self.assertEqual(page.read()[-1][1]["cache"]["hits"], self.frontend.cache.stats.hits)

    def test_the_last_page_leaving_stops_the_looks(self) -> None:
        page = Browser(self.site, b"/dashboard/events")
        self.elapse(INTERVAL)
        self.assertTrue(self.dashboard._looking.running)
        page.channel.connectionLost(Exception("closed"))
        self.assertFalse(self.dashboard._looking.running)
        self.assertIsNone(self.frontend.on_push)
