"""
End-to-end test of ``python -m scripts.bench_catalog`` in its smoke mode, so
that the catalog benchmark cannot rot: it starts a real catalog process,
loads it with buys, and stops it again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_script

pytestmark = pytest.mark.integration


def test_bench_catalog_smoke(tmp_path: Path) -> None:
    """The catalog benchmark runs in smoke mode and reports buys for each concurrency level."""
    out = tmp_path / "catalog.json"
    result = run_script("bench_catalog", "--smoke", "--json", str(out), timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[0] == "concurrency"
    assert {line.split()[0] for line in lines[1:3]} == {"1", "8"}
    assert "fsync/s" in result.stdout
    report = json.loads(out.read_text())
    assert {r["concurrency"] for r in report["results"]} == {1, 8}
    assert all(r["buys_per_s"] > 0 and r["errors"] == 0 for r in report["results"])
    assert report["fsync_per_s"] > 0
