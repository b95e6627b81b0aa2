"""
End-to-end test of ``scripts/bench_catalog.py`` in its smoke mode, so that
the catalog benchmark cannot rot: it starts a real catalog process, loads it
with buys, and stops it again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.integration


def test_bench_catalog_smoke(tmp_path: Path) -> None:
    """The catalog benchmark runs in smoke mode and reports buys for each concurrency level."""
    out = tmp_path / "catalog.json"
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_catalog.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": pythonpath},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[0] == "concurrency"
    assert {line.split()[0] for line in lines[1:3]} == {"1", "8"}
    assert "fsync/s" in result.stdout
    report = json.loads(out.read_text())
    assert {r["concurrency"] for r in report["results"]} == {1, 8}
    assert all(r["buys_per_s"] > 0 and r["errors"] == 0 for r in report["results"])
    assert report["fsync_per_s"] > 0
