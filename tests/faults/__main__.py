"""
The long mode of the fault-injection suite: many seeds, one store each.

From the repository root::

    python -m tests.faults --seeds 20 --duration 60        # 20 runs of a minute
    python -m tests.faults --seed 1234 --duration 10       # replay one seed

Prints one line per run and a table of the counts, writes every run's
result to ``--out`` (JSON), and exits 1 if any count is not zero.  The data
of a failing run (logs of every process, the database, the order logs) is
kept and its directory printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from twisted.internet import task

from toystore.testing import scratch

from .checker import COUNTS
from .nemesis import FAULTS
from .run import run_one, summary


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="runs, with seeds --first, --first + 1, ...")
    parser.add_argument("--first", type=int, default=1, help="the first seed")
    parser.add_argument("--seed", type=int, help="one run with this seed (a replay)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults per run")
    parser.add_argument("--buyers", type=int, default=4, help="concurrent buyers")
    parser.add_argument("--faults", default=",".join(FAULTS), help="the faults to draw from, comma-separated")
    parser.add_argument("--out", type=Path, default=Path("fault_runs.json"), help="where to write the results")
    return parser.parse_args(argv)


async def main(reactor: Any, *argv: str) -> None:
    args = parse(list(argv))
    seeds = [args.seed] if args.seed is not None else list(range(args.first, args.first + args.seeds))
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise SystemExit(f"unknown faults: {sorted(unknown)}; known: {', '.join(FAULTS)}")
    failed: list[Path] = []
    supervisor, directory = scratch(reactor, "toystore-faults-", keep=lambda: bool(failed))
    results = []
    for seed in seeds:
        run_dir = directory / f"seed-{seed}"
        result = await run_one(reactor, supervisor, run_dir, seed, args.duration, args.buyers, faults)
        print(summary(result), flush=True)
        if not result["ok"]:
            failed.append(run_dir)
            print("\n".join("    " + line for line in result["details"]), flush=True)
        results.append(result)
    totals = {name: sum(r["counts"][name] for r in results) for name in (*COUNTS, "not_recovered")}
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
        "totals": totals,
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\n{len(results)} runs of {args.duration:g} s; faults injected: {faults_done}")
    print(f"attempts: {attempts}; orders logged: {report['orders']}")
    for name, value in totals.items():
        print(f"  {name:20} {value}")
    if failed:
        print("kept the data of the failing runs: " + ", ".join(map(str, failed)))
        raise SystemExit(1)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
