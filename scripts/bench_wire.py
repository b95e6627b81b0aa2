"""
Benchmark of the internal JSON-lines wire (:mod:`toystore.wire`).

It measures the round-trip rate of ONE persistent connection, in calls per
second: C coroutine workers share one :class:`~toystore.wire.WireProtocol`,
each looping ``await proto.call("echo", {"n": i})`` until the deadline, for
each concurrency level C.  Two set-ups are measured in the same run:

* ``same process``: client and server share this process and its reactor, so
  both ends compete for one thread;
* ``two processes``: the script re-runs itself as a server subprocess
  (hidden ``--serve`` flag), so the calls cross a real process boundary.

Each figure is the median of ``--repeats`` measurements of ``--seconds``
each; the mean latency per call is derived from it as ``1e6 * C / rate``
microseconds (Little's law).  Run it from the repository root::

    python -m scripts.bench_wire                   # full run, about a minute
    python -m scripts.bench_wire --smoke           # ~1 s of measuring, for CI

This is a benchmark, not a test: it asserts nothing about speed, and its
numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from typing import Any

from twisted.internet import endpoints, stdio, task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ProcessProtocol, Protocol

import scripts
import twisted
from scripts import ROOT
from toystore.config import WireConfig
from toystore.measure import table
from toystore.wire import WireFactory, WireProtocol

CONFIG = WireConfig(call_timeout=10.0, max_line=1 << 20, reconnect_initial=0.1, reconnect_max=1.0)


class Echo:
    """The server's handler: an ``echo`` request is answered with its ``n``."""

    def call_echo(self, message: dict[str, Any], connection: WireProtocol) -> dict[str, Any]:
        """Return the request's ``n`` unchanged."""
        return {"n": message["n"]}


async def listen(reactor: Any) -> Any:
    """Start an echo server on a free loopback port; return its listening port."""
    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    return await endpoint.listen(WireFactory(Echo(), reactor, CONFIG))


async def connect(reactor: Any, port: int) -> WireProtocol:
    """Open the one client connection to the echo server on ``port``."""
    endpoint = endpoints.clientFromString(reactor, f"tcp:host=127.0.0.1:port={port}")
    return await endpoint.connect(WireFactory(None, reactor, CONFIG))


async def measure(reactor: Any, proto: WireProtocol, concurrency: int, seconds: float) -> float:
    """Keep ``concurrency`` echo calls in flight for ``seconds``; return calls/s."""
    done = [0]
    deadline = reactor.seconds() + seconds

    async def worker() -> None:
        """Make calls one after another until the deadline, counting replies."""
        i = 0
        while reactor.seconds() < deadline:
            reply = await proto.call("echo", {"n": i})
            assert reply == {"n": i}, reply
            i += 1
        done[0] += i

    started = reactor.seconds()  # elapsed includes the calls still in flight at the deadline
    await gatherResults([Deferred.fromCoroutine(worker()) for _ in range(concurrency)], consumeErrors=True)
    return done[0] / (reactor.seconds() - started)


async def run_mode(reactor: Any, mode: str, port: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure every concurrency level against the server on ``port``."""
    proto = await connect(reactor, port)
    try:
        await measure(reactor, proto, max(args.concurrency), args.seconds / 3)  # warm-up, discarded
        rows = []
        for c in args.concurrency:
            samples = [await measure(reactor, proto, c, args.seconds) for _ in range(args.repeats)]
            rate = statistics.median(samples)
            rows.append(
                {"mode": mode, "concurrency": c, "calls_per_s": rate, "latency_us": 1e6 * c / rate, "samples": samples}
            )
            print(f"  {mode}, C={c}: {rate:,.0f} calls/s", file=sys.stderr)
        return rows
    finally:
        proto.transport.loseConnection()


class ServerChild(ProcessProtocol):
    """The parent's view of the ``--serve`` child: its port, and its end."""

    def __init__(self) -> None:
        """Prepare Deferreds for the port it announces and for its exit."""
        self.port: Deferred[int] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self._buffer = b""

    def outReceived(self, data: bytes) -> None:
        """Read ``PORT <n>`` from the child's stdout."""
        self._buffer += data
        line, newline, _ = self._buffer.partition(b"\n")
        if newline and not self.port.called:
            self.port.callback(int(line.split()[1]))

    def errReceived(self, data: bytes) -> None:
        """Pass the child's stderr on, for diagnostics."""
        sys.stderr.write(data.decode("utf-8", "replace"))

    def processEnded(self, reason: Any) -> None:
        """Note the exit; fail the port if it was never announced."""
        if not self.port.called:
            self.port.errback(RuntimeError(f"server child exited early: {reason.value}"))
        self.ended.callback(None)


async def two_processes(reactor: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Spawn this script as a ``--serve`` child, benchmark it, then stop it."""
    child = ServerChild()
    argv = [sys.executable, "-m", "scripts.bench_wire", "--serve"]
    process = reactor.spawnProcess(child, sys.executable, argv, env=os.environ, path=str(ROOT))
    try:
        return await run_mode(reactor, "two processes", await child.port, args)
    finally:
        process.closeStdin()  # the child exits when its stdin closes...
        killer = reactor.callLater(5, process.signalProcess, "KILL")  # ...or else
        await child.ended
        if killer.active():
            killer.cancel()


async def serve(reactor: Any) -> None:
    """The ``--serve`` child: announce the port on stdout, serve until stdin closes."""
    port = await listen(reactor)
    stdin_closed: Deferred[None] = Deferred()

    class Watch(Protocol):
        """Tell us when the parent closes our stdin."""

        def connectionLost(self, reason: Any = None) -> None:
            """Stop serving."""
            stdin_closed.callback(None)

    io = stdio.StandardIO(Watch(), reactor=reactor)
    io.write(f"PORT {port.getHost().port}\n".encode())
    await stdin_closed
    await port.stopListening()


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The results as a plain, aligned text table."""
    header = ("mode", "concurrency", "calls/s", "mean latency (us)")
    cells = [(r["mode"], str(r["concurrency"]), f"{r['calls_per_s']:,.0f}", f"{r['latency_us']:,.1f}") for r in rows]
    return table(header, cells, left=1)


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line; ``--smoke`` overrides the sizes with small ones."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench_wire", description="Round-trip rate of one toystore wire connection."
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measurement (default 3)")
    parser.add_argument(
        "--concurrency",
        type=scripts.int_list,
        default=[1, 16, 64],
        help="calls in flight on the connection, comma-separated (default 1,16,64)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure; the median is shown")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    parser.add_argument("--smoke", action="store_true", help="a ~1 s run with small numbers, for CI")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.repeats, args.concurrency = 0.3, 1, [1, 8]
    if args.seconds <= 0 or args.repeats < 1 or min(args.concurrency) < 1:
        parser.error("--seconds, --repeats and each --concurrency must be positive")
    return args


async def main(reactor: Any, *argv: str) -> None:
    """Run the benchmark (or, with ``--serve``, be its server child)."""
    args = parse(list(argv))
    if args.serve:
        return await serve(reactor)
    port = await listen(reactor)
    try:
        rows = await run_mode(reactor, "same process", port.getHost().port, args)
    finally:
        await port.stopListening()
    rows += await two_processes(reactor, args)
    print(format_rows(rows))
    if args.json:
        meta = {
            "seconds": args.seconds,
            "repeats": args.repeats,
            "python": platform.python_version(),
            "twisted": twisted.__version__,
            "reactor": type(reactor).__name__,
            "cpus": os.cpu_count(),
        }
        with open(args.json, "w") as f:
            json.dump({"settings": meta, "results": rows}, f, indent=2)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
