"""
Run the simulator: ``python -m tests.sim --seeds 100``, replay one seed with
``--seed S``, run a planted bug with ``--bug NAME``, or the long mode
(``--long``: at least 1,000,000 steps, 3 and 5 replicas in turn).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .bugs import BUGS
from .run import Result, Simulation, replay_command
from .store import Catalog


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    parser.add_argument("--seed", type=int, help="run this one seed (a replay)")
    parser.add_argument("--seeds", type=int, default=20, help="how many seeds to run (default 20)")
    parser.add_argument("--first", type=int, default=1, help="the first seed (default 1)")
    parser.add_argument("--replicas", type=int, choices=(3, 5), help="3 or 5 (default: each in turn)")
    parser.add_argument("--duration", type=float, default=30.0, help="simulated seconds of faults per seed")
    parser.add_argument("--budget", type=float, help="stop starting seeds after this many real seconds")
    parser.add_argument("--steps", type=int, help="run seeds until this many steps in all")
    parser.add_argument("--long", action="store_true", help="at least 1,000,000 steps")
    parser.add_argument("--bug", choices=sorted(BUGS), help="plant this bug in the core or the catalog")
    parser.add_argument("--verbose", action="store_true", help="print every seed and its faults")
    return parser.parse_args(argv)


def run_seed(seed: int, replicas: int, duration: float, bug: str | None) -> Result:
    planted = BUGS[bug] if bug else None
    kwargs: dict[str, Any] = {}
    if planted is not None:
        kwargs["catalog_type" if issubclass(planted, Catalog) else "node_type"] = planted
    return Simulation(seed, replicas=replicas, duration=duration, **kwargs).run()


def main(argv: list[str]) -> int:
    options = parse(argv)
    if options.long:
        options.steps = max(options.steps or 0, 1_000_000)
    seeds = [options.seed] if options.seed is not None else None
    started = time.monotonic()
    steps = failures = count = 0
    seed = options.first
    while True:
        if seeds is not None:
            if count == len(seeds):
                break
            seed = seeds[count]
        elif options.steps is not None:
            if steps >= options.steps:
                break
        elif count >= options.seeds:
            break
        if options.budget is not None and time.monotonic() - started > options.budget:
            break
        replicas = options.replicas or (3 if seed % 2 else 5)
        result = run_seed(seed, replicas, options.duration, options.bug)
        count += 1
        steps += result.steps
        if options.verbose or result.violation or seeds is not None:
            print(
                f"seed {seed}: {result.replicas} replicas, {result.steps} steps, {result.orders} orders "
                f"({result.acked} acknowledged), {result.elections} elections, digest {result.digest}"
            )
            if options.verbose or seeds is not None:
                for line in result.faults:
                    print("   ", line)
        if result.violation:
            failures += 1
            print(f"seed {seed}: VIOLATION {result.violation}")
            print(f"  replay: {replay_command(result, options.duration, options.bug)}")
        seed += 1
    elapsed = time.monotonic() - started
    print(f"{count} seeds, {steps} steps in {elapsed:.1f} s ({steps / max(elapsed, 1e-9):.0f} steps/s), {failures} with a violation")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
