"""
End-to-end test of ``python -m scripts.load_test`` in its smoke mode, so
that the load test cannot rot: it starts two real stores (cache on, then
off), runs the load client at two buy probabilities on each, polls the LRU
cache, and writes its data and both plots.  Nothing about speed is checked,
only that every run finished without errors and that the outputs are there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_script

pytestmark = pytest.mark.integration


def test_load_test_smoke(tmp_path: Path) -> None:
    """The load test runs in smoke mode: both modes at both p without errors, the JSON, CSV and PNGs written."""
    result = run_script("load_test", "--smoke", "--out", str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[:3] == ["mode", "p", "type"]
    for name in ("latency_vs_p.png", "lru_replacement.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG"), name
    report = json.loads((tmp_path / "load_test.json").read_text())
    assert sorted((run["mode"], run["p"]) for run in report["runs"]) == [
        ("off", 0.0),
        ("off", 0.8),
        ("on", 0.0),
        ("on", 0.8),
    ]
    for run in report["runs"]:
        assert run["errors"] == 0 and not run["mismatches"], run
        counts = {row["type"]: row["count"] for row in run["summary"]}
        assert counts["query"] > 0, run
        assert counts["buy"] == 0 if run["p"] == 0 else counts["buy"] > 0, run
    assert report["lru"]["polls"], "the cache was never polled"
    header = (tmp_path / "load_test_samples.csv").read_text().splitlines()[0]
    assert header == "mode,p,kind,at,seconds,code"
