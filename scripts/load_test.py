"""
The load test of the evaluation: latency per request type against the buy
probability p, with the front-end's product cache on and then off, and how
the LRU cache replaces its entries under that load.

Each mode gets a fresh store (a new temporary directory, free loopback ports,
every knob as packaged: 100 of each toy, restocked to 100 every 10 s once
sold out, a cache of 10 of the 15 toys) started with the store harness
(:class:`toystore.testing.Store`) like the end-to-end tests: catalog,
three order replicas, front-end (``--no-cache`` in the second mode), then
``GET /leader`` until its first election is over.  On it, for each p of
``--p``, :func:`toystore.loadgen.run` drives ``--clients`` keep-alive
shoppers of ``--iterations`` iterations each (query a random toy; if some
are left, buy 1 to 5 with probability p; at the end read back every order).
Between two runs the script waits ``--restock-wait`` seconds (one restock
interval by default) so that toys sold out by one run are back for the next.
This process's garbage collector is off during a run (and run between two):
a full collection here paused all the clients at once for some 40 ms, which
is no latency of the store.

While the cache-on runs go, ``GET /cache`` is polled every ``--cache-poll``
seconds.  From consecutive polls :func:`lru_history` derives when each toy
was cached and labels each departure from the counters: of the keys gone
between two polls, the ``evictions`` delta least recently used ones (in the
earlier poll's order) count as evicted and the rest as invalidated (all as
cleared if ``clears`` moved).  This is an approximation: an entry that left
and came back between two polls is not seen (the JSON counts these as
``unseen``), and the LRU order may have changed between the polls.

Outputs in ``--out``: ``latency_vs_p.png``, ``lru_replacement.png``,
``load_test.json`` (settings, machine, per-run summaries, cache polls) and
``load_test_samples.csv`` (every request; ``at`` in seconds since the mode's
store was up, the clock of the cache polls).  From the repository root::

    python -m scripts.load_test                # 2 x 5 runs into docs/evaluation: about 2 minutes
    python -m scripts.load_test --out /tmp/lt  # elsewhere
    python -m scripts.load_test --smoke        # a few seconds (into a temporary directory), for CI

It exits 1 if any request failed (other than a 409 refusal) or any order read
back wrong.  This is a measurement: its numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import treq
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter
from twisted.copyright import version as twisted_version
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed
from twisted.web.client import Agent, HTTPConnectionPool

import scripts
from scripts import ROOT
from toystore import loadgen
from toystore.catalog.seed import TOYS
from toystore.measure import table
from toystore.supervise import Supervisor
from toystore.testing import scratch, sleep

matplotlib.use("Agg")  # the plots go to files: no display

MODES = ("on", "off")
MARKERS = {"evicted": ("x", "tab:red"), "invalidated": ("o", "tab:blue"), "cleared": ("D", "tab:gray")}


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line; ``--smoke`` overrides the sizes with small ones."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.load_test", description="Latency against the buy probability, cache on and off."
    )
    parser.add_argument("--clients", type=int, default=5, help="concurrent shoppers (default 5)")
    parser.add_argument("--iterations", type=int, default=100, help="iterations per shopper (default 100)")
    parser.add_argument("--p", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6, 0.8], help="buy probabilities")
    parser.add_argument("--seed", type=int, default=1, help="the run at the i-th p uses seed + i in both modes")
    parser.add_argument("--restock-interval", type=float, help="the catalog's (default: as packaged, 10 s)")
    parser.add_argument("--restock-wait", type=float, help="seconds between runs (default: the restock interval)")
    parser.add_argument("--cache-poll", type=float, default=0.1, help="seconds between GET /cache (default 0.1)")
    parser.add_argument("--out", help="directory of the outputs (default docs/evaluation; smoke: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the stores' data directory (logs)")
    parser.add_argument("--smoke", action="store_true", help="a short run with small numbers, for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.iterations, args.p, args.restock_wait, args.restock_interval = 5, [0.0, 0.8], 0.5, 1.0
        args.out = args.out or tempfile.mkdtemp(prefix="load-test-out-")
    args.out = Path(args.out or ROOT / "docs" / "evaluation")
    if args.clients < 1 or args.iterations < 1 or args.cache_poll <= 0 or not all(0 <= p <= 1 for p in args.p):
        parser.error("--clients and --iterations must be >= 1, --cache-poll > 0, every p from 0 to 1")
    return args


async def get_json(http: Any, url: str) -> tuple[int, Any]:
    """``GET url``: the status (0 if no answer) and the decoded body (or the failure's text)."""
    try:
        response = await http.get(url, timeout=10)
        return response.code, await response.json()
    except Exception as e:  # an answer that did not come is data, not a crash
        return 0, f"{type(e).__name__}: {e}"


async def start_store(reactor: Any, supervisor: Supervisor, directory: Path, mode: str, args: Any) -> tuple[str, Any]:
    """A fresh store in ``directory``, cache ``mode``, its first leader elected: its URL and configuration."""
    overrides = {"catalog": {"restock_interval": args.restock_interval}} if args.restock_interval else {}
    flags = ("--no-cache",) if mode == "off" else ()
    store = await scripts.start_store(reactor, supervisor, directory, *flags, **overrides)
    return store.url, store.cluster


async def poll_cache(reactor: Any, http: Any, url: str, every: float, t0: float, polls: list, stop: list) -> None:
    """Append ``GET /cache`` (with ``t``: seconds since ``t0`` when it came back) to ``polls`` until ``stop``."""
    while not stop:
        code, body = await get_json(http, f"{url}/cache")
        if code == 200:
            polls.append({"t": reactor.seconds() - t0, **body["data"]})
        await sleep(reactor, every)


async def run_mode(reactor: Any, supervisor: Supervisor, directory: Path, mode: str, args: Any) -> dict[str, Any]:
    """Start a store with the cache ``mode``, run every p on it (polling the cache if on): runs and polls."""
    url, config = await start_store(reactor, supervisor, directory / f"cache-{mode}", mode, args)
    wait = args.restock_wait if args.restock_wait is not None else config.catalog.restock_interval
    pool = HTTPConnectionPool(reactor, persistent=True)
    http = treq.client.HTTPClient(Agent(reactor, pool=pool))
    t0, polls, runs, stop = reactor.seconds(), [], [], []
    poller = succeed(None)  # nothing to see in a cache that is off
    if mode == "on":
        poller = Deferred.fromCoroutine(poll_cache(reactor, http, url, args.cache_poll, t0, polls, stop))
    try:
        for i, p in enumerate(args.p):
            if i:
                await sleep(reactor, wait)  # a restock happens in any interval this long
            before = (await get_json(http, f"{url}/cache"))[1]["data"]
            gc.collect()  # this process's own collector would stall every client at once: not during a run
            gc.disable()
            try:
                started = reactor.seconds()
                report = await loadgen.run(reactor, url, args.clients, args.iterations, p, args.seed + i)
                ended = reactor.seconds()
            finally:
                gc.enable()
            after = (await get_json(http, f"{url}/cache"))[1]["data"]
            hits, misses = (after[k] - before[k] for k in ("hits", "misses"))
            errors, ratio = report.errors(), hits / (hits + misses) if hits + misses else None
            runs.append(dict(mode=mode, p=p, seed=args.seed + i, started_s=started - t0, ended_s=ended - t0))
            runs[-1].update(orders=len(report.placed), mismatches=report.mismatches, errors=len(errors))
            runs[-1].update(first_errors=[f"{s.kind}: {s.code} {s.error}" for s in errors[:5]], cache_hit_ratio=ratio)
            runs[-1]["summary"] = [{k: finite(v) for k, v in row.items()} for row in report.summary()]
            runs[-1]["samples"] = [(s.kind, s.at - t0, s.seconds, s.code) for s in report.samples]
            print(f"cache {mode}, p={p}: {len(report.samples)} requests in {ended - started:.1f} s", file=sys.stderr)
    finally:
        stop.append(True)
        await poller
        await pool.closeCachedConnections()
    return {"runs": runs, "polls": polls, "restock_wait_s": wait, "restock_interval_s": config.catalog.restock_interval}


def finite(value: Any) -> Any:
    """``value``, with NaN as None (JSON has no NaN)."""
    return None if isinstance(value, float) and math.isnan(value) else value


def lru_history(polls: list[dict[str, Any]]) -> dict[str, Any]:
    """
    From consecutive ``/cache`` polls: each toy's cached intervals ``[start,
    end]``, each departure ``[t, toy, "evicted" | "invalidated" |
    "cleared"]`` seen at poll time ``t``, and how many departures the
    counters show that the polls did not (``unseen``).  See the module
    docstring for how departures are labelled.
    """
    intervals: dict[str, list[list[float]]] = {}
    departures: list[list[Any]] = []
    unseen = 0
    for i, poll in enumerate(polls):
        before = polls[i - 1] if i else {**poll, "keys": []}
        gone = [key for key in before["keys"] if key not in poll["keys"]]  # least recently used first
        evicted = poll["evictions"] - before["evictions"]
        cleared = poll["clears"] > before["clears"]
        for n, key in enumerate(gone):
            departures.append([poll["t"], key, "cleared" if cleared else "evicted" if n < evicted else "invalidated"])
        if not cleared:
            unseen += max(0, evicted + poll["invalidations"] - before["invalidations"] - len(gone))
        for key in poll["keys"]:
            if key not in before["keys"]:
                intervals.setdefault(key, []).append([poll["t"], poll["t"]])
        for key in [*poll["keys"], *gone]:
            intervals[key][-1][1] = poll["t"]  # still cached, or gone just now
    return {"intervals": intervals, "departures": departures, "unseen": unseen}


def plot_latency(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    """One subplot per request type: p50 against p, bars up to p99, cache on and off side by side."""
    figure, axes = plt.subplots(1, len(loadgen.KINDS), figsize=(15, 5.2))
    for ax, kind in zip(axes, loadgen.KINDS, strict=True):
        for offset, mode, style in ((-0.012, "on", "o-"), (0.012, "off", "s--")):
            points = [
                (run["p"], row["p50_ms"], row["p99_ms"])
                for run in runs
                if run["mode"] == mode
                for row in run["summary"]
                if row["type"] == kind and row["p50_ms"] is not None
            ]
            if not points:
                continue
            xs, p50s, p99s = zip(*points, strict=True)
            ax.errorbar(
                [x + offset for x in xs],
                p50s,
                yerr=[[0] * len(p50s), [hi - mid for mid, hi in zip(p50s, p99s, strict=True)]],
                fmt=style,
                capsize=4,
                label=f"cache {mode}: marker at p50, bar up to p99",
            )
        ax.set_title(f"{kind} requests")
        ax.set_xlabel("buy probability p")
        ax.set_ylabel("latency (ms, log scale)")
        ax.set_yscale("log")
        for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}"[0] in "1235" else ""))
        if 0 in [run["p"] for run in runs] and kind != "query":
            ax.text(-0.03, 0.5, "p=0:\nno buys,\nnothing\nto check", transform=ax.get_xaxis_transform())
        ax.set_xticks(sorted({run["p"] for run in runs}))
        ax.set_xlim(min(ax.get_xticks()) - 0.06, max(ax.get_xticks()) + 0.06)
        if kind == "query":  # the cache-on hit ratio under each p
            ratios = {run["p"]: run["cache_hit_ratio"] for run in runs if run["mode"] == "on"}
            ax.set_xticklabels([f"{x:g}\n{ratios[x]:.0%} hits" if x in ratios else f"{x:g}" for x in ax.get_xticks()])
            ax.set_xlabel("buy probability p (under it: cache-on hit ratio)")
        ax.grid(True, which="both", alpha=0.3)
    figure.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, frameon=False)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw_lru(ax: Any, history: dict[str, Any], runs: list[dict[str, Any]], toys: list[str]) -> list[Any]:
    """Draw the cached intervals, the departures and the runs on ``ax``; the legend's handles."""
    for run in runs:
        ax.axvspan(run["started_s"], run["ended_s"], color="tab:green", alpha=0.08)
    for y, toy in enumerate(toys):
        spans = [(start, max(end - start, 0.01)) for start, end in history["intervals"].get(toy, [])]
        ax.broken_barh(spans, (y - 0.3, 0.6), color="tab:olive", alpha=0.7)
    handles = [Patch(color="tab:olive", alpha=0.7, label="cached")]
    for label, (marker, color) in MARKERS.items():
        points = [(t, toys.index(toy)) for t, toy, kind in history["departures"] if kind == label]
        if points or label != "cleared":
            xs, ys = zip(*points, strict=True) if points else ((), ())
            handles.append(
                ax.scatter(xs, ys, marker=marker, color=color, s=30, zorder=3, label=f"{label} ({len(points)})")
            )
    ax.set_ylim(-0.7, len(toys) - 0.3)
    ax.set_yticks(range(len(toys)), toys)
    return handles + [Patch(color="tab:green", alpha=0.15, label="client run (unshaded: waiting for the restock)")]


def plot_lru(history: dict[str, Any], runs: list[dict[str, Any]], size: int, path: Path, title: str) -> None:
    """Toys against time, the whole cache-on phase on top and each run zoomed in below."""
    toys = list(TOYS)
    figure = plt.figure(figsize=(16, 11))
    grid = figure.add_gridspec(2, max(1, len(runs)), height_ratios=(1, 1))
    top = figure.add_subplot(grid[0, :])
    handles = draw_lru(top, history, runs, toys)
    for run in runs:
        top.text(run["started_s"], len(toys) - 0.4, f" run p={run['p']}", fontsize=9, va="bottom")
    top.set_ylim(-0.7, len(toys) + 0.4)
    top.set_xlabel("seconds since the cache-on store was up")
    unseen = f"{history['unseen']} more departures came and went between two polls"
    top.set_title(f"{title}\nthe whole phase (the cache holds {size} of the {len(toys)} toys; {unseen})")
    for i, run in enumerate(runs):
        ax = figure.add_subplot(grid[1, i])
        draw_lru(ax, history, [run], toys)
        ax.set_xlim(run["started_s"] - 0.15, run["ended_s"] + 0.25)
        ax.set_title(f"run p={run['p']}: {run['ended_s'] - run['started_s']:.1f} s, {run['cache_hit_ratio']:.0%} hits")
        ax.set_xlabel("seconds")
        ax.tick_params(labelleft=i == 0)
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_outputs(args: Any, phases: dict[str, dict], history: dict[str, Any], reactor: Any) -> list[dict]:
    """Write the JSON, the CSV and both plots to ``args.out``; the runs of both modes."""
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [run for mode in MODES for run in phases[mode]["runs"]]
    with open(args.out / "load_test_samples.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["mode", "p", "kind", "at", "seconds", "code"])
        for run in runs:
            for kind, at, seconds, code in run["samples"]:
                writer.writerow([run["mode"], run["p"], kind, f"{at:.6f}", f"{seconds:.6f}", code])
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    settings.update(restock_wait=phases["on"]["restock_wait_s"], restock_interval=phases["on"]["restock_interval_s"])
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "twisted": twisted_version}
    machine.update(matplotlib=matplotlib.__version__, platform=platform.platform(), reactor=type(reactor).__name__)
    machine["loadavg_at_end"] = os.getloadavg()
    polls = phases["on"]["polls"]
    everything = {
        "settings": settings,
        "machine": machine,
        "runs": [{k: v for k, v in run.items() if k != "samples"} for run in runs],
        "lru": {**history, "cache_size": polls[0]["size"] if polls else None, "polls": polls},
    }
    with open(args.out / "load_test.json", "w") as f:
        json.dump(everything, f, indent=1)
    shape = f"{args.clients} clients x {args.iterations} iterations per run, {machine['cpus']} CPUs"
    plot_latency(runs, args.out / "latency_vs_p.png", f"Latency per request type against p ({shape})")
    title = f"LRU replacement in the cache-on runs (GET /cache every {args.cache_poll} s; {shape})"
    plot_lru(
        history, phases["on"]["runs"], everything["lru"]["cache_size"] or 0, args.out / "lru_replacement.png", title
    )
    return runs


def print_table(runs: list[dict[str, Any]]) -> None:
    """The summary table: a line per mode, p and request type."""
    cells = [
        (f"cache {run['mode']}", f"{run['p']:.1f}", row["type"])
        + tuple(str(row[k]) for k in ("count", "errors", "refused"))
        + tuple("-" if row[k] is None else f"{row[k]:.2f}" for k in ("p50_ms", "p99_ms"))
        for run in runs
        for row in run["summary"]
    ]
    print(table(("mode", "p", "type", "count", "errors", "409s", "p50 ms", "p99 ms"), cells, left=3))


async def main(reactor: Any, *argv: str) -> None:
    """Run every p with the cache on, then off, on fresh stores; write the outputs; exit 1 on errors."""
    args = parse(list(argv))
    supervisor, directory = scratch(reactor, "load-test-", keep=lambda: args.keep)
    phases: dict[str, dict] = {}
    crashed: list[str] = []
    try:
        for mode in MODES:
            first = len(supervisor.children)
            phases[mode] = await run_mode(reactor, supervisor, directory, mode, args)
            crashed += [f"{c.name} ({c.status})" for c in supervisor.children[first:] if not c.running]
            await supervisor.stop_all()
    finally:
        await supervisor.stop_all()
        if args.keep:  # otherwise scratch() removes it when the reactor stops
            print(f"kept {directory}", file=sys.stderr)
    history = lru_history(phases["on"]["polls"])
    runs = write_outputs(args, phases, history, reactor)
    print_table(runs)
    seen = {label: sum(1 for d in history["departures"] if d[2] == label) for label in MARKERS}
    print(f"cache departures seen: {seen}, {history['unseen']} more between polls; outputs in {args.out}")
    failed = [run for run in runs if run["errors"] or run["mismatches"]]
    for run in failed:
        print(f"cache {run['mode']}, p={run['p']}: {run['first_errors']} {run['mismatches'][:5]}", file=sys.stderr)
    if crashed:
        print(f"exited during the runs: {', '.join(crashed)}", file=sys.stderr)
    if failed or crashed:
        raise SystemExit(1)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
