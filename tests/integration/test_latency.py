"""
End-to-end test of ``python -m scripts.latency`` in its smoke mode, so that
the latency measurement cannot rot: it starts two real stores (cache on,
cache off), loads the public API from keep-alive clients, kills and restarts
the order leader once, and stops everything again.  Nothing about speed is
checked, only that every request type was measured without errors and that
the failover was seen.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_script

pytestmark = pytest.mark.integration


def test_latency_smoke(tmp_path: Path) -> None:
    """The latency script runs in smoke mode: every request type answered without errors, one failover seen."""
    out = tmp_path / "latency.json"
    result = run_script("latency", "--smoke", "--json", str(out), timeout=240)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[:3] == ["request", "count", "errors"]
    report = json.loads(out.read_text())
    kinds = ["product (cached)", "product (uncached)", "order", "order query"]
    assert list(report["results"]) == kinds
    for kind in kinds:
        figures = report["results"][kind]
        assert figures["count"] > 0 and figures["errors"] == 0, (kind, figures)
    failover = report["failover"]
    assert failover["errors"] == 0, failover["first_error"]
    assert len(failover["kills"]) == 1
    assert failover["kills"][0]["failover_s"] > 0, failover
