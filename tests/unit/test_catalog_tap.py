"""Tests for how ``twistd toystore-catalog`` assembles its process (:mod:`toystore.catalog.tap`)."""

from __future__ import annotations

import json

from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from toystore.catalog.tap import Options, makeService
from toystore.runtime import Listener, ProcessService


class MakeServiceTests(SynchronousTestCase):
    """makeService wires the catalog to its two listeners, on loopback."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp()])
        self.service = makeService(options, reactor=self.reactor)

    def test_listeners(self) -> None:
        """Lines on 8101 and HTTP on 8100, both bound to 127.0.0.1."""
        listeners = [child for child in self.service if isinstance(child, Listener)]
        for listener in listeners:
            listener.privilegedStartService()
            self.addCleanup(listener.stopService)
        bound = {(port, interface) for port, _factory, _backlog, interface in self.reactor.tcpServers}
        self.assertEqual(bound, {(8101, "127.0.0.1"), (8100, "127.0.0.1")})

    def test_children(self) -> None:
        """The process stops its listeners before the catalog, and the catalog before its thread pool."""
        names = [child.name if isinstance(child, Listener) else type(child).__name__ for child in self.service]
        self.assertEqual(names, ["ThreadPoolService", "CatalogService", "lines", "http"])


class ReadyTests(SynchronousTestCase):
    """ProcessService announces readiness once, with the ports its listeners bound."""

    def test_ready_event(self) -> None:
        """Once the reactor runs, one ready event lists the bound ports as JSON."""
        from twisted.internet.protocol import Factory

        reactor = MemoryReactorClock()
        top = ProcessService(reactor, "toystore-test")
        Listener(reactor, "lines", "tcp:8101:interface=127.0.0.1", Factory()).setServiceParent(top)
        Listener(reactor, "http", "tcp:8100:interface=127.0.0.1", Factory()).setServiceParent(top)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        self.assertEqual([e for e in events if "ready" in e.get("log_format", "")], [])
        reactor.run()
        [ready] = [e for e in events if e.get("log_format", "").endswith("ready: {ports}")]
        self.assertEqual(ready["command"], "toystore-test")
        self.assertEqual(json.loads(ready["ports"]), {"lines": 8101, "http": 8100})

    def test_ready_freezes_what_start_made(self) -> None:
        """At ready, the objects made while starting leave the cyclic collector's generations (gc.freeze)."""
        import gc

        gc.unfreeze()
        self.addCleanup(gc.unfreeze)
        reactor = MemoryReactorClock()
        top = ProcessService(reactor, "toystore-test")
        top.startService()
        self.addCleanup(top.stopService)
        self.assertEqual(gc.get_freeze_count(), 0)
        reactor.run()
        self.assertGreater(gc.get_freeze_count(), 0)


class OrderlyStopTests(SynchronousTestCase):
    """ProcessService stops its children one at a time, newest first."""

    def test_sequential_stop(self) -> None:
        """Each child finishes stopping before the one added before it begins."""
        from twisted.application.service import Service
        from twisted.internet.defer import Deferred

        log: list[str] = []
        pending: dict[str, Deferred[None]] = {}

        class Child(Service):
            def __init__(self, name: str) -> None:
                self.name = name

            def stopService(self) -> Deferred[None]:
                super().stopService()
                log.append(self.name)
                pending[self.name] = Deferred()
                return pending[self.name]

        top = ProcessService(MemoryReactorClock(), "test")
        for name in ("pool", "service", "listener"):
            Child(name).setServiceParent(top)
        top.startService()
        stopped = top.stopService()
        self.assertEqual(log, ["listener"])
        pending["listener"].callback(None)
        self.assertEqual(log, ["listener", "service"])
        pending["service"].callback(None)
        pending["pool"].callback(None)
        self.assertEqual(log, ["listener", "service", "pool"])
        self.successResultOf(stopped)


class StartupFailureTests(SynchronousTestCase):
    """A child that cannot start ends the process in one line, after stopping what did start."""

    def test_started_children_are_stopped(self) -> None:
        """The thread pool started before the failing service is stopped again (its threads would hang the exit)."""
        from twisted.application.service import Service

        from toystore.runtime import StartupError, ThreadPoolService

        class Broken(Service):
            def startService(self) -> None:
                raise StartupError("the log is corrupt")

        reactor = MemoryReactorClock()
        top = ProcessService(reactor, "toystore-test")
        pool = ThreadPoolService(reactor, "test-pool")
        pool.setServiceParent(top)
        Broken().setServiceParent(top)
        error = self.assertRaises(SystemExit, top.startService)
        self.assertEqual(str(error.code), "toystore-test: error: the log is corrupt")
        self.assertFalse(pool.running)
        self.assertFalse(pool.pool.started)
