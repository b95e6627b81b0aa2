"""
The fault-injection suite in its short mode: three seeds, a few faults each,
against the real store; every invariant count must be zero, and the
availability figures are there (they are only printed: a short run has too
few faults under each kind to judge them).  A fourth run has two front-ends,
one of them killed and the leader cut from them (see :data:`TWO_FRONTENDS`).
The long mode is ``python -m tests.faults --seeds
20 --duration 60`` (see :mod:`tests.faults`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from toystore.supervise import Supervisor

from ..faults.run import run_one, summary

pytestmark = pytest.mark.integration

#: Each short run draws from a third of the faults, so that the three together cover them all.
RUNS = [
    (2, ("kill-leader", "pause-leader", "drop-replies", "cut-leader-both"), 1),
    (3, ("kill-follower", "kill-frontend", "stall", "cut-frontend-leader"), 1),
    (4, ("kill-catalog", "cut-leader-lines", "cut-leader-catalog", "kill-leader"), 1),
]
#: Two front-ends, one of them killed, the leader cut from them.  When the front-ends elected,
#: each on its own, two could offer one epoch to two replicas (two leader records for one
#: epoch, logs that differ); now the replicas elect, and the front-ends only find the leader
#: (through another replica when they cannot reach it).
TWO_FRONTENDS = pytest.param(5, ("kill-frontend", "cut-frontend-leader"), 2, id="two-frontends")


@pytest.mark.parametrize(("seed", "faults", "frontends"), [*RUNS, TWO_FRONTENDS])
@pytest_twisted.ensureDeferred
async def test_invariants_under_faults(
    reactor: Any, supervisor: Supervisor, tmp_path: Path, seed: int, faults: tuple[str, ...], frontends: int
) -> None:
    """Orders under crashes, pauses and partitions: nothing lost, duplicated or unexpected; stock conserved."""
    result = await run_one(reactor, supervisor, tmp_path, seed, duration=8.0, faults=faults, frontends=frontends)
    print(summary(result))
    assert result["faults"], "the nemesis injected nothing"
    assert result["attempts"].get("ok", 0) > 0, "no order was acknowledged"
    assert result["ok"], "\n".join([summary(result), *result["details"]])
    figures = result["availability"]
    assert figures["overall"]["tried"] > 0 and figures["overall"]["max_gap"] > 0, figures
    assert set(figures["kinds"]) == {fault["fault"] for fault in result["faults"]}, figures
