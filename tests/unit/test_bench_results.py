"""
The arithmetic of ``python -m scripts.bench`` (``scripts/bench/results.py``):
rounds merged into one row, ratios, and the targets judged, on rows made
here (the benchmark's own run is ``tests/integration/test_bench.py``).
"""

from __future__ import annotations

from typing import Any

import pytest

from scripts.bench.results import merge_rounds, targets, with_ratios


def row(case: str, rate: float, p99: float = 10.0, elections: int | None = 0, **cpu: float) -> dict[str, Any]:
    """A row as one wrk run gives it, over 4 s."""
    return {
        "case": case,
        "connections": 16,
        "req_per_s": rate,
        "requests": int(rate * 4),
        "seconds": 4.0,
        "p50_ms": p99 / 4,
        "p90_ms": p99 / 2,
        "p99_ms": p99,
        "max_ms": p99 * 2,
        "mean_ms": p99 / 3,
        "errors": 0,
        "wrk_errors": {"connect": 0, "status": 0},
        "cpu": cpu or {"frontend": 0.5},
        "elections": elections,
    }


def test_a_ratio_over_rounds_is_the_median_of_each_round_against_its_own_ceiling() -> None:
    # The machine slows down in the second round and speeds up in the third: each round's case is
    # compared with the ceiling run just before it (0.5, 0.6, 0.7), not with the mean of all.
    rounds = [
        (row("ceiling", 10_000), row("order query", 5_000, p99=8.0, frontend=0.8)),
        (row("ceiling", 2_000), row("order query", 1_200, p99=30.0, frontend=0.9)),
        (row("ceiling", 20_000), row("order query", 14_000, p99=4.0, frontend=1.0)),
    ]
    merged = merge_rounds(rounds)
    assert merged["ratio"] == pytest.approx(0.6)
    assert merged["req_per_s"] == pytest.approx((5_000 + 1_200 + 14_000) / 3)
    assert merged["seconds"] == 12.0 and merged["requests"] == (5_000 + 1_200 + 14_000) * 4
    assert merged["p99_ms"] == 8.0 and merged["max_ms"] == 60.0
    assert merged["cpu"]["frontend"] == pytest.approx(0.9)
    assert [r["ceiling"] for r in merged["rounds"]] == [10_000, 2_000, 20_000]


def test_elections_add_up_over_rounds_and_are_unknown_if_one_round_could_not_tell() -> None:
    top = row("ceiling", 10_000)
    assert (
        merge_rounds([(top, row("order", 900, elections=0)), (top, row("order", 800, elections=2))])["elections"] == 2
    )
    assert (
        merge_rounds([(top, row("order", 900, elections=0)), (top, row("order", 800, elections=None))])["elections"]
        is None
    )


def test_a_row_in_rounds_keeps_its_ratio_and_a_single_run_gets_the_ceiling_mean() -> None:
    ceiling = {16: row("ceiling", 10_000)}
    paired = merge_rounds([(row("ceiling", 4_000), row("product (cached)", 4_400))])
    single = row("product (uncached)", 6_500)
    rows = with_ratios([paired, single], ceiling)
    assert [r["ratio"] for r in rows] == [pytest.approx(1.1), pytest.approx(0.65)]


def test_the_targets_judge_ratios_and_elections() -> None:
    rows = with_ratios(
        [
            merge_rounds([(row("ceiling", 10_000), row("product (cached)", 10_500))]),
            merge_rounds([(row("ceiling", 10_000), row("order query", 5_500))]),
            row("order", 1_200, p99=40.0, elections=1),
        ],
        {16: row("ceiling", 10_000)},
    )
    verdicts = {goal["target"]: goal["met"] for goal in targets(rows)}
    assert verdicts == {
        "product (cached) >= 1.00 x ceiling": True,
        "order query >= 0.60 x ceiling": False,
        "order at 16 connections >= 1,000/s with p99 < 50 ms": True,
        "no election while the store is under load": False,
    }
