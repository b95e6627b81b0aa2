"""
The long mode of the fault-injection suite: many seeds, one store each.

From the repository root::

    python -m tests.faults --seeds 20 --duration 60        # 20 runs of a minute
    python -m tests.faults --seed 1234 --duration 10       # replay one seed
    python -m tests.faults --seeds 1 --faults cut-leader-lines --hold 30 --duration 40
    python -m tests.faults --seeds 5 --frontends 2 --min-availability 0.9 --max-gap 2
    python -m tests.faults --hosts --seeds 20 --duration 60  # a network namespace per process (root)

With ``--hosts`` every process runs in a host of its own (a network
namespace, :mod:`toystore.hosts`), this process in the host ``clients``,
and the cuts are nftables rules that drop packets; the hosts (prefix
``tsf-``) are made at the start and removed at the end, with what a crashed
run left.  Where
hosts cannot be made (not root, no nft) it says why and exits 2.

Prints a summary per run and a table of the counts and of the availability
under each fault kind, writes every run's result to ``--out`` (JSON), and
exits 1 if any count is not zero.  Availability counts only with
``--min-availability`` or ``--max-gap``.  The data of a failing run (logs
of every process, the database, the order logs) is kept and its directory
printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from twisted.internet import task

from toystore.testing import listeners, scratch

from .checker import COUNTS, merge_availability
from .nemesis import EXTRA, FAULTS, HOST_FAULTS, kinds_of
from .run import run_one, summary


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="runs, with seeds --first, --first + 1, ...")
    parser.add_argument("--first", type=int, default=1, help="the first seed")
    parser.add_argument("--seed", type=int, help="one run with this seed (a replay)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults per run")
    parser.add_argument("--buyers", type=int, default=4, help="concurrent buyers")
    parser.add_argument(
        "--faults",
        help="the faults to draw from, comma-separated (default: every one the place can make but "
        + ", ".join(EXTRA)
        + ")",
    )
    parser.add_argument(
        "--hosts", action="store_true", help="run each process in a network namespace of its own (root, nft)"
    )
    parser.add_argument("--hold", type=float, help="seconds each fault holds (default: 0.5 to 3, drawn from the seed)")
    parser.add_argument("--frontends", type=int, default=1, help="front-ends, the buyers dealt out among them")
    parser.add_argument(
        "--min-availability",
        type=float,
        help="fail a run in which a fault kind's share of orders acknowledged in time is below this (0 to 1)",
    )
    parser.add_argument(
        "--max-gap",
        type=float,
        help="fail a run in which the longest gap between acknowledged orders is above this many seconds",
    )
    parser.add_argument("--out", type=Path, default=Path("fault_runs.json"), help="where to write the results")
    args = parser.parse_args(argv)
    try:
        args.faults = kinds_of(args.faults or ",".join(HOST_FAULTS if args.hosts else FAULTS), args.hosts)
    except ValueError as e:
        parser.error(str(e))
    if args.hold is not None and args.hold <= 0:
        parser.error("--hold must be > 0")
    if args.frontends < 1:
        parser.error("--frontends must be >= 1")
    return args


#: The prefix of the suite's hosts: not that of ``python -m toystore.hosts up``, whose hosts it would remove.
HOSTS_PREFIX = "tsf-"


def make_hosts(frontends: int) -> Any:
    """The hosts of a store with ``frontends`` front-ends and its clients, made and entered as ``clients``."""
    from toystore.hosts.network import HostsUnavailable, entered

    try:
        return entered([*listeners(frontends), "clients"], prefix=HOSTS_PREFIX)
    except HostsUnavailable as e:
        print(f"python -m tests.faults --hosts: hosts cannot be made here: {e}", file=sys.stderr)
        raise SystemExit(2) from None


async def main(reactor: Any, *argv: str) -> None:
    args = parse(list(argv))
    hosts = make_hosts(args.frontends) if args.hosts else None
    try:
        await run_all(reactor, args, hosts)
    finally:
        if hosts is not None:
            hosts.remove()


async def run_all(reactor: Any, args: argparse.Namespace, hosts: Any) -> None:
    seeds = [args.seed] if args.seed is not None else list(range(args.first, args.first + args.seeds))
    failed: list[Path] = []
    supervisor, directory = scratch(reactor, "toystore-faults-", keep=lambda: bool(failed))
    results = []
    for seed in seeds:
        run_dir = directory / f"seed-{seed}"
        result = await run_one(
            reactor,
            supervisor,
            run_dir,
            seed,
            args.duration,
            args.buyers,
            args.faults,
            hold=args.hold,
            frontends=args.frontends,
            min_availability=args.min_availability,
            max_gap=args.max_gap,
            hosts=hosts,
        )
        print(summary(result), flush=True)
        if not result["ok"]:
            failed.append(run_dir)
            print("\n".join("    " + line for line in result["details"]), flush=True)
        results.append(result)
    thresholds = args.min_availability is not None or args.max_gap is not None
    names = [*COUNTS, "not_recovered", *(["availability_missed"] if thresholds else [])]
    totals = {name: sum(r["counts"][name] for r in results) for name in names}
    figures = merge_availability(r["availability"] for r in results)
    faults_done: dict[str, int] = {}
    for r in results:
        for f in r["faults"]:
            faults_done[f["fault"]] = faults_done.get(f["fault"], 0) + 1
    attempts: dict[str, int] = {}
    for r in results:
        for k, v in r["attempts"].items():
            attempts[k] = attempts.get(k, 0) + v
    report = {
        "runs": len(results),
        "duration": args.duration,
        "faults": faults_done,
        "attempts": attempts,
        "orders": sum(r["orders"] for r in results),
        "hold": args.hold,
        "frontends": args.frontends,
        "hosts": {name: hosts.address(name) for name in hosts.names} if hosts is not None else None,
        "availability": figures,
        "totals": totals,
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\n{len(results)} runs of {args.duration:g} s; faults injected: {faults_done}")
    print(f"attempts: {attempts}; orders logged: {report['orders']}")
    for name, value in totals.items():
        print(f"  {name:20} {value}")
    print(availability_table(figures))
    if failed:
        print("kept the data of the failing runs: " + ", ".join(map(str, failed)))
        raise SystemExit(1)


def availability_table(figures: dict[str, Any]) -> str:
    """
    The availability of every run together: per fault kind, the orders
    first tried under it, those refused (out of stock), those acknowledged
    within the buyers' timeout, their share of the orders not refused, and
    the longest gap between acknowledged orders around its faults.
    """
    lines = [
        "availability (orders first tried while each kind held):",
        f"  {'fault':28} {'faults':>6} {'tried':>6} {'refused':>7} {'acked':>6} {'share':>7} {'max gap':>8}",
    ]
    rows = [*figures["kinds"].items(), ("(no fault)", figures["no_fault"]), ("(all)", figures["overall"])]
    for name, row in rows:
        share = "-" if row["availability"] is None else f"{row['availability']:.1%}"
        gap = "-" if row["max_gap"] is None else f"{row['max_gap']:.1f} s"
        lines.append(
            f"  {name:28} {row['faults']:>6} {row['tried']:>6} {row['refused']:>7} {row['acknowledged']:>6}"
            f" {share:>7} {gap:>8}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
