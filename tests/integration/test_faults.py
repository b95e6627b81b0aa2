"""
The fault-injection suite in its short mode: three seeds, a few faults each,
against the real store; every invariant count must be zero.  The long mode
is ``python -m tests.faults --seeds 20 --duration 60`` (see
:mod:`tests.faults`).
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
    (2, ("kill-leader", "pause-leader", "drop-replies")),
    (3, ("kill-follower", "kill-frontend", "stall")),
    (4, ("kill-catalog", "partition", "kill-leader")),
]


@pytest.mark.parametrize(("seed", "faults"), RUNS)
@pytest_twisted.ensureDeferred
async def test_invariants_under_faults(
    reactor: Any, supervisor: Supervisor, tmp_path: Path, seed: int, faults: tuple[str, ...]
) -> None:
    """Orders under crashes, pauses and partitions: nothing lost, duplicated or unexpected; stock conserved."""
    result = await run_one(reactor, supervisor, tmp_path, seed, duration=8.0, faults=faults)
    print(summary(result))
    assert result["faults"], "the nemesis injected nothing"
    assert result["attempts"].get("ok", 0) > 0, "no order was acknowledged"
    assert result["ok"], "\n".join([summary(result), *result["details"]])
