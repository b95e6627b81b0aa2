"""
End-to-end test of ``python -m scripts.bench_orders`` in its smoke mode, so
that the order benchmark cannot rot: it starts a real catalog and three real
order replicas, elects a leader, loads it with orders from several client
connections, checks the replicas' logs, and stops everything again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_script

pytestmark = pytest.mark.integration


def test_bench_orders_smoke(tmp_path: Path) -> None:
    """The order benchmark runs in smoke mode: orders for each client count, no errors, identical logs."""
    out = tmp_path / "orders.json"
    result = run_script("bench_orders", "--smoke", "--json", str(out), timeout=180)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["max_batch", "clients"]
    assert [line.split()[:2] for line in lines[1:3]] == [["1000", "1"], ["1000", "4"]]
    assert "logs identical: yes" in result.stdout
    report = json.loads(out.read_text())
    assert [r["clients"] for r in report["results"]] == [1, 4]
    assert all(r["orders_per_s"] > 0 and r["errors"] == 0 for r in report["results"])
    assert report["logs_identical"] is True
    assert all(c["logs"]["identical"] and not c["crashed"] for c in report["clusters"])
