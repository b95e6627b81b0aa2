"""
Benchmark of durable buys per second of the real catalog process.

It starts its own ``twistd -n toystore-catalog`` with the store harness
(:class:`toystore.testing.Store`: data in a new temporary directory,
100,000,000 of every toy, free loopback ports), or targets a running one given
``--lines-port`` and ``--http-port``.  Over ONE wire connection, C coroutine
workers loop ``buy`` calls (1 item, toys in rotation, a unique key each) for
``--seconds``, ``--repeats`` times per concurrency level C.  Each buy is
committed (``synchronous=FULL``, group commit) before it is answered.

Per level: median buys/s; p50 and p99 call latency (pooled over the repeats);
mean commit batch size and mean commit time (deltas of the ``/metrics``
histograms; the JSON adds a p50 interpolated in their coarse buckets); the
p99 of a ``ping`` timed every 50 ms on a second connection during the load,
which the catalog's reactor answers without touching the disk.  As a reference: the raw
``write(4 KiB) + fsync`` rate of the temporary directory's disk (``TMPDIR``
picks it), the ceiling of one fsync per buy.  Run it from the repository
root::

    python -m scripts.bench_catalog                # full run, about 30 s
    python -m scripts.bench_catalog --smoke        # ~1 s of measuring, for CI

This is a benchmark, not a test: it asserts nothing about speed, and its
numbers depend on the machine, its disk and its load.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import uuid
from typing import Any

import treq
from twisted.copyright import version as twisted_version
from twisted.internet import task, threads
from twisted.internet.defer import Deferred, gatherResults

import scripts
from toystore.catalog.seed import TOYS
from toystore.envelope import ApiError, Unavailable
from toystore.measure import delta, fsync_rate, mean, percentile, scrape, table
from toystore.testing import connect, scratch
from toystore.wire import WireProtocol

NAMES = list(TOYS)
RUN = f"bench-{uuid.uuid4().hex[:12]}"  # makes this run's buy keys unique


def commit_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean batch size, mean and p50 commit time (ms) of the commits between two scrapes."""
    grown = delta(before, after)
    commits = grown.get("toystore_catalog_commit_seconds_count", 0.0)
    batches = grown.get("toystore_catalog_commit_batch_size_count", 0.0)
    if not commits or not batches:
        return {"commits": commits, **dict.fromkeys(("mean_batch", "mean_commit_ms", "p50_commit_ms"), float("nan"))}
    prefix = 'toystore_catalog_commit_seconds_bucket{le="'
    buckets = sorted((float(name[len(prefix) : -2]), n) for name, n in grown.items() if name.startswith(prefix))
    rank, lower, below, p50 = commits / 2, 0.0, 0.0, float("nan")
    for bound, cumulative in buckets:  # linear interpolation in the bucket holding the median
        if cumulative >= rank:
            p50 = lower if bound == float("inf") else lower + (bound - lower) * (rank - below) / (cumulative - below)
            break
        lower, below = bound, cumulative
    return {
        "commits": commits,
        "mean_batch": mean(grown, "toystore_catalog_commit_batch_size"),
        "mean_commit_ms": 1e3 * mean(grown, "toystore_catalog_commit_seconds"),
        "p50_commit_ms": 1e3 * p50,
    }


async def measure(
    reactor: Any, buys: WireProtocol, pinger: WireProtocol, concurrency: int, seconds: float, keys: Any, epoch: int
) -> dict[str, Any]:
    """Keep ``concurrency`` buys in flight for ``seconds`` while pinging every 50 ms; the raw figures."""
    latencies: list[float] = []
    pings: list[float] = []
    errors: list[str] = []
    deadline = reactor.seconds() + seconds

    async def worker() -> None:
        """Buy one item after another until the deadline, timing each call."""
        while reactor.seconds() < deadline:
            n = next(keys)
            fields = {"name": NAMES[n % len(NAMES)], "quantity": 1, "key": f"{RUN}-{n}", "epoch": epoch}
            started = reactor.seconds()
            try:
                await buys.call("buy", fields)
            except Unavailable:
                raise  # the catalog is gone or stuck: stop the benchmark
            except ApiError as e:  # out of stock, stale epoch...: counted, not timed
                errors.append(str(e))
                continue
            latencies.append(reactor.seconds() - started)

    async def ping() -> None:
        """Time one ping on the second connection."""
        started = reactor.seconds()
        await pinger.call("ping")
        pings.append(reactor.seconds() - started)

    pinging = task.LoopingCall(lambda: Deferred.fromCoroutine(ping()))
    pinging.clock = reactor
    pinged = pinging.start(0.05)
    started = reactor.seconds()  # elapsed includes the calls still in flight at the deadline
    try:
        await gatherResults([Deferred.fromCoroutine(worker()) for _ in range(concurrency)], consumeErrors=True)
    finally:
        pinging.stop()
        await pinged
    return {
        "rate": len(latencies) / (reactor.seconds() - started),
        "latencies": latencies,
        "pings": pings,
        "errors": errors,
    }


async def run_levels(reactor: Any, lines: int, http: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure every concurrency level against the catalog; one result row per level."""
    health = await treq.json_content(await treq.get(f"http://127.0.0.1:{http}/health", persistent=False))
    epoch = max(1, health["data"]["epoch"])  # 1 on a new catalog; a running one may have seen newer
    buys, pinger, keys = await connect(reactor, lines), await connect(reactor, lines), itertools.count()
    try:
        await measure(reactor, buys, pinger, max(args.concurrency), args.seconds / 3, keys, epoch)  # warm-up
        rows = []
        for c in args.concurrency:
            before = await scrape(http)
            runs = [await measure(reactor, buys, pinger, c, args.seconds, keys, epoch) for _ in range(args.repeats)]
            after = await scrape(http)
            latencies = [x for run in runs for x in run["latencies"]]
            pings = [x for run in runs for x in run["pings"]]
            errors = [x for run in runs for x in run["errors"]]
            rows.append(
                {
                    "concurrency": c,
                    "buys_per_s": statistics.median(run["rate"] for run in runs),
                    "samples": [run["rate"] for run in runs],
                    "buys": len(latencies),
                    "p50_ms": 1e3 * percentile(latencies, 0.5),
                    "p99_ms": 1e3 * percentile(latencies, 0.99),
                    "ping_p99_ms": 1e3 * percentile(pings, 0.99),
                    "pings": len(pings),
                    "errors": len(errors),
                    "first_error": errors[0] if errors else None,
                    **commit_figures(before, after),
                }
            )
            print(f"  C={c}: {rows[-1]['buys_per_s']:,.0f} buys/s", file=sys.stderr)
            if errors:
                print(f"  C={c}: {len(errors)} buys refused, first: {errors[0]}", file=sys.stderr)
        return rows
    finally:
        buys.transport.loseConnection()
        pinger.transport.loseConnection()


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The results as a plain, aligned text table."""
    header = ("concurrency", "buys/s", "p50 ms", "p99 ms", "mean batch", "mean commit ms", "ping p99 ms")
    cells = [
        (
            str(r["concurrency"]),
            f"{r['buys_per_s']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['mean_batch']:.1f}",
            f"{r['mean_commit_ms']:.2f}",
            f"{r['ping_p99_ms']:.2f}",
        )
        for r in rows
    ]
    return table(header, cells)


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line; ``--smoke`` overrides the sizes with small ones."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench_catalog", description="Durable buys per second of the toystore catalog."
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measurement (default 3)")
    parser.add_argument(
        "--concurrency",
        type=scripts.int_list,
        default=[1, 16, 64],
        help="buys in flight on the connection, comma-separated (default 1,16,64)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="measurements per level; the median is shown")
    parser.add_argument("--fsync-seconds", type=float, default=1.0, help="length of the fsync reference (default 1)")
    parser.add_argument("--lines-port", type=int, help="target the running catalog with this lines port...")
    parser.add_argument("--http-port", type=int, help="...and this HTTP port, instead of starting one")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    parser.add_argument("--smoke", action="store_true", help="a ~1 s run with small numbers, for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.repeats, args.concurrency, args.fsync_seconds = 0.3, 1, [1, 8], 0.2
    if args.seconds <= 0 or args.repeats < 1 or min(args.concurrency) < 1 or args.fsync_seconds <= 0:
        parser.error("--seconds, --repeats, --fsync-seconds and each --concurrency must be positive")
    if (args.lines_port is None) != (args.http_port is None):
        parser.error("--lines-port and --http-port go together")
    return args


async def main(reactor: Any, *argv: str) -> None:
    """Start a catalog (unless told of a running one), measure it, stop it, print the figures."""
    args = parse(list(argv))
    supervisor, directory = scratch(reactor, "bench-catalog-")  # killed and removed at the end, or on ^C
    try:
        if args.lines_port is None:
            store = await scripts.start_store(
                reactor, supervisor, directory, frontends=0, names=["catalog"], catalog={"initial_stock": 100_000_000}
            )
            lines, http = store.sites["catalog"].ports["lines"], store.sites["catalog"].ports["http"]
        else:
            lines, http = args.lines_port, args.http_port
        rows = await run_levels(reactor, lines, http, args)
        fsyncs = await threads.deferToThread(fsync_rate, str(directory), args.fsync_seconds)
    finally:
        await supervisor.stop_all()
    print(format_rows(rows))
    print(f"reference: {fsyncs:,.0f} fsync/s (write 4 KiB + fsync, one thread, in {tempfile.gettempdir()})")
    if args.json:
        meta = {
            "seconds": args.seconds,
            "repeats": args.repeats,
            "concurrency": args.concurrency,
            "target": "running" if args.lines_port else "started",
            "python": platform.python_version(),
            "twisted": twisted_version,
            "reactor": type(reactor).__name__,
            "cpus": os.cpu_count(),
        }
        with open(args.json, "w") as f:
            json.dump({"settings": meta, "results": rows, "fsync_per_s": fsyncs}, f, indent=2)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
