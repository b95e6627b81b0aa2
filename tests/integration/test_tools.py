"""
End-to-end tests of the tools around the services: ``toystore up`` and the
benchmark scripts (in their smoke modes, so that none of them can rot).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from toystore.testing import Store, sleep

from .conftest import PYTHONPATH, QUICK, ROOT, run_script

pytestmark = pytest.mark.integration


class Watched(ProcessProtocol):
    """A child whose output is watched for one line."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.seen: Deferred[None] = Deferred()
        self.ended: Deferred[int] = Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if self.marker in self.output and not self.seen.called:
            self.seen.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if not self.seen.called:
            self.seen.errback(RuntimeError(self.output.decode()))
        code = reason.value.exitCode
        self.ended.callback(-reason.value.signal if code is None else code)


def start_up(reactor: Any, tmp_path: Path) -> tuple[str, Watched, Any]:
    """
    ``toystore up`` on the cluster file of a store on free ports in
    ``tmp_path`` (which starts nothing itself): the front-end's URL, its
    watched output, its process.
    """
    store = Store.create(reactor, tmp_path, **QUICK)
    child = Watched(b"toystore is up at")
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    argv = [sys.executable, "-m", "toystore", "up", "--config", str(store.config), "--data-dir", str(tmp_path / "var")]
    return store.url, child, reactor.spawnProcess(child, sys.executable, argv, env=env)


@pytest_twisted.ensureDeferred
async def test_children_stop_when_up_is_killed(reactor: Any, tmp_path: Path) -> None:
    """SIGKILL of toystore up (no chance to clean up) still stops every child: their stdin closes."""
    _, child, process = start_up(reactor, tmp_path)
    try:
        await child.seen.addTimeout(60, reactor)
        pids = [int(pid) for pid in re.findall(rb"pid (\d+)", child.output)]
        assert len(pids) == 5
    finally:
        if not child.ended.called:
            process.signalProcess("KILL")  # the kill under test, or the cleanup if up never came up
        await child.ended
    for _ in range(100):
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            break
        await sleep(reactor, 0.05)
    assert alive == [], f"children still running after their supervisor died: {alive}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped by init) counts as gone
        return f.read().split()[2] != "Z"


@pytest_twisted.ensureDeferred
async def test_up_starts_and_stops_the_store(reactor: Any, tmp_path: Path) -> None:
    """
    toystore up starts the catalog, the three replicas and the front-end,
    which elects a leader and answers at the URL printed; SIGTERM stops them
    all and toystore up exits with status 0.
    """
    url, child, process = start_up(reactor, tmp_path)
    try:
        await child.seen.addTimeout(60, reactor)
        output = child.output.decode()
        for name in ("catalog", "order-1", "order-2", "order-3", "frontend"):
            assert re.search(rf"^  {name} +ready +pid \d+", output, re.MULTILINE), output
        assert f"toystore is up at {url}" in output
        before = (await (await treq.get(f"{url}/products/Tux")).json())["data"]["quantity"]
        response = await treq.post(f"{url}/orders", json={"name": "Tux", "quantity": 2})
        assert await response.json() == {"data": {"order_number": 0}}
        after = (await (await treq.get(f"{url}/products/Tux")).json())["data"]["quantity"]
        assert after == before - 2, "the order left a stale reply in the cache"
        process.signalProcess("TERM")
        assert await child.ended.addTimeout(30, reactor) == 0
        assert b"toystore: stopped." in child.output
        for name in ("catalog", "order-1", "frontend"):
            log = (tmp_path / "var" / "logs" / f"{name}.log").read_text()
            assert log.rstrip().endswith("Server Shut Down."), name
    finally:
        if not child.ended.called:
            process.signalProcess("KILL")  # its children see their stdin close and stop too
            await child.ended


def test_up_reports_a_bad_config(tmp_path: Path) -> None:
    """toystore up with a bad cluster file exits 1 with one line naming the problem."""
    config = tmp_path / "cluster.toml"
    config.write_text("[catalog\n")
    result = subprocess.run(
        [sys.executable, "-m", "toystore", "up", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "is not valid TOML" in result.stderr


def test_bench_wire_smoke(tmp_path: Path) -> None:
    """The wire benchmark runs in smoke mode and reports both set-ups."""
    out = tmp_path / "wire.json"
    result = run_script("bench_wire", "--smoke", "--json", str(out), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "same process" in result.stdout and "two processes" in result.stdout
    rows = json.loads(out.read_text())["results"]
    assert {(r["mode"], r["concurrency"]) for r in rows} == {
        (mode, c) for mode in ("same process", "two processes") for c in (1, 8)
    }
    assert all(r["calls_per_s"] > 0 for r in rows)
