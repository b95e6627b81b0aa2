"""Tests for how ``twistd toystore-order`` parses its flags and assembles its process."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from toystore.order.replica import Replica
from toystore.order.tap import Options, makeService
from toystore.runtime import Listener, ThreadPoolService


class OptionsTests(SynchronousTestCase):
    """--id names a replica of the cluster file."""

    def test_id(self) -> None:
        """--id 2 selects replica 2's addresses."""
        options = Options()
        options.parseOptions(["--id", "2"])
        self.assertEqual((options.me.id, options.me.lines), (2, "tcp:8302:interface=127.0.0.1"))

    def test_bad_ids(self) -> None:
        """A missing, non-numeric or unknown id is a one-line error."""
        for argv, words in [
            ([], "--id is required"),
            (["--id", "x"], "--id must be an integer"),
            (["--id", "9"], "no replica with id 9"),
            (["--id", "1", "--min-insync", "2"], "option --min-insync not recognized"),
        ]:
            with self.subTest(argv=argv):
                error = self.assertRaises(SystemExit, Options().parseOptions, argv)
                self.assertIn(words, str(error.code))
                self.assertTrue(str(error.code).startswith("toystore-order: error: "))


class MakeServiceTests(SynchronousTestCase):
    """makeService listens on the replica's ports, on loopback."""

    def test_listeners(self) -> None:
        """Replica 2: lines on 8302, HTTP on 8202."""
        reactor = MemoryReactorClock()
        options = Options()
        options.parseOptions(["--id", "2", "--data-dir", self.mktemp()])
        service = makeService(options, reactor=reactor)
        for child in service:
            if isinstance(child, Listener):
                child.privilegedStartService()
                self.addCleanup(child.stopService)
        bound = {(port, interface) for port, _factory, _backlog, interface in reactor.tcpServers}
        self.assertEqual(bound, {(8302, "127.0.0.1"), (8202, "127.0.0.1")})

    def test_children(self) -> None:
        """
        Two threads, one for log writes and one for reads of old records,
        both started before the replica and so stopped after it (it drains
        its writes and closes its reader in them).
        """
        options = Options()
        options.parseOptions(["--id", "1", "--data-dir", self.mktemp()])
        service = makeService(options, reactor=MemoryReactorClock())
        pools = [child for child in service if isinstance(child, ThreadPoolService)]
        self.assertEqual([pool.name for pool in pools], ["order-1-log", "order-1-reads"])
        [replica] = [child for child in service if isinstance(child, Replica)]
        children = list(service)
        self.assertLess(max(children.index(pool) for pool in pools), children.index(replica))
        self.assertIs(replica.reads.run_in_thread.__self__, pools[1])

    def test_replaces(self) -> None:
        """--replaces starts the replica as one that does not vote until it has caught up; without it, it votes."""
        for argv, voter in (([], True), (["--replaces"], False)):
            with self.subTest(argv=argv):
                options = Options()
                options.parseOptions(["--id", "1", "--data-dir", self.mktemp(), *argv])
                service = makeService(options, reactor=MemoryReactorClock())
                [replica] = [child for child in service if isinstance(child, Replica)]
                replica.startService()
                self.addCleanup(replica.stopService)
                self.assertIs(replica.status()["voter"], voter)
