"""
The load generator, run as ``toystore client``: simulated shoppers against
the public API.

Each client is one session: one keep-alive HTTP connection of its own.  An
iteration queries a random toy and, if some are left, buys 1 to 5 of it with
probability ``p``.  Every acknowledged order is remembered; at the end each
client reads back every order it placed and checks it.  The report gives,
per request type, the count, errors, mean, p50, p95 and p99 latency.  A 409
(someone else bought the last ones first) is a refusal, not an error; any
other failure, and any order that does not read back as placed, is, and
makes the command exit 1.

The decisions (:class:`Shopper`) and the checks (:func:`verify`) are plain
code; :func:`run` does the talking, and the evaluation scripts use it too.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import treq
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool

from .catalog.seed import TOYS
from .measure import percentile, table

KINDS = ("query", "buy", "check")


class Shopper:
    """One client's choices, from its own random generator (so a seed replays them)."""

    def __init__(self, rng: random.Random, p: float, toys: Sequence[str] = tuple(TOYS)) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"the buy probability must be from 0 to 1, not {p}")
        self.rng = rng
        self.p = p
        self.toys = list(toys)

    def pick(self) -> str:
        """The toy to query."""
        return self.rng.choice(self.toys)

    def buy(self, available: int) -> int | None:
        """How many to buy of a toy with ``available`` left: None (no buy) or 1 to 5."""
        if available <= 0 or self.rng.random() >= self.p:
            return None
        return self.rng.randint(1, 5)


def verify(placed: dict[int, dict[str, Any]], read: dict[int, Any]) -> list[str]:
    """The mismatches between the orders placed (number -> order) and what reading them back gave."""
    problems = []
    for number, order in sorted(placed.items()):
        expected = {"number": number, "name": order["name"], "quantity": order["quantity"]}
        got = read.get(number)
        if got != expected:
            problems.append(f"order {number}: placed {expected}, read back {got}")
    return problems


@dataclass
class Sample:
    """One request: its type, when it started, how long it took, and how it ended."""

    kind: str
    at: float
    seconds: float
    code: int  # HTTP status, or 0 when no answer came
    error: str | None = None


@dataclass
class Report:
    """Everything the clients saw."""

    samples: list[Sample] = field(default_factory=list)
    placed: dict[int, dict[str, Any]] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)

    def errors(self) -> list[Sample]:
        """Requests that failed other than by a 409 refusal."""
        return [s for s in self.samples if s.code not in (200, 409)]

    def summary(self) -> list[dict[str, Any]]:
        """Per request type: count, errors, refusals and latency figures of the answered ones (ms)."""
        rows = []
        for kind in KINDS:
            of_kind = [s for s in self.samples if s.kind == kind]
            good = [1e3 * s.seconds for s in of_kind if s.code == 200]
            rows.append(
                {
                    "type": kind,
                    "count": len(of_kind),
                    "errors": sum(1 for s in of_kind if s.code not in (200, 409)),
                    "refused": sum(1 for s in of_kind if s.code == 409),
                    "mean_ms": sum(good) / len(good) if good else float("nan"),
                    "p50_ms": percentile(good, 0.50),
                    "p95_ms": percentile(good, 0.95),
                    "p99_ms": percentile(good, 0.99),
                }
            )
        return rows

    def table(self) -> str:
        """The summary as an aligned table."""
        header = ("request", "count", "errors", "409s", "mean ms", "p50 ms", "p95 ms", "p99 ms")
        cells = [
            (r["type"], str(r["count"]), str(r["errors"]), str(r["refused"]))
            + tuple(f"{r[k]:.2f}" for k in ("mean_ms", "p50_ms", "p95_ms", "p99_ms"))
            for r in self.summary()
        ]
        return table(header, cells, left=1)


class Session:
    """One simulated client: a keep-alive connection, a shopper, and its orders."""

    def __init__(self, reactor: Any, url: str, shopper: Shopper, report: Report, timeout: float = 30.0) -> None:
        self.reactor = reactor
        self.url = url.rstrip("/")
        self.shopper = shopper
        self.report = report
        self.timeout = timeout
        self.placed: dict[int, dict[str, Any]] = {}
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 1
        self.http = treq.client.HTTPClient(treq.api.Agent(reactor, pool=self.pool))

    async def request(self, kind: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request, recorded as a sample; its status and JSON body (0 and None if it failed)."""
        started = self.reactor.seconds()
        try:
            kwargs = {"json": body} if body is not None else {}
            response = await self.http.request(method, self.url + path, timeout=self.timeout, **kwargs)
            payload = await response.json()
            code, error = response.code, None if response.code in (200, 409) else json.dumps(payload)
        except Exception as e:  # every failure is data here: the report counts it
            code, payload, error = 0, None, f"{type(e).__name__}: {e}"
        self.report.samples.append(Sample(kind, started, self.reactor.seconds() - started, code, error))
        return code, payload

    async def iteration(self) -> None:
        """Query a random toy; maybe buy some."""
        name = self.shopper.pick()
        code, body = await self.request("query", "GET", f"/products/{name}")
        if code != 200:
            return
        quantity = self.shopper.buy(body["data"]["quantity"])
        if quantity is None:
            return
        order = {"name": name, "quantity": quantity}
        code, body = await self.request("buy", "POST", "/orders", order)
        if code == 200:
            self.placed[body["data"]["order_number"]] = order

    async def check(self) -> list[str]:
        """Read back every order this client placed; the mismatches."""
        read = {}
        for number in sorted(self.placed):
            code, body = await self.request("check", "GET", f"/orders/{number}")
            read[number] = body["data"] if code == 200 else body
        return verify(self.placed, read)

    async def close(self) -> None:
        await self.pool.closeCachedConnections()


async def run(
    reactor: Any,
    url: str,
    clients: int = 5,
    iterations: int | None = 100,
    p: float = 0.5,
    seed: int | None = None,
    stop: Deferred[None] | None = None,
    progress: Callable[[], None] = lambda: None,
    report: Report | None = None,
) -> Report:
    """
    Run ``clients`` sessions of ``iterations`` each (or until ``stop`` fires
    when ``iterations`` is None), then check every order placed.  Samples go
    into ``report`` (a new one by default) as they come.
    """
    report = report if report is not None else Report()
    master = random.Random(seed)
    sessions = [Session(reactor, url, Shopper(random.Random(master.random()), p), report) for _ in range(clients)]

    async def drive(session: Session) -> None:
        n = 0
        while (iterations is None or n < iterations) and not (stop is not None and stop.called):
            await session.iteration()
            progress()
            n += 1
        report.mismatches += await session.check()
        report.placed.update(session.placed)

    try:
        await DeferredList([Deferred.fromCoroutine(drive(s)) for s in sessions], fireOnOneErrback=True)
    finally:
        for session in sessions:
            await session.close()
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``toystore client``."""
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the store (default: http://127.0.0.1:8000)")
    parser.add_argument("--clients", type=int, default=5, help="concurrent sessions (default 5)")
    parser.add_argument("--iterations", type=int, default=100, help="iterations per client (default 100)")
    parser.add_argument("-p", type=float, default=0.5, help="probability of buying after a query (default 0.5)")
    parser.add_argument("--forever", action="store_true", help="run until stopped, printing a rolling summary")
    parser.add_argument("--seed", type=int, help="seed of the random choices, to replay a run")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")


async def main(reactor: Any, options: argparse.Namespace) -> None:
    """``toystore client``: run, report, and exit 1 on any mismatch or unexpected error."""
    if options.clients < 1 or options.iterations < 1 or not 0 <= options.p <= 1:
        raise SystemExit("toystore client: error: --clients and --iterations must be >= 1, -p from 0 to 1")
    stop: Deferred[None] = Deferred()
    bar = _progress(None if options.forever else options.clients * options.iterations)
    report = Report()
    if options.forever:
        _stop_on_signals(reactor, stop)
        _rolling(reactor, report, stop)
    iterations = None if options.forever else options.iterations
    await run(reactor, options.url, options.clients, iterations, options.p, options.seed, stop, bar.update, report)
    bar.close()
    if options.json:
        print(
            json.dumps(
                {
                    "summary": report.summary(),
                    "orders": len(report.placed),
                    "mismatches": report.mismatches,
                    "errors": [s.__dict__ for s in report.errors()][:20],
                },
                indent=2,
            )
        )
    else:
        print(report.table())
        print(f"{len(report.placed)} orders placed, {len(report.mismatches)} read back wrong")
    for problem in report.mismatches[:10]:
        print(f"MISMATCH {problem}", file=sys.stderr)
    for sample in report.errors()[:10]:
        print(f"ERROR {sample.kind}: {sample.code} {sample.error}", file=sys.stderr)
    if report.mismatches or report.errors():
        raise SystemExit(1)


def _stop_on_signals(reactor: Any, stop: Deferred[None]) -> None:
    """
    Ctrl-C or SIGTERM ends the run, not the process: the clients stop, read
    their orders back, and the report is printed.  A second one stops at once.
    """

    def handler(signum: int, frame: object) -> None:
        if stop.called:
            reactor.callFromThread(reactor.stop)
        else:
            print("stopping: reading back the orders (again to quit at once)", file=sys.stderr)
            reactor.callFromThread(stop.callback, None)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


def _progress(total: int | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="it", disable=not sys.stderr.isatty(), leave=False)


def _rolling(reactor: Any, report: Report, stop: Deferred[None], every: float = 5.0) -> None:
    """Print, every ``every`` seconds while running forever, what the last window brought."""

    async def loop() -> None:
        seen = 0
        while not stop.called:
            await deferLater(reactor, every, lambda: None)
            window, seen = report.samples[seen:], len(report.samples)
            parts = []
            for kind in ("query", "buy"):
                good = [1e3 * s.seconds for s in window if s.kind == kind and s.code == 200]
                errors = sum(1 for s in window if s.kind == kind and s.code not in (200, 409))
                parts.append(f"{kind} {len(good) / every:.0f}/s p50 {percentile(good, 0.5):.1f} ms, {errors} errors")
            print(
                f"last {every:.0f} s: " + "; ".join(parts) + f"; {len(report.placed)} orders checked so far",
                file=sys.stderr,
            )

    Deferred.fromCoroutine(loop()).addErrback(lambda _: None)
