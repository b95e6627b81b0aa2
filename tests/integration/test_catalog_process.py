"""
End-to-end tests of ``twistd -n toystore-catalog``: a real process, real
SQLite, real sockets, and SIGKILL.
"""

from __future__ import annotations

import random
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList, gatherResults

from toystore.envelope import ApiError
from toystore.supervise import Supervisor, twistd_executable
from toystore.testing import connect, sleep
from toystore.wire import WireProtocol

from .conftest import ROOT

pytestmark = pytest.mark.integration

CATALOG = "toystore-catalog"
LOOPBACK = ["--lines", "tcp:0:interface=127.0.0.1", "--http", "tcp:0:interface=127.0.0.1"]
TOYS = ["Tux", "Whale", "Fox", "Kite"]
INITIAL = 1000


def catalog_args(data_dir: Path, *extra: str) -> list[str]:
    """Flags for a catalog on free loopback ports with its data in ``data_dir``."""
    return ["--data-dir", str(data_dir), "--initial-stock", str(INITIAL), *LOOPBACK, *extra]


async def buyer(connection: WireProtocol, name: str, acked: dict[str, dict], attempted: dict[str, tuple]) -> None:
    """Buy the same toy again and again, recording each attempt and each acknowledgement."""
    rng = random.Random(name)
    for n in range(10_000):
        key = f"{name}-{n}"
        quantity = rng.randint(1, 3)
        attempted[key] = (name, quantity)
        try:
            acked[key] = await connection.call("buy", {"name": name, "quantity": quantity, "key": key, "epoch": 1})
        except ApiError:
            return


@pytest_twisted.ensureDeferred
async def test_acknowledged_buys_survive_sigkill(reactor: Any, supervisor: Supervisor, tmp_path: Path) -> None:
    """
    Buyers run concurrently; the catalog is SIGKILLed mid-stream and started
    again on the same data: every acknowledged buy is still recorded (its key
    replays the same reply and changes nothing), and stock equals the initial
    stock minus the buys recorded.
    """
    process = await supervisor.start("catalog", CATALOG, catalog_args(tmp_path / "catalog"))
    ports = process.ports
    connection = await connect(reactor, ports["lines"])
    feed = await connect(reactor, ports["lines"])
    pushes: list[dict] = []
    feed.handler = type("Feed", (), {"push_invalidate": lambda self, m, c: pushes.append(m)})()
    await feed.call("subscribe")

    acked: dict[str, dict] = {}
    attempted: dict[str, tuple] = {}
    buyers = gatherResults([Deferred.fromCoroutine(buyer(connection, name, acked, attempted)) for name in TOYS])
    while len(acked) < 200:
        await sleep(reactor, 0.01)
    process.signal("KILL")
    await buyers
    assert await supervisor.wait(process) == -9
    assert any(m["reason"] == "buy" for m in pushes), "the feed pushed nothing"

    process = await supervisor.start("catalog", CATALOG, catalog_args(tmp_path / "catalog"))
    ports = process.ports
    connection = await connect(reactor, ports["lines"])
    before = {t["name"]: t["quantity"] for t in (await connection.call("list"))["toys"]}
    for key, reply in acked.items():
        again = await connection.call(
            "buy", {"name": reply["name"], "quantity": reply["quantity"], "key": key, "epoch": 1}
        )
        assert again == reply, f"acknowledged buy {key} was not kept"
    after = {t["name"]: t["quantity"] for t in (await connection.call("list"))["toys"]}
    assert after == before, "replaying acknowledged keys changed the stock"

    sold_acked: dict[str, int] = defaultdict(int)
    sold_attempted: dict[str, int] = defaultdict(int)
    for reply in acked.values():
        sold_acked[reply["name"]] += reply["quantity"]
    for name, quantity in attempted.values():
        sold_attempted[name] += quantity
    for name in TOYS:
        # Committed buys include every acknowledged one and at most the in-flight rest.
        assert sold_acked[name] <= INITIAL - after[name] <= sold_attempted[name], name
    assert len(acked) >= 200


@pytest_twisted.ensureDeferred
async def test_sigterm_stops_cleanly(reactor: Any, supervisor: Supervisor, tmp_path: Path) -> None:
    """
    SIGTERM with buys in flight: the catalog answers them, shuts down in
    order (twistd then exits by the same signal, as it does for every
    plugin), and the buys are there after a restart.
    """
    process = await supervisor.start("catalog", CATALOG, catalog_args(tmp_path / "catalog"))
    ports = process.ports
    connection = await connect(reactor, ports["lines"])
    replies = [connection.call("buy", {"name": "Tux", "quantity": 1, "key": f"k{n}", "epoch": 1}) for n in range(50)]
    process.signal("TERM")
    results = await DeferredList(replies, consumeErrors=True)
    assert await supervisor.wait(process) == -15
    assert "Server Shut Down." in process.output()
    assert "Traceback" not in process.output(), process.output()
    answered = sum(1 for ok, _ in results if ok)

    process = await supervisor.start("catalog", CATALOG, catalog_args(tmp_path / "catalog"))
    ports = process.ports
    connection = await connect(reactor, ports["lines"])
    tux = await connection.call("query", {"name": "Tux"})
    assert INITIAL - tux["quantity"] >= answered


@pytest_twisted.ensureDeferred
async def test_busy_port_is_one_line(reactor: Any, supervisor: Supervisor, tmp_path: Path) -> None:
    """A second catalog on the same lines port exits 1 with one line naming the port."""
    first = await supervisor.start("catalog", CATALOG, catalog_args(tmp_path / "one"))
    ports = first.ports
    busy = f"tcp:{ports['lines']}:interface=127.0.0.1"
    second = supervisor.spawn(
        "second", CATALOG, ["--data-dir", str(tmp_path / "two"), "--lines", busy, "--http", "tcp:0:interface=127.0.0.1"]
    )
    assert await supervisor.wait(second) == 1
    # twistd logs what goes to stderr, so the line shows up in the log.
    errors = [line for line in second.output().splitlines() if "error:" in line]
    assert len(errors) == 1, second.output()
    assert errors[0].endswith(f"{CATALOG}: error: cannot listen on {ports['lines']}: [Errno 98] Address already in use")
    assert "Traceback" not in second.output()


def run_twistd(*args: str) -> subprocess.CompletedProcess:
    """Run twistd to completion (for commands that exit at once)."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([twistd_executable(), *args], capture_output=True, text=True, timeout=60, env=env)


def test_bad_flags_are_one_line() -> None:
    """A bad flag or value exits 1 with a single line, never a usage dump or traceback."""
    for args, words in [
        (["--restock-interval", "-1"], "catalog.restock_interval must be > 0"),
        (["--config", "/nonexistent.toml"], "cannot read config /nonexistent.toml"),
        (["--no-such-flag"], "option --no-such-flag not recognized"),
    ]:
        result = run_twistd("-n", "--pidfile=", CATALOG, *args)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"{CATALOG}: error: " + result.stderr.split("error: ", 1)[1].strip()
        ]
        assert words in result.stderr
        assert "Traceback" not in result.stderr + result.stdout


def test_plugin_is_listed() -> None:
    """twistd --help lists the catalog command."""
    assert CATALOG in run_twistd("--help").stdout
