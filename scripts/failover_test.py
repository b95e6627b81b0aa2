"""
Crash order replicas under load and check that no client can tell, except
by a slower answer.

A fresh store on free loopback ports (a temporary directory, ``--stock`` of
every toy so buys never run dry, other knobs as packaged) runs the load
client of :mod:`toystore.loadgen` in forever mode: ``--clients`` sessions
querying toys and buying with probability ``-p``.  Every ``--period``
seconds a nemesis SIGKILLs an order replica and restarts it ``--down``
seconds later: the current leader (``GET /leader``, confirmed by its own
``status``) in even rounds, a random follower in odd ones, so at least half
the kills hit the leader.  One ``--seed`` drives both the shoppers and the
nemesis.  A kill never comes while the previous victim is still starting.

Then the load stops, every client reads back every order it placed, and
the script waits until the three replicas report the same length, all of it
durable.  It reports:

* requests by type and outcome (200, 409, other codes, no answer);
* each kill: failover time of a leader kill (first acknowledgement of an
  order SENT after the kill, minus the kill), or for a follower the longest
  buy in flight within 2 s of it;
* the invariants of ``docs/architecture.rst``: no client-visible error, every
  acknowledged order in every replica's log with its number, toy and
  quantity, no order number or key twice, the three ``orders.log`` files
  byte-identical, every order read back as placed.  Orders committed whose
  acknowledgement never reached a client are counted, and allowed.

It writes ``failover_timeline.png`` (each request's latency over time, the
kills and restarts marked) and ``failover_test.json`` (every figure, the
settings and the machine) into ``--out``, and exits 1 if a check fails.
From the repository root::

    python -m scripts.failover_test --out docs/evaluation   # 6 kills, about 35 s
    python -m scripts.failover_test --smoke                  # a few seconds, for CI
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.copyright import version as twisted_version
from twisted.internet import task
from twisted.internet.defer import Deferred

import scripts
from scripts import ROOT
from toystore.loadgen import KINDS, Report, run
from toystore.measure import percentile, table
from toystore.order.journal import CorruptJournal, decode, scan
from toystore.supervise import Supervisor
from toystore.testing import REPLICAS, Store, scratch, sleep

POLL = 0.05  # seconds between two looks while waiting for a state
RECOVERY = 30.0  # seconds the replicas get to agree after the load stops
WINDOW = 2.0  # seconds after a follower kill in which the slowest buy is reported


async def start_store(reactor: Any, supervisor: Supervisor, directory: Path, stock: int) -> Store:
    """A fresh store in ``directory``: catalog, three replicas, front-end, first leader elected."""
    store = await scripts.start_store(reactor, supervisor, directory, catalog={"initial_stock": stock})
    await current_leader(reactor, store)
    return store


async def current_leader(reactor: Any, store: Store, timeout: float = 30.0) -> int:
    """The replica the front-end names in ``GET /leader`` once that replica also says it leads that epoch."""
    deadline = reactor.seconds() + timeout
    last: Any = None
    while reactor.seconds() < deadline:
        named = await store.elected(timeout=max(0.1, deadline - reactor.seconds()))
        last = await store.status(named["leader"])
        if last and last["role"] == "leader" and last["epoch"] == named["epoch"]:
            return named["leader"]
        await sleep(reactor, POLL)  # the named leader just died, or has not opened its epoch yet
    raise RuntimeError(f"no leader confirmed within {timeout} s (last answer: {last})")


async def nemesis(reactor: Any, store: Store, args: Any) -> list[dict[str, Any]]:
    """Kill a replica every ``--period`` s (the leader in even rounds) and restart it ``--down`` s later."""
    rng = random.Random(args.seed)
    kills: list[dict[str, Any]] = []
    due = reactor.seconds() + args.period
    for round_ in range(args.rounds):
        await sleep(reactor, due - reactor.seconds())
        leader = await current_leader(reactor, store)
        victim = leader if round_ % 2 == 0 else rng.choice([i for i in REPLICAS if i != leader])
        killed = reactor.seconds()
        await store.kill(f"order-{victim}")
        await sleep(reactor, killed + args.down - reactor.seconds())
        restarted = reactor.seconds()
        await store.start(f"order-{victim}")
        kill = {"replica": victim, "leader": victim == leader, "killed_at": killed, "restarted_at": restarted}
        kills.append({**kill, "ready_at": reactor.seconds()})
        due = max(killed + args.period, reactor.seconds())  # never two replicas down at once
    await sleep(reactor, due - reactor.seconds())  # the last kill gets a whole period of load too
    return kills


async def recover(reactor: Any, store: Store) -> dict[str, Any]:
    """Wait (at most RECOVERY s) until every replica reports the same length, all of it durable."""
    started = reactor.seconds()
    while True:
        statuses = {i: await store.status(i) for i in REPLICAS}
        answered = [s for s in statuses.values() if s is not None]
        agreed = {(s["length"], s["durable"]) for s in answered}
        done = len(answered) == len(REPLICAS) and len(agreed) == 1 and len(set(agreed.pop())) == 1
        if done or reactor.seconds() - started > RECOVERY:
            return {"recovered": done, "seconds": reactor.seconds() - started, "statuses": statuses}
        await sleep(reactor, POLL)


def read_log(path: Path) -> dict[str, Any]:
    """One replica's ``orders.log``: its bytes, its orders by number, numbers and keys found twice."""
    data = path.read_bytes() if path.exists() else b""
    found: dict[str, Any] = {"bytes": data, "orders": {}, "twice": [], "keys_twice": [], "error": None}
    try:
        scanned = scan(path)
    except CorruptJournal as e:
        return {**found, "error": str(e)}
    if scanned.torn_bytes:
        found["error"] = f"{scanned.torn_bytes} torn bytes at the end"
    keys: set[str] = set()
    for line in scanned.lines:
        order = decode(line).get("order")
        if order is None:
            continue  # a leader record
        if order["number"] in found["orders"]:
            found["twice"].append(order["number"])
        if order["key"] in keys:
            found["keys_twice"].append(order["key"])
        found["orders"][order["number"]] = order
        keys.add(order["key"])
    return found


def check(report: Report, logs: dict[int, dict[str, Any]], recovery: dict, exited: list[str]) -> dict[str, Any]:
    """The invariant checks (name -> passed, detail) and the orders committed but never acknowledged."""
    missing: dict[int, list[int]] = {i: [] for i in REPLICAS}
    for number, order in sorted(report.placed.items()):
        for i in REPLICAS:
            there = logs[i]["orders"].get(number)
            if there is None or (there["name"], there["quantity"]) != (order["name"], order["quantity"]):
                missing[i].append(number)
    lost = sorted(set().union(*missing.values()))
    acked = sum(1 for s in report.samples if s.kind == "buy" and s.code == 200)
    twice = {i: log["twice"] + log["keys_twice"] for i, log in logs.items()}
    gaps = [i for i, log in logs.items() if sorted(log["orders"]) != list(range(len(log["orders"])))]
    sizes = {i: len(log["bytes"]) for i, log in logs.items()}
    identical = len({log["bytes"] for log in logs.values()}) == 1
    errors = report.errors()
    checks = {
        "no client-visible errors": (not errors, f"{len(errors)} errors"),
        "every acknowledged order in every replica's log": (
            not lost,
            f"{len(report.placed)} acknowledged, {len(lost)} missing from some replica "
            + ", ".join(f"r{i}: {len(m)}" for i, m in missing.items())
            + (f"; first: {lost[:10]}" if lost else ""),
        ),
        "no order number acknowledged twice": (
            acked == len(report.placed),
            f"{acked} acks, {len(report.placed)} numbers",
        ),
        "no order number or key twice in a log": (
            not any(twice.values()) and not gaps,
            ", ".join(f"r{i}: {len(t)} twice" for i, t in twice.items()) + (f"; gaps in r{gaps}" if gaps else ""),
        ),
        "logs intact": (
            not any(log["error"] for log in logs.values()),
            "; ".join(f"r{i}: {log['error']}" for i, log in logs.items() if log["error"]) or "no torn or bad record",
        ),
        "replicas recovered (same length, all durable)": (recovery["recovered"], f"in {recovery['seconds']:.2f} s"),
        "logs byte-identical": (identical, ", ".join(f"r{i}: {n} bytes" for i, n in sizes.items())),
        "every order read back as placed": (not report.mismatches, f"{len(report.mismatches)} mismatches"),
        "no process exited on its own": (not exited, ", ".join(exited) or "none"),
    }
    unacked = sorted(set(logs[REPLICAS[0]]["orders"]) - set(report.placed))
    return {"checks": {name: {"passed": ok, "detail": d} for name, (ok, d) in checks.items()}, "unacked": unacked}


def outcomes(report: Report) -> dict[str, dict[str, Any]]:
    """Per request type: count, 200s, 409s, other codes, no answer, and latency of the 200s (ms)."""
    rows = {}
    for kind in KINDS:
        of_kind = [s for s in report.samples if s.kind == kind]
        good = [1e3 * s.seconds for s in of_kind if s.code == 200]
        rows[kind] = {
            "count": len(of_kind),
            "200": sum(1 for s in of_kind if s.code == 200),
            "409": sum(1 for s in of_kind if s.code == 409),
            "other": sum(1 for s in of_kind if s.code not in (0, 200, 409)),
            "no answer": sum(1 for s in of_kind if s.code == 0),
            "p50_ms": percentile(good, 0.5),
            "p99_ms": percentile(good, 0.99),
            "max_ms": max(good, default=float("nan")),
        }
    return rows


def measure_kills(report: Report, kills: list[dict[str, Any]], t0: float) -> list[dict[str, Any]]:
    """Each kill's times (s since the load started), failover (leader) or slowest buy near it (follower)."""
    buys = [s for s in report.samples if s.kind == "buy"]
    figures = []
    for kill in kills:
        at = kill["killed_at"]
        acks = [s.at + s.seconds for s in buys if s.code == 200 and s.at > at]
        near = [s.seconds for s in buys if s.at <= at + WINDOW and s.at + s.seconds >= at]
        figures.append(
            {
                "replica": kill["replica"],
                "leader": kill["leader"],
                **{k: kill[k] - t0 for k in ("killed_at", "restarted_at", "ready_at")},
                "failover_s": min(acks, default=float("nan")) - at if kill["leader"] else None,
                "max_buy_latency_2s_s": max(near, default=float("nan")),
            }
        )
    return figures


def plot(report: Report, kills: list[dict[str, Any]], t0: float, stopped: float, path: Path, title: str) -> None:
    """The timeline PNG: every request's latency by type, errors as red crosses, kills, restarts, the stop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(13, 6), dpi=110)
    colours = {"query": "tab:blue", "buy": "tab:green", "check": "tab:purple"}
    legend = []
    for kind in KINDS:
        good = [s for s in report.samples if s.kind == kind and s.code in (200, 409)]
        ax.scatter([s.at - t0 for s in good], [1e3 * s.seconds for s in good], s=3, alpha=0.4, color=colours[kind])
        name = f"{kind} ({len(good)})" + (", read-back after the stop" if kind == "check" else "")
        legend.append(Line2D([], [], ls="", marker="o", color=colours[kind], label=name))
    errors = report.errors()
    ax.scatter([s.at - t0 for s in errors], [1e3 * s.seconds for s in errors], marker="x", s=40, color="red")
    legend += [
        Line2D([], [], ls="", marker="x", color="red", label=f"client-visible error ({len(errors)})"),
        Line2D([], [], color="black", label="kill (SIGKILL)"),
        Line2D([], [], color="black", ls="--", label="restart (spawned)"),
        Patch(color="0.9", label="replica down (kill to ready)"),
        Line2D([], [], color="tab:gray", ls=":", label="load stopped"),
    ]
    ax.axvline(stopped, color="tab:gray", ls=":")
    for kill in kills:
        ax.axvspan(kill["killed_at"], kill["ready_at"], color="0.9", lw=0, zorder=0)
        ax.axvline(kill["killed_at"], color="black", lw=1.2)
        ax.axvline(kill["restarted_at"], color="black", lw=1, ls="--")
        label = f"kill r{kill['replica']} ({'leader' if kill['leader'] else 'follower'}) "
        ax.text(kill["killed_at"], 0.99, label, rotation=90, va="top", ha="right", transform=ax.get_xaxis_transform())
    ax.set_yscale("log")
    ax.set_ylim(top=40e3 * max((s.seconds for s in report.samples), default=1.0))  # room for the labels
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("request latency (ms, log scale)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def clean(value: Any) -> Any:
    """``value`` with every NaN replaced by None, so that the JSON is standard."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def print_report(results: dict[str, Any]) -> None:
    """The outcomes table, one line per kill, then every check with PASS or FAIL."""
    header = ("request", "count", "200", "409", "other", "no answer", "p50 ms", "p99 ms", "max ms")
    rows = [
        (kind, *(str(r[k]) for k in header[1:6]), *(f"{r[k]:.1f}" for k in ("p50_ms", "p99_ms", "max_ms")))
        for kind, r in results["outcomes"].items()
    ]
    print(table(header, rows, left=1))
    for n, kill in enumerate(results["kills"], 1):
        role = "leader" if kill["leader"] else "follower"
        effect = (
            f"failover {kill['failover_s']:.3f} s" if kill["leader"] else "failover n/a (follower)"
        ) + f"; max buy latency within {WINDOW:.0f} s of the kill {kill['max_buy_latency_2s_s']:.3f} s"
        print(
            f"kill {n}: r{kill['replica']} ({role}) at {kill['killed_at']:.2f} s, restarted at "
            f"{kill['restarted_at']:.2f} s (ready {kill['ready_at']:.2f} s): {effect}"
        )
    for name, c in results["checks"].items():
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {name}: {c['detail']}")
    unacked = results["unacknowledged_but_committed"]
    print(f"info  unacknowledged but committed (allowed): {len(unacked)} orders {unacked[:10]}")


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line; ``--smoke`` overrides the sizes with small ones."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.failover_test", description="Kill order replicas under load; check what clients saw."
    )
    parser.add_argument("--rounds", type=int, default=6, help="kills, every other one the leader (default 6)")
    parser.add_argument("-T", "--period", type=float, default=4.0, help="seconds between kills (default 4)")
    parser.add_argument("-D", "--down", type=float, default=1.5, help="seconds before a restart (default 1.5)")
    parser.add_argument("--clients", type=int, default=5, help="concurrent load clients (default 5)")
    parser.add_argument("-p", type=float, default=0.5, help="probability of buying after a query (default 0.5)")
    parser.add_argument("--stock", type=int, default=100_000_000, help="initial stock of every toy (default 1e8)")
    parser.add_argument("--seed", type=int, help="seed of the shoppers and the nemesis (default: random)")
    parser.add_argument("--out", help="directory for the PNG and JSON (default docs/evaluation; smoke: temporary)")
    parser.add_argument("--json", metavar="FILE", help="write the JSON here instead of OUT/failover_test.json")
    parser.add_argument("--keep", action="store_true", help="keep the store's data directory (kept anyway on FAIL)")
    parser.add_argument("--smoke", action="store_true", help="2 rounds of 1 s, 2 clients: a few seconds, for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.period, args.down, args.clients = 2, 1.0, 0.5, 2
        args.out = args.out or tempfile.mkdtemp(prefix="failover-out-")
    if args.rounds < 1 or args.clients < 1 or args.period <= 0 or args.down < 0 or not 0 <= args.p <= 1:
        parser.error("--rounds and --clients must be >= 1, --period > 0, --down >= 0, -p from 0 to 1")
    args.out = Path(args.out or ROOT / "docs" / "evaluation")
    args.seed = args.seed if args.seed is not None else random.randrange(2**31)
    return args


async def main(reactor: Any, *argv: str) -> None:
    """Start the store, load it while the nemesis kills, stop, check, plot, report."""
    args = parse(list(argv))
    supervisor, directory = scratch(
        reactor, "failover-", keep=lambda: args.keep, on_stop=lambda: setattr(args, "stopping", True)
    )
    stop: Deferred[None] = Deferred()
    report = Report()
    load_before, started = os.getloadavg(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        store = await start_store(reactor, supervisor, directory, args.stock)
        t0 = reactor.seconds()
        load = Deferred.fromCoroutine(
            run(reactor, store.url, args.clients, None, args.p, args.seed, stop, report=report)
        )
        try:
            kills = await nemesis(reactor, store, args)
        finally:
            stopped = reactor.seconds() - t0
            if not stop.called:
                stop.callback(None)
            await load  # every client reads back its orders
        duration = reactor.seconds() - t0
        recovery = await recover(reactor, store)
        exited = [c.name for c in supervisor.children if not c.running and c.status != -9]
        logs = {i: read_log(directory / f"order-{i}" / "orders.log") for i in REPLICAS}
    except BaseException:
        if not getattr(args, "stopping", False):  # not interrupted: keep the data for a post-mortem
            args.keep = True
            print(f"the run broke off: the store's data and logs are in {directory}", file=sys.stderr)
        raise
    finally:
        await supervisor.stop_all()
    verdict = check(report, logs, recovery, exited)
    passed = all(c["passed"] for c in verdict["checks"].values())
    results = {
        "outcomes": outcomes(report),
        "kills": measure_kills(report, kills, t0),
        "checks": verdict["checks"],
        "unacknowledged_but_committed": verdict["unacked"],
    }
    print_report(results)
    args.out.mkdir(parents=True, exist_ok=True)
    title = (
        f"toystore failover test: {args.rounds} SIGKILLs every {args.period:g} s, restart after {args.down:g} s, "
        f"{args.clients} clients, p={args.p:g}, seed {args.seed}"
    )
    plot(report, results["kills"], t0, stopped, args.out / "failover_timeline.png", title)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    machine = dict(python=platform.python_version(), twisted=twisted_version, platform=platform.platform())
    machine.update(cpus=os.cpu_count(), reactor=type(reactor).__name__, loadavg=[load_before, os.getloadavg()])
    results.update(
        started=started, settings=settings, machine=machine, load_s=stopped, duration_s=duration, passed=passed
    )
    results.update(summary=report.summary(), orders_acknowledged=len(report.placed), recovery=recovery)
    results["logs"] = {i: {"bytes": len(log["bytes"]), "orders": len(log["orders"])} for i, log in logs.items()}
    results["errors"] = [{**s.__dict__, "at": s.at - t0} for s in report.errors()][:50]
    results["mismatches"] = report.mismatches[:50]
    json_path = Path(args.json) if args.json else args.out / "failover_test.json"
    json_path.write_text(json.dumps(clean(results), indent=2) + "\n")
    print(f"wrote {args.out / 'failover_timeline.png'} and {json_path}", file=sys.stderr)
    for sample in report.errors()[:10]:
        print(f"ERROR {sample.kind} at {sample.at - t0:.2f} s: {sample.code} {sample.error}", file=sys.stderr)
    for problem in report.mismatches[:10]:
        print(f"MISMATCH {problem}", file=sys.stderr)
    if not passed:
        args.keep = True  # removed at shutdown otherwise
    if args.keep:
        print(f"kept the store's data and logs in {directory}", file=sys.stderr)
    if not passed:
        raise SystemExit(1)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
