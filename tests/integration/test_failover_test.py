"""
End-to-end test of ``python -m scripts.failover_test`` in its smoke mode, so
that the failover experiment cannot rot: it starts a real store, runs the
load client while it SIGKILLs and restarts the order leader once and a
follower once, then checks the invariants of ``docs/architecture.rst`` on what the
clients saw and on the three replicas' logs.  Nothing about speed is
checked, only that every invariant held and that the leader's failover was
measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_script

pytestmark = pytest.mark.integration


def test_failover_smoke(tmp_path: Path) -> None:
    """The failover script passes in smoke mode: no lost or doubled order, identical logs, one failover timed."""
    out = tmp_path / "f.json"
    result = run_script("failover_test", "--smoke", "--out", str(tmp_path), "--json", str(out), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "failover_timeline.png").read_bytes().startswith(b"\x89PNG")
    report = json.loads(out.read_text())
    checks = report["checks"]
    assert all(check["passed"] for check in checks.values()), checks
    assert checks["logs byte-identical"]["passed"]
    assert len({log["bytes"] for log in report["logs"].values()}) == 1, report["logs"]
    assert report["errors"] == [] and report["mismatches"] == []
    assert report["orders_acknowledged"] > 0
    assert all(logged["orders"] >= report["orders_acknowledged"] for logged in report["logs"].values())
    assert checks["every acknowledged order in every replica's log"]["passed"]
    assert checks["no order number acknowledged twice"]["passed"]
    assert checks["no order number or key twice in a log"]["passed"]
    assert sum(outcome["other"] + outcome["no answer"] for outcome in report["outcomes"].values()) == 0
    kills = report["kills"]
    assert [kill["leader"] for kill in kills] == [True, False], kills
    assert kills[0]["failover_s"] > 0, kills[0]
    assert kills[1]["failover_s"] is None, kills[1]
