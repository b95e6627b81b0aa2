"""
Throughput and latency of the public API under wrk, against the ceiling of
twisted.web on this machine.

The store is a fresh cluster on free loopback ports (a new temporary
directory, 100,000,000 of every toy so orders never run dry, other knobs as
packaged: three replicas, every log write fsynced, an order acknowledged
once two of them hold it), started with the store harness as ``toystore
up`` does; or ``--url`` names a running one.  The ceiling is a bare
twisted.web server (``scripts/bench/ceiling.py``) in one process, like the
front-end, that answers every request with the bytes of a cached product
reply and the same headers: what the stack itself can do here, with no store
behind it.

wrk (``scripts/bench/wrk.lua`` builds the requests and reports the figures)
drives each case in turn, at 1, 5, 16 and 64 keep-alive connections,
``--seconds`` each:

* ceiling: ``GET /`` of the bare server (measured before and after the
  cases; the table shows the mean);
* bare forwarder: ``GET /products/Tux`` of a bare twisted.web server that
  asks a back end process for it over one persistent JSON-lines connection
  (``scripts/bench/forwarder.py``): the least a front-end that asks another
  process can do, the reference for the uncached and order-query cases;
* product (cached): ``GET /products/Tux``, every query a cache hit;
* order: ``POST /orders`` (1 item, toys in rotation), a distinct
  ``Idempotency-Key`` per request;
* order query: ``GET /orders/<n>`` over numbers that exist (placed before);
* product (uncached): ``GET /products/Tux`` through a front-end restarted
  with ``--no-cache`` (the same catalog and replicas), every query a round
  trip to the catalog.

Per point: requests per second (answers that are not errors), p50 and p99
latency (wrk's, from ``done()`` in the Lua script), the ratio to the
ceiling at the same number of connections, the CPU share of the process
that serves HTTP (front-end or ceiling; the JSON has every process's), and
wrk's error count, and (a store of the run's own) how many epochs the
replicas began during the point: an election or a handover each, which the
load must not cause.  Then the targets, met or not.

The ratio: on a shared machine the speed of the CPUs moves by half from one
minute to the next, so a ceiling measured once before the cases compares
runs minutes apart.  With the ceiling among the cases, each point of the
other cases is measured in ``--rounds`` rounds (default 3), each a run of
the ceiling and then one of the case, ``--seconds / --rounds`` each; the
point's ratio is the median of its rounds' ratios, its rate and CPU shares
over all its rounds, its latencies the median round's.  ``--rounds 1``
measures each point in one run against the mean of the ceiling's runs
before and after every case.

``--rss [SECONDS]`` adds a sustained load (default 300 s, 16 connections,
queries, orders and order queries in turn) during which every process's
resident memory (``VmRSS``) is sampled: it reports each at the start, after
a tenth of the run (warm) and at the end.

``--feeds N`` measures the store's cases (cached, order, order query,
uncached) twice, the second time with N pages of the live dashboard open
(``/dashboard/events``, the last of them never reading:
``scripts/bench/feeds.py``); those rows are named with ", N feeds".

``--profile DIR`` samples every process with py-spy (``pip install py-spy``)
during each case's 16-connection point: one raw profile per process and
case in DIR, and each one's hot spots in the JSON
(``python -m scripts.bench.hotspots`` prints them).  It slows the store: take the
table from a run without it.

From the repository root (wrk is a Debian package: ``apt-get install wrk``)::

    python -m scripts.bench                          # the table, about 5 minutes
    python -m scripts.bench --rss                    # and 5 minutes of memory watching
    python -m scripts.bench --cases cached --connections 16 --seconds 60   # one case, one point
    python -m scripts.bench --connections 16 --profile /tmp/prof           # py-spy on every process
    python -m scripts.bench --url http://127.0.0.1:8000   # a running store (cache on)
    python -m scripts.bench --smoke --out /tmp/b.json     # a few seconds, for CI

The JSON goes to ``--out`` (default ``docs/performance/bench.json``).  This
is a benchmark, not a test: it asserts nothing about speed, and its numbers
depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import treq
from twisted.copyright import version as twisted_version
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue

import scripts
from scripts import ROOT
from scripts.bench import hotspots
from scripts.bench.feeds import close_feeds, open_feeds
from scripts.bench.procs import cpu_all, rss_kib, running
from scripts.bench.references import CASE_PROCESSES, REFERENCES, start_references
from scripts.bench.results import CASES, mean_ceiling, merge_rounds, report, targets, with_ratios
from toystore.catalog.seed import TOYS
from toystore.supervise import Child, ChildFailed, Supervisor
from toystore.testing import Store, scratch, sleep

LUA = Path(__file__).resolve().parent / "wrk.lua"
STOCK = 100_000_000
WRK_TIMEOUT = 10  # seconds before wrk counts a request as timed out
ORDER_NAMES = list(TOYS)[:5]  # orders rotate over these
INSTALL = (
    "scripts.bench: wrk is not installed (or not at --wrk).  It is a Debian package:\n"
    "    apt-get install wrk        (sudo apt-get install wrk; on macOS: brew install wrk)\n"
)


async def swap_frontend(store: Store) -> str:
    """Stop the store's front-end and start it again with ``--no-cache`` on the same port; its URL."""
    try:
        await store.restart("frontend", "--no-cache")
    except ChildFailed as e:
        raise SystemExit(f"{e}:\n{e.output}") from None
    await store.elected()
    return store.url


# -- wrk ----------------------------------------------------------------------------


async def wrk(reactor: Any, args: argparse.Namespace, url: str, connections: int, seconds: int, *mode: str) -> dict:
    """One wrk run; the figures its Lua ``done()`` printed."""
    argv = [
        f"-t{min(args.threads, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={WRK_TIMEOUT}s",
        f"-s{LUA}",
        url,
        "--",
        *mode,
    ]
    out, err, code = await getProcessOutputAndValue(args.wrk, argv, env=dict(os.environ), reactor=reactor)
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith("wrk-result "):
            return json.loads(line[len("wrk-result ") :])
    raise SystemExit(f"wrk {' '.join(argv)} exited {code} without figures:\n{out.decode()}{err.decode()}")


async def epochs(store: Store | None) -> dict[int, int] | None:
    """Each replica's epoch (those that answer), or None for a store not of this run (``--url``)."""
    if store is None:
        return None
    return {i: status["epoch"] for i, status in (await store.statuses()).items()}


def elections_between(before: dict[int, int] | None, after: dict[int, int] | None) -> int | None:
    """How many epochs began between two looks (an election or a handover each): the newest's rise."""
    if before is None or after is None or not before or not after:
        return None
    return max(after.values()) - max(before.values())


async def point(
    reactor: Any,
    args: argparse.Namespace,
    case: str,
    url: str,
    connections: int,
    pids: dict[str, int],
    store: Store | None,
    *mode: str,
    seconds: int | None = None,
) -> dict[str, Any]:
    """Measure one case at one number of connections (for ``args.seconds``): one row of results."""
    profiling = args.profile and connections == args.profile_connections
    if profiling:
        profiles = Deferred.fromCoroutine(profile(reactor, args, case, pids))
    first = await epochs(store)
    before, started = cpu_all(pids), reactor.seconds()
    figures = await wrk(reactor, args, url, connections, seconds or args.seconds, *mode)
    after, wall = cpu_all(pids), reactor.seconds() - started
    elections = elections_between(first, await epochs(store))
    measured = figures["duration_us"] / 1e6
    errors = figures["errors"]
    good = figures["requests"] - errors["status"]
    row = {
        "case": case,
        "connections": connections,
        "req_per_s": good / measured if measured else 0.0,
        "requests": figures["requests"],
        "seconds": measured,
        "p50_ms": figures["p50_us"] / 1e3,
        "p90_ms": figures["p90_us"] / 1e3,
        "p99_ms": figures["p99_us"] / 1e3,
        "max_ms": figures["max_us"] / 1e3,
        "mean_ms": figures["mean_us"] / 1e3,
        "errors": sum(errors.values()),
        "wrk_errors": errors,
        "cpu": {name: (after[name] - before[name]) / wall for name in after if name in before},
        "elections": elections,
    }
    if profiling:
        row["profiles"] = await profiles
    print(
        f"  {case} c={connections}: {row['req_per_s']:,.0f}/s p50 {row['p50_ms']:.2f} ms "
        f"p99 {row['p99_ms']:.2f} ms errors {row['errors']}" + (f" elections {elections}" if elections else ""),
        file=sys.stderr,
    )
    return row


async def paired_point(
    reactor: Any,
    args: argparse.Namespace,
    case: str,
    url: str,
    connections: int,
    pids: dict[str, int],
    store: Store | None,
    ceiling_url: str,
    *mode: str,
) -> dict[str, Any]:
    """
    Measure one case at one number of connections in ``args.rounds``
    rounds, each a run of the ceiling then one of the case, of
    ``args.seconds / args.rounds`` each: on a machine whose speed moves
    from one minute to the next, each round's ratio compares runs seconds
    apart.  One row: the rounds merged (:func:`~scripts.bench.results.merge_rounds`).
    """
    share = max(1, round(args.seconds / args.rounds))
    rounds = []
    for _ in range(args.rounds):
        top = await point(reactor, args, "ceiling", ceiling_url, connections, pids, None, "get", seconds=share)
        rounds.append((top, await point(reactor, args, case, url, connections, pids, store, *mode, seconds=share)))
    return merge_rounds(rounds)


async def profile(reactor: Any, args: argparse.Namespace, case: str, pids: dict[str, int]) -> dict[str, Any]:
    """
    Sample every process with py-spy while a point runs (all but its last
    second); write each profile to ``args.profile`` and return its hot spots.
    """
    slug = case.replace(" ", "-").replace("(", "").replace(")", "")
    directory = Path(args.profile)
    directory.mkdir(parents=True, exist_ok=True)
    seconds = str(max(1, args.seconds - 1))
    runs = {}
    own = CASE_PROCESSES.get(case)  # else the store's
    for name, pid in pids.items():
        if not (name in own if own else name not in REFERENCES):
            continue
        path = directory / f"{slug}.{name}.txt"
        argv = ["record", "--pid", str(pid), "--duration", seconds, "--rate", "100", "--nonblocking"]
        argv += ["--function", "--format", "raw", "--output", str(path)]
        runs[name] = (path, getProcessOutputAndValue(args.py_spy, argv, env=dict(os.environ), reactor=reactor))
    found = {}
    for name, (path, running_spy) in runs.items():
        out, err, code = await running_spy
        if code != 0 or not path.exists():
            print(f"  py-spy on {name} failed ({code}): {err.decode(errors='replace')}", file=sys.stderr)
            continue
        own, total, samples = hotspots.read(path.read_text().splitlines())
        found[name] = {
            "file": str(path),
            "samples": samples,
            "own": [[f, n / samples] for f, n in own.most_common(args.profile_top)],
            "total": [[f, n / samples] for f, n in total.most_common(args.profile_top)],
        }
    return found


async def orders_placed(url: str) -> int:
    """Place one order and return how many exist (numbers run 0 .. n-1 without gaps)."""
    body = {"name": ORDER_NAMES[0], "quantity": 1}
    response = await treq.post(f"{url}/orders", json=body, persistent=False, timeout=30)
    reply = await response.json()
    if response.code != 200:
        raise SystemExit(f"could not place an order at {url}: {response.code} {reply}")
    return reply["data"]["order_number"] + 1


async def product_reply(url: str, name: str) -> bytes:
    """The bytes of the store's reply to ``GET /products/<name>``."""
    try:
        response = await treq.get(f"{url}/products/{name}", persistent=False, timeout=30)
        body = await treq.content(response)
    except Exception as e:  # refused, timed out: no store there
        raise SystemExit(f"GET {url}/products/{name}: {type(e).__name__}: {e}") from None
    if response.code != 200:
        raise SystemExit(f"GET {url}/products/{name}: {response.code} {body!r}")
    return body


# -- memory -------------------------------------------------------------------------


async def rss_run(reactor: Any, args: argparse.Namespace, url: str, pids: dict[str, int], count: int) -> dict[str, Any]:
    """A sustained mixed load for ``args.rss`` s, each process's RSS sampled all along."""
    interval = max(1.0, args.rss / 60)
    samples: list[dict[str, Any]] = []

    def sample() -> None:
        row: dict[str, Any] = {"t": reactor.seconds() - started}
        for name, pid in pids.items():
            try:
                row[name] = rss_kib(pid)
            except OSError:
                row[name] = None
        samples.append(row)

    started = reactor.seconds()
    run = f"rss-{uuid.uuid4().hex[:12]}"
    load = Deferred.fromCoroutine(
        wrk(reactor, args, url, args.rss_connections, int(args.rss), "mixed", run, str(count), *ORDER_NAMES)
    )
    sample()
    while not load.called:
        await sleep(reactor, interval)
        if not load.called:
            sample()
    figures = await load
    warm = next((s for s in samples if s["t"] >= args.rss / 10), samples[-1])
    processes = {
        name: {
            "pid": pid,
            "start_kib": samples[0][name],
            "warm_kib": warm[name],
            "end_kib": samples[-1][name],
            "max_kib": max((s[name] for s in samples if s[name] is not None), default=None),
        }
        for name, pid in pids.items()
    }
    return {
        "seconds": args.rss,
        "connections": args.rss_connections,
        "requests": figures["requests"],
        "req_per_s": figures["requests"] / (figures["duration_us"] / 1e6),
        "errors": sum(figures["errors"].values()),
        "warm_at_s": warm["t"],
        "end_at_s": samples[-1]["t"],
        "processes": processes,
        "samples": samples,
    }


# -- the run ------------------------------------------------------------------------


async def run(reactor: Any, args: argparse.Namespace, supervisor: Supervisor, directory: Path) -> dict[str, Any]:
    """Start what is needed, measure every case asked for, return everything for the JSON."""
    store: Store | None = None
    swapped: list[Child] = []  # the front-end stopped on purpose for the uncached case
    if args.url:
        url = args.url.rstrip("/")
    else:
        store = await scripts.start_store(reactor, supervisor, directory / "store", catalog={"initial_stock": STOCK})
        url = store.url
    body = await product_reply(url, args.product)
    ceiling_url, forwarder_url = await start_references(reactor, supervisor, directory, body)
    pids = running(supervisor)
    if pids:
        print(f"processes: {', '.join(f'{name} {pid}' for name, pid in pids.items())}", file=sys.stderr)
    cases, rows, ceiling_runs = args.cases, [], []
    run_id = f"bench-{uuid.uuid4().hex[:12]}"
    product_url = f"{url}/products/{args.product}"

    async def each(case: str, target: str, *mode: str) -> list[dict[str, Any]]:
        if args.warmup:
            await wrk(reactor, args, target, 16, args.warmup, *mode)
        own = store if target.startswith(url) else None  # the references have no replicas
        if args.rounds > 1 and "ceiling" in cases and case != "ceiling":
            return [
                await paired_point(reactor, args, case, target, c, pids, own, ceiling_url, *mode)
                for c in args.connections
            ]
        return [await point(reactor, args, case, target, c, pids, own, *mode) for c in args.connections]

    if "ceiling" in cases:
        ceiling_runs += await each("ceiling", ceiling_url, "get")
    if "forwarder" in cases:
        rows += await each("bare forwarder", f"{forwarder_url}/products/{args.product}", "get")
    feeds_seen: list[dict[str, Any]] = []
    variants = [("", 0)] + ([(f", {args.feeds} feeds", args.feeds)] if args.feeds else [])

    async def with_feeds(target: str, n: int, measure: Any) -> list[dict[str, Any]]:
        """``measure()`` with ``n`` dashboard pages open on the front-end at ``target`` (none: as it is)."""
        feeds = await open_feeds(reactor, target, n) if n else []
        try:
            return await measure()
        finally:
            if feeds:
                feeds_seen.append({"front_end": target, **close_feeds(feeds)})

    count = 0
    for suffix, n in variants:

        async def store_cases(suffix: str = suffix) -> list[dict[str, Any]]:
            nonlocal count
            found = []
            if "cached" in cases:
                found += await each(f"product (cached){suffix}", product_url, "get")
            if "order" in cases:
                found += await each(f"order{suffix}", url, "order", f"{run_id}{suffix}", *ORDER_NAMES)
            if ("order-query" in cases or args.rss) and not count:
                count = await orders_placed(url)
                if count < 1000:  # too few to spread the reads over: place some
                    await wrk(reactor, args, url, 16, 2, "order", f"{run_id}-fill", *ORDER_NAMES)
                    count = await orders_placed(url)
            if "order-query" in cases:
                found += await each(f"order query{suffix}", url, "order-query", str(count))
            return found

        rows += await with_feeds(url, n, store_cases)
    store_pids = {name: pid for name, pid in running(supervisor).items() if name not in REFERENCES}
    rss = await rss_run(reactor, args, url, store_pids, count) if args.rss else None
    if "uncached" in cases:
        uncached_url = (args.uncached_url or "").rstrip("/") or None
        if store is not None:
            swapped = [c for c in supervisor.children if c.name == "frontend"]
            uncached_url = await swap_frontend(store)
            pids = running(supervisor)
            print(f"processes: {', '.join(f'{name} {pid}' for name, pid in pids.items())}", file=sys.stderr)
        if uncached_url:
            for suffix, n in variants:
                target = f"{uncached_url}/products/{args.product}"
                rows += await with_feeds(
                    uncached_url,
                    n,
                    lambda suffix=suffix, target=target: each(f"product (uncached){suffix}", target, "get"),
                )
        else:
            print("product (uncached): not measured (give --uncached-url with --url)", file=sys.stderr)
    if "ceiling" in cases and args.ceiling_runs > 1:
        ceiling_runs += await each("ceiling", ceiling_url, "get")
    ceiling = {c: mean_ceiling(ceiling_runs, c) for c in args.connections} if ceiling_runs else {}
    rows = with_ratios([*ceiling.values(), *rows], ceiling)
    exited = [child.name for child in supervisor.children if not child.running and child not in swapped]
    return {
        "url": url,
        "body": body.decode("utf-8", "replace"),
        "results": rows,
        "ceiling_runs": ceiling_runs,
        "targets": targets(rows),
        "rss": rss,
        "order_numbers": count,
        "feeds": feeds_seen,
        "exited": exited,
    }


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line; ``--smoke`` overrides the sizes with small ones; no wrk exits 2."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench", description="Throughput of the toystore public API under wrk, and its ceiling."
    )
    parser.add_argument("--seconds", type=int, default=10, help="length of each point, whole seconds (default 10)")
    parser.add_argument(
        "--connections",
        type=scripts.int_list,
        default=[1, 5, 16, 64],
        help="keep-alive connections of each point, comma-separated (default 1,5,16,64)",
    )
    parser.add_argument(
        "--cases",
        type=lambda s: [] if s == "none" else s.split(","),
        default=list(CASES),
        help=f"cases to measure, comma-separated, or none (default {','.join(CASES)})",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads, at most one per connection (default 1)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of load before each case, unmeasured (default 2)"
    )
    parser.add_argument("--ceiling-runs", type=int, default=2, help="ceiling measurements: 1 before, 2 also after")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs of each case's point, each after a run of the ceiling; the ratio is their median (default 3)",
    )
    parser.add_argument(
        "--rss",
        type=float,
        nargs="?",
        const=300.0,
        default=0.0,
        metavar="SECONDS",
        help="also watch every process's memory under a sustained load of SECONDS (default 300)",
    )
    parser.add_argument(
        "--feeds", type=int, default=0, help="measure the store's cases again with this many dashboard pages open"
    )
    parser.add_argument("--rss-connections", type=int, default=16, help="connections of the --rss load (default 16)")
    parser.add_argument("--url", help="measure the running store at URL (cache on) instead of starting one")
    parser.add_argument("--uncached-url", help="with --url: a store whose front-end runs --no-cache")
    parser.add_argument("--product", default="Tux", help="the toy the product queries ask for (default Tux)")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk", help="the wrk executable (default: on PATH)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance" / "bench.json"), help="JSON file")
    parser.add_argument("--profile", metavar="DIR", help="sample every process with py-spy, into DIR (slows it)")
    parser.add_argument("--profile-connections", type=int, default=16, help="the point profiled (default 16)")
    parser.add_argument("--profile-top", type=int, default=15, help="hot spots kept in the JSON (default 15)")
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    parser.add_argument("--py-spy", default=spy, help="the py-spy executable (default: on PATH or beside Python)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory (logs, processes' output)")
    parser.add_argument("--smoke", action="store_true", help="1 s points at 1 and 16 connections, for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.connections, args.warmup, args.ceiling_runs, args.rounds = 1, [1, 16], 0, 1, 1
        args.rss = args.rss or 2.0
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}: choose from {', '.join(CASES)}")
    if args.seconds < 1 or min(args.connections) < 1 or args.threads < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error("--seconds, --connections, --threads and --rounds must be at least 1, --warmup at least 0")
    if args.profile:
        args.rounds = 1  # one profile per case and process
    if args.rss and (args.rss < 1 or args.url):
        parser.error("--rss needs at least 1 s and a store of the script's own (not --url)")
    if not (shutil.which(args.wrk) or os.access(args.wrk, os.X_OK)):
        parser.exit(2, INSTALL)
    if args.profile and not (shutil.which(args.py_spy) or os.access(args.py_spy, os.X_OK)):
        parser.exit(2, "scripts.bench: --profile needs py-spy: pip install py-spy\n")
    return args


async def main(reactor: Any, *argv: str) -> None:
    """Measure, stop everything, print the table, write the JSON."""
    args = parse(list(argv))
    supervisor, directory = scratch(reactor, "bench-", keep=lambda: args.keep)
    try:
        results = await run(reactor, args, supervisor, directory)
    finally:
        await supervisor.stop_all()
        if args.keep:  # otherwise scratch() removes it when the reactor stops
            print(f"kept {directory}", file=sys.stderr)
    report(results["results"], results["targets"], results["rss"])
    if results["exited"]:
        print(f"  exited during the run: {', '.join(results['exited'])}", file=sys.stderr)
    settings = {
        key: getattr(args, key)
        for key in (
            "seconds",
            "connections",
            "cases",
            "threads",
            "warmup",
            "ceiling_runs",
            "rounds",
            "rss",
            "rss_connections",
            "feeds",
        )
    }
    settings.update(
        store="own" if not args.url else args.url,
        initial_stock=STOCK if not args.url else None,
        wrk=args.wrk,
        python=platform.python_version(),
        twisted=twisted_version,
        reactor=type(reactor).__name__,
        cpus=os.cpu_count(),
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"settings": settings, **results}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
