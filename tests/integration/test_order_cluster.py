"""
End-to-end tests of the order replicas: a real catalog and three real
``twistd -n toystore-order`` processes, SIGKILL and SIGSTOP, and the
invariants: acknowledged orders survive, numbers have no gaps or repeats,
and recovered logs are byte-identical.  The replicas elect their leader
themselves; the tests send orders straight to it, as the front-end does.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError

from toystore.envelope import ApiError
from toystore.order.journal import Log, scan
from toystore.runtime import EXIT_DISK_FAILED
from toystore.testing import REPLICAS, Store, sleep

from .conftest import ROOT, gather

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(new_store: Any) -> Store:
    """A store of catalog and three replicas for this test (started by the test), no front-end."""
    return new_store(frontends=0)


async def start(cluster: Store) -> None:
    """Start the catalog and three replicas; they elect replica 3 (the highest id, once all are caught up)."""
    await cluster.start_all()
    await cluster.serving(expected=3)


def orders_in(cluster: Store, i: int) -> dict[str, int]:
    """Key -> order number in replica ``i``'s log file."""
    return Log(scan(cluster.directory / f"order-{i}" / "orders.log").lines).keys


def assert_numbered_without_gaps(keys: dict[str, int]) -> None:
    assert sorted(keys.values()) == list(range(len(keys))), sorted(keys.values())


@pytest_twisted.ensureDeferred
async def test_follower_killed_and_restarted_catches_up(cluster: Store) -> None:
    """
    Orders go through the leader; a follower is SIGKILLed, more orders are
    placed (a majority is still up), the follower restarts, finds the leader
    by itself and catches up: all three logs are byte-identical.
    """
    await start(cluster)
    first = [await cluster.order(3, f"a{n}") for n in range(10)]
    assert first == list(range(10))
    assert await cluster.kill("order-1") == -9
    later = [r for ok, r in await gather(*(cluster.order(3, f"b{n}") for n in range(20))) if ok]
    assert sorted(later) == list(range(10, 30))
    await cluster.start("order-1")
    await cluster.caught_up()
    assert cluster.log(1) == cluster.log(2) == cluster.log(3)
    assert_numbered_without_gaps(orders_in(cluster, 1))


@pytest_twisted.ensureDeferred
async def test_leader_killed_under_load(cluster: Store) -> None:
    """
    Four clients order concurrently; the leader is SIGKILLed mid-stream and
    the others elect one of them; clients retry their failed order with the same
    key.  Every acknowledged order is in every log under its number, each
    key once, numbers without gaps; the old leader rejoins and all logs end
    byte-identical.
    """
    await start(cluster)
    leader = {"id": 3}
    acked: dict[str, int] = {}
    promoted: list[Any] = []

    async def client(c: int) -> None:
        for n in range(25):
            key = f"c{c}-{n}"
            for _attempt in range(50):
                try:
                    acked[key] = await cluster.order(leader["id"], key, quantity=1 + n % 3)
                    break
                except (ApiError, ConnectError):
                    if promoted:
                        await promoted[0]
                    else:
                        await sleep(cluster.reactor, 0.05)
            else:
                raise AssertionError(f"{key} was never acknowledged")

    async def nemesis() -> None:
        while len(acked) < 30:
            await sleep(cluster.reactor, 0.01)
        await cluster.kill("order-3")

        async def promote() -> None:
            leader["id"] = await cluster.serving()

        promoted.append(Deferred.fromCoroutine(promote()))
        await promoted[0]

    results = await gather(nemesis(), *(client(c) for c in range(4)))
    assert all(ok for ok, _ in results), [r for ok, r in results if not ok]
    assert len(acked) == 100
    assert len(set(acked.values())) == 100, "an order number was given twice"

    await cluster.start("order-3")
    await cluster.caught_up()
    for i in REPLICAS:
        keys = orders_in(cluster, i)
        assert {key: keys.get(key) for key in acked} == acked, f"replica {i} lost or renumbered an order"
        assert_numbered_without_gaps(keys)
        assert set(keys) == set(acked), "an order appeared that no client placed"
    assert cluster.log(1) == cluster.log(2) == cluster.log(3)


@pytest_twisted.ensureDeferred
async def test_keys_come_back_from_the_log(cluster: Store) -> None:
    """
    The leader is SIGKILLed and its key store deleted (a crash can leave it
    behind its log, never ahead of it for long); it restarts, writes the
    store again from its log, catches up on what another leader placed
    meanwhile and, leading again, answers every retried key with its first
    number and places nothing twice.
    """
    await start(cluster)
    placed = {f"k{n}": await cluster.order(3, f"k{n}") for n in range(20)}
    assert await cluster.kill("order-3") == -9
    for name in ("keys.sqlite", "keys.sqlite-wal", "keys.sqlite-shm"):
        (cluster.directory / "order-3" / name).unlink(missing_ok=True)
    successor = await cluster.serving()
    placed.update({f"m{n}": await cluster.order(successor, f"m{n}") for n in range(10)})
    await cluster.start("order-3")
    await cluster.caught_up()
    await cluster.serving(expected=3)  # handed back to the highest id once it caught up
    assert {key: await cluster.order(3, key) for key in placed} == placed
    assert await cluster.order(3, "new") == 30
    assert set(orders_in(cluster, 3)) == {*placed, "new"}


@pytest_twisted.ensureDeferred
async def test_paused_leader_commits_nothing(cluster: Store) -> None:
    """
    The leader is SIGSTOPped, the others elect one of them, which takes
    orders; the old leader is SIGCONTinued with an order waiting for it: it
    either refuses it (the catalog fences its epoch, or it has stepped down)
    or passes it to the new leader, and the order is in every log exactly as
    acknowledged, or in none.  The old leader follows, and its log ends
    identical to the others.
    """
    await start(cluster)
    for n in range(5):
        await cluster.order(3, f"a{n}")
    await cluster.caught_up()
    cluster.pause("order-3")
    try:
        successor = await cluster.serving()
        assert successor != 3
        for n in range(5):
            assert await cluster.order(successor, f"b{n}") == 5 + n
    finally:
        cluster.resume("order-3")
    try:
        number: int | None = await cluster.order(3, "from-the-past")
    except ApiError as refused:
        assert refused.code in (421, 503), refused
        number = None
    await cluster.caught_up()
    status = await cluster.call("order-3", "status")
    assert status["epoch"] > 1 and not status["serving"] or status["role"] == "leader" and status["epoch"] > 2
    for i in REPLICAS:
        assert orders_in(cluster, i).get("from-the-past") == number
    assert cluster.log(1) == cluster.log(2) == cluster.log(3)


@pytest_twisted.ensureDeferred
async def test_no_majority_no_acknowledgement(cluster: Store) -> None:
    """
    With both followers down, an order is refused (503, or 421 once the
    leader has stepped down for want of a majority), not acknowledged; its
    retry, same key, gets it once a follower is back.
    """
    await start(cluster)
    assert await cluster.order(3, "a0") == 0
    for i in (1, 2):
        await cluster.kill(f"order-{i}")
    with pytest.raises(ApiError) as refused:
        await cluster.order(3, "lonely")
    assert refused.value.code in (421, 503)
    await cluster.start("order-1")
    leader = await cluster.serving()
    assert await cluster.order(leader, "lonely") == 1, "the retry with the same key gives the same order"
    assert await cluster.order(leader, "after") == 2


@pytest_twisted.ensureDeferred
async def test_get_and_health(cluster: Store, reactor: Any) -> None:
    """get over the wire and GET /orders/<n> and /health over HTTP, on the leader and a follower."""
    await start(cluster)
    number = await cluster.order(3, "k", name="Whale", quantity=2)
    await cluster.caught_up()
    assert await cluster.call("order-3", "get", number=number) == {"number": number, "name": "Whale", "quantity": 2}
    with pytest.raises(ApiError) as missing:
        await cluster.call("order-3", "get", number=99)
    assert missing.value.code == 404
    response = await treq.get(f"{cluster.sites['order-1'].url}/orders/{number}")
    assert (await response.json())["data"] == {"number": number, "name": "Whale", "quantity": 2}
    response = await treq.get(f"{cluster.sites['order-1'].url}/orders/x1")
    assert response.code == 400
    await response.content()
    response = await treq.get(f"{cluster.sites['order-3'].url}/health")
    health = (await response.json())["data"]
    assert (health["id"], health["role"], health["serving"], health["last_order"]) == (3, "leader", True, 0)
    assert health["in_sync"] == [1, 2] and set(health["lag"]) == {"1", "2"}


@pytest_twisted.ensureDeferred
async def test_corrupt_log_stops_the_start(cluster: Store) -> None:
    """A replica whose log has a bad record before good ones exits 1 with one line naming it; a torn tail is cut."""
    log = Log()
    log.append_leader(1, 3)
    log.append_order(1, "Tux", 1, "k0")
    log.append_order(1, "Fox", 1, "k1")
    directory = cluster.directory / "order-1"
    directory.mkdir()
    (directory / "orders.log").write_bytes(log.lines[0] + log.lines[1].replace(b"Tux", b"Tax") + log.lines[2])
    child = cluster.supervisor.spawn("order-1", "toystore-order", ["--config", str(cluster.config), "--id", "1"])
    assert await cluster.supervisor.wait(child) == 1
    errors = [line for line in child.output().splitlines() if "error:" in line]
    assert len(errors) == 1 and "the order log is corrupt" in errors[0] and "record 2" in errors[0], child.output()

    (directory / "orders.log").write_bytes(b"".join(log.lines) + log.lines[0][:7])
    child = await cluster.start("order-1")
    assert (await cluster.call("order-1", "status"))["length"] == 3
    assert (directory / "orders.log").read_bytes() == b"".join(log.lines)


def test_fail_stop_exits_at_once_with_its_reason() -> None:
    """A replica whose log write failed stops as a crash would: EX_IOERR and one line saying why."""
    script = "from toystore.runtime import exit_now; exit_now(74, 'replica 3: a write failed'); print('after')"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == EXIT_DISK_FAILED == 74
    assert result.stderr == "replica 3: a write failed: exiting with status 74\n"
    assert result.stdout == ""
