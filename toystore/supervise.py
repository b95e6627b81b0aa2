"""
Running toystore processes as children, for the store harness
(:mod:`toystore.testing`) and the tools that start a process of their own.

A :class:`Child` is one ``twistd -n <command>`` process, started with
``--exit-on-stdin-close``: its standard input is a pipe from this process, so
if this process dies, however abruptly, the children stop too.  It is ready when it
logs its ready line (see :mod:`toystore.runtime`), which also tells the ports
it bound; nobody waits a fixed time.  A :class:`Supervisor` starts children,
and stops them all: SIGTERM first, SIGKILL for those that do not exit in time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, BinaryIO, Sequence

from twisted.internet.defer import Deferred, DeferredList, TimeoutError, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

#: How much of a child's output is kept in memory, for error messages.
KEEP_OUTPUT = 64 * 1024


def twistd_executable() -> str:
    """The twistd of the running interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "twistd"
    if beside.exists():
        return str(beside)
    return shutil.which("twistd") or "twistd"


class Child(ProcessProtocol):
    """
    One twistd child process.

    :ivar ready: fires with the ports the child bound (``{"lines": 8101,
        ...}``) when it logs its ready line; fails if it exits first.
    :ivar status: its exit status, or minus the number of the signal that
        ended it; None while it runs.
    """

    def __init__(self, name: str, command: str, log: BinaryIO | None = None) -> None:
        self.name = name
        self.command = command
        self.ready: Deferred[dict[str, int]] = Deferred()
        self.status: int | None = None
        self._waiters: list[Deferred[int]] = []
        self.ports: dict[str, int] = {}
        self._log = log
        self._output = b""
        self._pattern = re.compile(re.escape(command).encode() + rb" ready: (\{[^\n]*\})")

    def outReceived(self, data: bytes) -> None:
        self._keep(data)
        if not self.ready.called:
            match = self._pattern.search(self._output)
            if match:
                self.ports = json.loads(match.group(1))
                self.ready.callback(self.ports)

    def errReceived(self, data: bytes) -> None:
        self._keep(data)

    def _keep(self, data: bytes) -> None:
        if self._log is not None:
            self._log.write(data)
            self._log.flush()
        self._output = (self._output + data)[-KEEP_OUTPUT:]

    def processEnded(self, reason: Failure) -> None:
        status = reason.value.exitCode
        status = -reason.value.signal if status is None else status
        if self._log is not None:
            self._log.close()
        self.status = status
        if not self.ready.called:
            self.ready.errback(ChildFailed(f"{self.name} exited ({status}) before it was ready", self.output()))
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(status)

    def when_ended(self) -> Deferred[int]:
        """A new Deferred that fires with :attr:`status` once the child has exited."""
        if self.status is not None:
            return succeed(self.status)
        self._waiters.append(Deferred())
        return self._waiters[-1]

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.status is None

    @property
    def pid(self) -> int | None:
        """The process id, while it runs."""
        return self.transport.pid if self.transport is not None and self.running else None

    def output(self) -> str:
        """The last of what the child printed."""
        return self._output.decode("utf-8", "replace")

    def signal(self, name: str) -> None:
        """Send signal ``name`` (``"KILL"``, ``"TERM"``, ``"STOP"``, ``"CONT"``) if it still runs."""
        if self.running:
            # Twisted translates only some names (not CONT), so pass the number.
            self.transport.signalProcess(getattr(signal, f"SIG{name}"))


class ChildFailed(Exception):
    """A child exited before it was ready; ``output`` is what it printed."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


class Supervisor:
    """
    Starts twistd children and stops them all.

    :param env: extra environment variables for every child.
    """

    log = Logger()

    def __init__(self, reactor: Any, env: dict[str, str] | None = None) -> None:
        self.reactor = reactor
        self.children: list[Child] = []
        self.stopping = False
        self._env = {**os.environ, **(env or {})}

    def spawn(
        self,
        name: str,
        command: str,
        args: list[str],
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        wrap: Sequence[str] = (),
    ) -> Child:
        """
        Start ``twistd -n <command> <args>``; its output also goes to
        ``log_path``; ``env`` adds environment variables for this child;
        ``wrap`` is a command line it runs under (``ip netns exec NAME``).
        """
        log = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = log_path.open("ab")
        child = Child(name, command, log)
        twistd = [twistd_executable(), "-n", "--pidfile=", "--logfile=-", command, "--exit-on-stdin-close", *args]
        argv = [*wrap, *twistd]
        self.reactor.spawnProcess(child, argv[0], argv, env={**self._env, **(env or {})})
        self.children.append(child)
        return child

    async def start(
        self,
        name: str,
        command: str,
        args: list[str],
        log_path: Path | None = None,
        timeout: float = 30.0,
        env: dict[str, str] | None = None,
        wrap: Sequence[str] = (),
    ) -> Child:
        """Spawn a child and wait until it is ready (at most ``timeout`` seconds)."""
        child = self.spawn(name, command, args, log_path, env, wrap)
        await child.ready.addTimeout(timeout, self.reactor)
        return child

    async def wait(self, child: Child, timeout: float = 30.0) -> int:
        """Wait for ``child`` to exit; its status (or minus the signal)."""
        child.ready.addErrback(lambda _: None)  # exiting before ready is expected here
        return await child.when_ended().addTimeout(timeout, self.reactor)

    async def stop_all(self, grace: float = 10.0) -> None:
        """Stop every child (see :meth:`stop`); their ends are no longer news (:attr:`stopping`)."""
        self.stopping = True
        await self.stop(self.children, grace)

    async def stop(self, children: Sequence[Child], grace: float = 10.0) -> None:
        """SIGTERM each of ``children`` that runs, newest first; SIGKILL those still running after ``grace`` s."""
        running = [child for child in reversed(children) if child.running]
        for child in running:
            child.ready.addErrback(lambda _: None)
            child.signal("TERM")
        try:
            await DeferredList([child.when_ended() for child in running]).addTimeout(grace, self.reactor)
        except TimeoutError:
            for child in running:
                if child.running:
                    self.log.warn("{name} did not stop in {grace} s: killing it", name=child.name, grace=grace)
                    child.signal("KILL")
            await DeferredList([child.when_ended() for child in running])

    def kill_all(self) -> list[Deferred[int]]:
        """SIGKILL every running child at once; the Deferreds of their ends."""
        pending = []
        for child in self.children:
            if child.running:
                child.ready.addErrback(lambda _: None)
                child.signal("KILL")
                pending.append(child.when_ended())
        return pending
