"""
The simulator in CI: seeds for a fixed budget with no violation, a seed that
replays exactly, and every planted bug found.
"""

from __future__ import annotations

import time

import pytest

from .__main__ import run_seed
from .bugs import BUGS

#: real seconds of clean seeds per CI run (the long mode is ``python -m tests.sim --long``)
BUDGET = 30.0
#: a planted bug must be found within this many seeds
BUG_SEEDS = 40


def test_seeds_within_the_budget_break_no_invariant() -> None:
    started = time.monotonic()
    seed = steps = 0
    while time.monotonic() - started < BUDGET:
        seed += 1
        result = run_seed(seed, 3 if seed % 2 else 5, 30.0, None)
        steps += result.steps
        assert result.violation is None, f"seed {seed}: {result.violation} (replay: python -m tests.sim --seed {seed})"
        assert result.orders > 0, f"seed {seed} logged no order: the run tested nothing"
    print(f"{seed} seeds, {steps} steps")


def test_a_seed_replays_exactly() -> None:
    first = run_seed(7, 3, 10.0, None)
    again = run_seed(7, 3, 10.0, None)
    assert (first.steps, first.digest) == (again.steps, again.digest)
    other = run_seed(8, 3, 10.0, None)
    assert other.digest != first.digest


#: the replicas a planted bug is run with (None: 3 and 5 in turn); as measured, the vote bug
#: is found at seed 24 of 3 replicas, the early serving at seed 14 of 3 and 5 in turn, the
#: forgotten refusals at seed 10 of 3 replicas
BUG_REPLICAS = {"vote-without-log-check": 3, "serve-before-commit": None, "catalog-forgets-refusals": 3}


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_a_planted_bug_is_found(bug: str) -> None:
    for seed in range(1, BUG_SEEDS + 1):
        result = run_seed(seed, BUG_REPLICAS[bug] or (3 if seed % 2 else 5), 30.0, bug)
        if result.violation is not None:
            print(f"{bug}: seed {seed}: {result.violation}")
            return
    pytest.fail(f"{bug} went unnoticed for {BUG_SEEDS} seeds")
