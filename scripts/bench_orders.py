"""
Benchmark of durable orders per second through the leader of three real
order replicas.

It starts, with the store harness (:class:`toystore.testing.Store`: a
cluster file with every listener on a free loopback port, data in a new
temporary directory, 100,000,000 of every toy), the
catalog (``twistd -n toystore-catalog``) and three replicas (``twistd -n
toystore-order --id N``), and no front-end: the benchmark plays its part, so
that it measures the replicas alone.  It waits until the replicas have
elected replica 3 (the highest id leads once all are up) and both followers
are in its in-sync set.

C clients, each on its OWN wire connection to the leader's lines port, loop
``order`` calls (1 item, toys in rotation, a unique key each) for
``--seconds``, ``--repeats`` times per client count C.  An order is answered
once its record is on disk on a majority, two replicas (one fsync per log write batch on
each, group commit up to ``order.max_batch`` writes), after the catalog's own
durable buy.

Per client count: median orders/s; p50 and p99 call latency (pooled over the
repeats); mean fsync batch size and mean fsync time of the leader's log
(deltas of its ``/metrics`` histograms; the JSON adds the followers').  At
the end it waits until every replica has the same log on disk and compares
the three ``orders.log`` files byte for byte.  A full run does all of it
twice, with a fresh cluster each time: ``order.max_batch`` 1000 (group
commit) and 1 (one fsync per write), so that the effect of group commit is
visible.  As a reference: the raw ``write(4 KiB) + fsync`` rate of the
temporary directory's disk (``TMPDIR`` picks it).  Run it from the
repository root::

    python -m scripts.bench_orders                 # full run, max_batch 1000 vs 1, about 45 s
    python -m scripts.bench_orders --max-batch 64  # one setting only
    python -m scripts.bench_orders --smoke         # ~1 s of measuring, for CI

This is a benchmark, not a test: it asserts nothing about speed, and its
numbers depend on the machine, its disk and its load.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from twisted.copyright import version as twisted_version
from twisted.internet import task, threads
from twisted.internet.defer import Deferred, DeferredList

import scripts
from toystore.catalog.seed import TOYS
from toystore.envelope import ApiError
from toystore.measure import delta, fsync_rate, mean, percentile, scrape, table
from toystore.order.journal import Log, scan
from toystore.supervise import Supervisor
from toystore.testing import REPLICAS, Store, connect, scratch, sleep
from toystore.wire import ConnectionDropped, NotConnected, WireProtocol

NAMES = list(TOYS)
RUN = f"bench-{uuid.uuid4().hex[:12]}"  # makes this run's order keys unique
LEADER = 3
POLL = 0.05  # seconds between two looks while waiting for a state


async def all_metrics(store: Store) -> dict[int, dict[str, float]]:
    """Every replica's ``/metrics``, by replica id."""
    return {i: await scrape(store.sites[f"order-{i}"].ports["http"]) for i in REPLICAS}


def fsync_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Number of fsyncs, mean batch size and mean fsync time (ms) of the log writes between two scrapes."""
    grown = delta(before, after)
    return {
        "fsyncs": grown.get("toystore_order_fsync_seconds_count", 0.0),
        "mean_batch": mean(grown, "toystore_order_fsync_batch_size"),
        "mean_fsync_ms": 1e3 * mean(grown, "toystore_order_fsync_seconds"),
    }


async def elect(reactor: Any, store: Store, timeout: float = 15.0) -> None:
    """Wait until replica 3 serves and both followers are in its in-sync set."""
    await store.serving(timeout, expected=LEADER)
    followers = sorted(i for i in REPLICAS if i != LEADER)
    deadline = reactor.seconds() + timeout
    while (leader := await store.call(f"order-{LEADER}", "status"))["in_sync"] != followers:
        if reactor.seconds() > deadline:
            raise SystemExit(f"the followers did not get in sync within {timeout} s: {leader}")
        await sleep(reactor, POLL)


async def measure(
    reactor: Any, clients: list[WireProtocol], seconds: float, keys: Any, dropped: list[str]
) -> dict[str, Any]:
    """Each client loops orders for ``seconds``; the raw figures (an error is counted, a drop stops all)."""
    latencies: list[float] = []
    errors: list[str] = []
    deadline = reactor.seconds() + seconds

    async def client(connection: WireProtocol) -> None:
        """Order one item after another on one connection until the deadline, timing each call."""
        while reactor.seconds() < deadline and not dropped:
            n = next(keys)
            fields = {"name": NAMES[n % len(NAMES)], "quantity": 1, "key": f"{RUN}-{n}"}
            started = reactor.seconds()
            try:
                await connection.call("order", fields)
            except (ConnectionDropped, NotConnected) as e:  # the leader is gone: stop the benchmark
                dropped.append(str(e))
                return
            except ApiError as e:  # no majority in time, catalog refusal, timeout...: counted, not timed
                errors.append(f"{e.code} {e.message}")
                continue
            latencies.append(reactor.seconds() - started)

    started = reactor.seconds()  # elapsed includes the calls still in flight at the deadline
    await DeferredList([Deferred.fromCoroutine(client(c)) for c in clients], consumeErrors=True)
    if dropped:
        raise SystemExit(f"the benchmark stopped: {dropped[0]}")
    return {"rate": len(latencies) / (reactor.seconds() - started), "latencies": latencies, "errors": errors}


async def run_levels(
    reactor: Any, store: Store, max_batch: int, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], int]:
    """Measure every client count against the leader; one result row per count, and the orders acknowledged."""
    leader = store.sites[f"order-{LEADER}"]
    clients = [
        await connect(reactor, leader.ports["lines"], store.cluster.wire, leader.host) for _ in range(max(args.clients))
    ]
    keys, dropped, acknowledged = itertools.count(), [], 0
    try:
        warm = await measure(reactor, clients, args.seconds / 3, keys, dropped)
        acknowledged += len(warm["latencies"])
        rows = []
        for c in args.clients:
            before = await all_metrics(store)
            runs = [await measure(reactor, clients[:c], args.seconds, keys, dropped) for _ in range(args.repeats)]
            after = await all_metrics(store)
            latencies = [x for run in runs for x in run["latencies"]]
            errors = [x for run in runs for x in run["errors"]]
            acknowledged += len(latencies)
            disk = {i: fsync_figures(before[i], after[i]) for i in REPLICAS}
            rows.append(
                {
                    "max_batch": max_batch,
                    "clients": c,
                    "orders_per_s": statistics.median(run["rate"] for run in runs),
                    "samples": [run["rate"] for run in runs],
                    "orders": len(latencies),
                    "p50_ms": 1e3 * percentile(latencies, 0.5),
                    "p99_ms": 1e3 * percentile(latencies, 0.99),
                    "errors": len(errors),
                    "first_error": errors[0] if errors else None,
                    **disk[LEADER],
                    "followers": {str(i): disk[i] for i in REPLICAS if i != LEADER},
                }
            )
            print(f"  max_batch={max_batch} C={c}: {rows[-1]['orders_per_s']:,.0f} orders/s", file=sys.stderr)
            if errors:
                print(
                    f"  max_batch={max_batch} C={c}: {len(errors)} orders refused, first: {errors[0]}", file=sys.stderr
                )
        return rows, acknowledged
    finally:
        for connection in clients:
            connection.transport.loseConnection()


async def check_logs(reactor: Any, store: Store, timeout: float = 30.0) -> dict[str, Any]:
    """
    Wait until every replica has its whole log on disk and all have the same
    length, then compare the three log files byte for byte.
    """
    deadline = reactor.seconds() + timeout
    while True:
        statuses = {i: await store.call(f"order-{i}", "status") for i in REPLICAS}
        lengths = {s["length"] for s in statuses.values()} | {s["durable"] for s in statuses.values()}
        if len(lengths) == 1 or reactor.seconds() > deadline:
            break
        await sleep(reactor, POLL)
    logs = await threads.deferToThread(store.logs)
    orders = Log(scan(store.directory / f"order-{LEADER}" / "orders.log").lines).keys
    return {
        "identical": len(set(logs.values())) == 1,
        "caught_up": len(lengths) == 1,
        "statuses": {str(i): s for i, s in statuses.items()},
        "bytes": {str(i): len(log) for i, log in logs.items()},
        "sha256": {str(i): hashlib.sha256(log).hexdigest() for i, log in logs.items()},
        "records": statuses[LEADER]["length"],
        "orders_in_log": len(orders),
        "numbers_without_gaps": sorted(orders.values()) == list(range(len(orders))),
    }


async def run_setting(reactor: Any, supervisor: Supervisor, directory: Path, max_batch: int, args: Any) -> Any:
    """Start a fresh cluster with ``max_batch``, measure it, check its logs, stop it; the figures."""
    directory.mkdir()
    first = len(supervisor.children)  # the children of earlier settings have been stopped already
    store = await scripts.start_store(
        reactor,
        supervisor,
        directory,
        frontends=0,
        wire={"reconnect_initial": 0.05, "reconnect_max": 0.5},
        catalog={"initial_stock": 100_000_000},
        order={"max_batch": max_batch},
    )
    try:
        await elect(reactor, store)
        rows, acknowledged = await run_levels(reactor, store, max_batch, args)
        logs_check = await check_logs(reactor, store)
        crashed = [child.name for child in supervisor.children[first:] if not child.running]
    finally:
        await store.stop()
    return {
        "max_batch": max_batch,
        "rows": rows,
        "acknowledged": acknowledged,
        "logs": logs_check,
        "crashed": crashed,
        "exit_status": {child.name: child.status for child in supervisor.children[first:]},
    }


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The results as a plain, aligned text table."""
    header = ("max_batch", "clients", "orders/s", "p50 ms", "p99 ms", "mean batch", "mean fsync ms", "errors")
    cells = [
        (
            str(r["max_batch"]),
            str(r["clients"]),
            f"{r['orders_per_s']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['mean_batch']:.1f}",
            f"{r['mean_fsync_ms']:.2f}",
            str(r["errors"]),
        )
        for r in rows
    ]
    return table(header, cells)


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line; ``--smoke`` overrides the sizes with small ones."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench_orders",
        description="Durable orders per second through the toystore order leader.",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measurement (default 3)")
    parser.add_argument(
        "--clients",
        type=scripts.int_list,
        default=[1, 16],
        help="client connections ordering at once, comma-separated (default 1,16)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="measurements per client count; the median is shown")
    parser.add_argument("--max-batch", type=int, help="run only this order.max_batch (default: compare 1000 and 1)")
    parser.add_argument(
        "--compare-group-commit",
        action="store_true",
        help="run max_batch (default 1000) and 1 on fresh clusters (the default of a full run)",
    )
    parser.add_argument("--fsync-seconds", type=float, default=1.0, help="length of the fsync reference (default 1)")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data directory (logs, processes' output)")
    parser.add_argument("--smoke", action="store_true", help="a ~1 s run with small numbers and no comparison, for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.repeats, args.clients, args.fsync_seconds = 0.3, 1, [1, 4], 0.2
    if args.seconds <= 0 or args.repeats < 1 or min(args.clients) < 1 or args.fsync_seconds <= 0:
        parser.error("--seconds, --repeats, --fsync-seconds and each --clients must be positive")
    if args.max_batch is not None and args.max_batch < 1:
        parser.error("--max-batch must be at least 1")
    compare = args.compare_group_commit or (args.max_batch is None and not args.smoke)
    first = 1000 if args.max_batch is None else args.max_batch
    args.settings = list(dict.fromkeys([first, 1])) if compare else [first]
    return args


async def main(reactor: Any, *argv: str) -> None:
    """Start a fresh cluster per max_batch setting, measure it, stop it, print the figures."""
    args = parse(list(argv))
    supervisor, directory = scratch(reactor, "bench-orders-", keep=lambda: args.keep)
    runs = []
    try:
        for max_batch in args.settings:
            runs.append(await run_setting(reactor, supervisor, directory / f"max-batch-{max_batch}", max_batch, args))
        fsyncs = await threads.deferToThread(fsync_rate, str(directory), args.fsync_seconds)
    finally:
        await supervisor.stop_all()
        if args.keep:  # otherwise scratch() removes it when the reactor stops
            print(f"kept {directory}", file=sys.stderr)
    print(format_rows([row for run in runs for row in run["rows"]]))
    for run in runs:
        check = run["logs"]
        print(
            f"logs identical: {'yes' if check['identical'] else 'no'} (max_batch {run['max_batch']}: "
            f"{check['records']:,} records, {check['orders_in_log']:,} orders, "
            f"{', '.join(f'{n:,}' for n in check['bytes'].values())} bytes)"
        )
        if not check["caught_up"]:
            print(f"  the replicas did not reach the same length: {check['statuses']}", file=sys.stderr)
        if run["crashed"]:
            print(f"  exited during the run: {', '.join(run['crashed'])}", file=sys.stderr)
    print(f"reference: {fsyncs:,.0f} fsync/s (write 4 KiB + fsync, one thread, in {tempfile.gettempdir()})")
    if args.json:
        meta = {
            "seconds": args.seconds,
            "repeats": args.repeats,
            "clients": args.clients,
            "max_batch": args.settings,
            "replicas": len(REPLICAS),
            "leader": LEADER,
            "python": platform.python_version(),
            "twisted": twisted_version,
            "reactor": type(reactor).__name__,
            "cpus": os.cpu_count(),
        }
        results = [row for run in runs for row in run["rows"]]
        clusters = [{k: v for k, v in run.items() if k != "rows"} for run in runs]
        with open(args.json, "w") as f:
            json.dump(
                {
                    "settings": meta,
                    "results": results,
                    "clusters": clusters,
                    "logs_identical": all(run["logs"]["identical"] for run in runs),
                    "fsync_per_s": fsyncs,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
