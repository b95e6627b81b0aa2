"""
The parts every toystore process is assembled from: listeners that report
their ports, a private thread pool, and the top service that says "ready".

A process logs exactly one ready event once all its listeners are bound::

    toystore-catalog ready: {"http": 8100, "lines": 8101}

with the bound ports as JSON, so a supervisor or a test that asked for port 0
learns the real ones.  A listener that cannot bind stops the start with one
line on standard error and exit status 1.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
from typing import Any, Callable, NoReturn, TypeVar

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorCore, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


#: The exit status of a process that stopped itself because its disk failed (``EX_IOERR``).
EXIT_DISK_FAILED = 74


def exit_now(status: int, why: str) -> NoReturn:
    """
    Fail-stop: end the process at once, as a crash would, after saying why
    on standard error.  For a state no code can trust any more, such as a
    file whose write failed; the process's recovery at its next start is
    what makes that safe.
    """
    sys.stderr.write(f"{why}: exiting with status {status}\n")
    sys.stderr.flush()
    os._exit(status)


class StartupError(Exception):
    """A service cannot start; the message says why, in one line."""


class Listener(Service):
    """
    Listens on an endpoint string while running.

    :ivar port: the listening port, once started.
    """

    log = Logger()

    def __init__(self, reactor: Any, name: str, description: str, factory: IProtocolFactory) -> None:
        self.name = name
        self.description = description
        self._reactor = reactor
        self._factory = factory
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        """Bind now, so that a busy port fails the start at once."""
        super().privilegedStartService()
        outcome: list[Any] = []
        serverFromString(self._reactor, self.description).listen(self._factory).addBoth(outcome.append)
        if not outcome:
            raise CannotListenError(None, self.description, "the endpoint did not bind synchronously")
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        self.port = outcome[0]

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None

    @property
    def bound(self) -> int | None:
        """The bound TCP port number, or None."""
        return getattr(self.port.getHost(), "port", None) if self.port is not None else None


class ThreadPoolService(Service):
    """
    A private thread pool, started and stopped with the process.

    :param size: the number of threads; 1 serialises the work it is given.
    """

    def __init__(self, reactor: IReactorFromThreads, name: str, size: int = 1) -> None:
        self.name = name
        self._reactor = reactor
        self.pool = ThreadPool(minthreads=size, maxthreads=size, name=name)

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()

    def run(self, function: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run ``function(*args)`` in the pool; a Deferred of its result."""
        return deferToThreadPool(self._reactor, self.pool, function, *args)


class ProcessService(MultiService):
    """
    The top of one toystore process: starts its children, then logs the
    ready event with the ports its listeners bound.
    """

    log = Logger()

    def __init__(self, reactor: IReactorCore, command: str, exit_on_stdin_close: bool = False) -> None:
        super().__init__()
        self.command = command
        self._reactor = reactor
        self._exit_on_stdin_close = exit_on_stdin_close

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise SystemExit(f"{self.command}: error: cannot listen on {e.port}: {e.socketError}") from None

    def startService(self) -> None:
        try:
            super().startService()
        except StartupError as e:
            # Stop what did start (thread pools above all: their threads would keep the process alive).
            for child in reversed(list(self)):
                if child.running:
                    child.stopService()
            raise SystemExit(f"{self.command}: error: {e}") from None
        self._reactor.callWhenRunning(self._ready)
        if self._exit_on_stdin_close:
            self._watch_stdin()

    def _watch_stdin(self) -> None:
        """
        Stop when standard input reaches its end: the supervisor that started
        this process holds the other end, so its death, however abrupt,
        ends this process too.  A daemon thread waits on the pipe.
        """

        def wait() -> None:
            try:
                while sys.stdin.buffer.read(65536):
                    pass
            except (OSError, ValueError):
                pass
            self._reactor.callFromThread(self._parent_gone)

        threading.Thread(target=wait, name="stdin-watch", daemon=True).start()

    def _parent_gone(self) -> None:
        if self._reactor.running:
            self.log.warn("{command}: standard input closed (the supervisor is gone): stopping", command=self.command)
            self._reactor.stop()

    async def _stop_in_turn(self) -> None:
        for child in reversed(list(self)):
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                self.log.failure("while stopping {child!r}", child=child)

    def stopService(self) -> Deferred[None]:
        """
        Stop the children one at a time, newest first, each finishing before
        the next begins: listeners close, then services drain their work,
        then the thread pools they drain into stop.  (MultiService stops
        them all at once.)
        """
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_in_turn())

    def ports(self) -> dict[str, int | None]:
        """The bound port of every listener, by listener name."""
        return {child.name: child.bound for child in self if isinstance(child, Listener)}

    def _ready(self) -> None:
        # Everything made while starting (modules, configuration, the loaded
        # state) lives as long as the process: move it out of the cyclic
        # collector's sight, so that its full collections, which would
        # traverse all of it, stay short (they showed as p99 latency).
        gc.freeze()
        self.log.info("{command} ready: {ports}", command=self.command, ports=json.dumps(self.ports(), sort_keys=True))
