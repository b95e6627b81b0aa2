"""
End-to-end: the catalog dies right after it committed a buy and before its
reply left (the failpoint ``catalog.after-commit``, armed in the catalog
only), so the leader cannot know whether the buy was made.  The buy is on
disk; once the catalog is back, a retry with the same key gets the recorded
reply and sells nothing more, so the order is acknowledged and the stock
decreases exactly once.

The leader treats such a buy as in doubt: it asks the catalog again, same
key, until the catalog answers definitely, then logs the order.  Whoever
waits for the order meanwhile (the front-end, until
``frontend.failover_deadline``; the client's retry with its
``Idempotency-Key`` after that) gets it once the catalog is back.  An order
sent straight to the leader, as the harness sends it, shows the same
without a front-end.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred

from toystore.failpoints import ENVIRONMENT, EXIT_STATUS
from toystore.order.journal import Log
from toystore.supervise import Supervisor
from toystore.testing import Store

pytestmark = pytest.mark.integration

REPLICAS = ("order-1", "order-2", "order-3", "frontend")


async def post(url: str, key: str, name: str = "Tux", quantity: int = 1) -> tuple[int, Any]:
    """``POST /orders`` with ``key``; the status and the decoded body."""
    response = await treq.post(
        f"{url}/orders",
        data=json.dumps({"name": name, "quantity": quantity}).encode(),
        headers={"Idempotency-Key": key},
        timeout=60,
        persistent=False,
    )
    return response.code, json.loads(await response.content())


async def start_armed(store: Store) -> None:
    """The catalog with ``catalog.after-commit`` armed, then the replicas and the front-end, unarmed."""
    await store.start("catalog", env={ENVIRONMENT: "catalog.after-commit"})
    await store.start_all(names=REPLICAS)


async def sold_once(store: Store, key: str, name: str, quantity: int) -> None:
    """The catalog recorded one buy, under ``key``; stock is conserved; every log holds one order for it."""
    ledger, buys = store.ledger()
    assert [(b["key"], b["name"], b["quantity"]) for b in buys] == [(key, name, quantity)]
    row = ledger[name]
    assert row["sold"] == quantity
    assert row["initial"] + row["restocked"] - quantity == row["quantity"]
    assert await store.recovered() is not None
    for i, lines in store.logs().items():
        log = Log(lines.splitlines(keepends=True))
        orders = [log.order(n) for n in range(len(log.orders))]
        assert [(o["key"], o["name"], o["quantity"], o["seq"]) for o in orders] == [(key, name, quantity, 1)], i


@pytest_twisted.ensureDeferred
async def test_front_end_retry_resolves(new_store: Callable[..., Store], supervisor: Supervisor) -> None:
    """The catalog dies after the commit and comes back within the front-end's deadline: the order is acknowledged."""
    store = new_store(frontend={"failover_deadline": 30.0})
    await start_armed(store)
    initial = store.ledger()[0]["Tux"]["quantity"]

    placing = Deferred.fromCoroutine(post(store.url, "k-1", quantity=2))
    assert await supervisor.wait(store.children["catalog"]) == EXIT_STATUS
    assert [b["key"] for b in store.ledger()[1]] == ["k-1"]  # committed before the catalog died
    assert not placing.called  # the front-end keeps asking the leader, which gets no answer from the catalog

    await store.start("catalog")  # unarmed now
    code, body = await placing
    assert (code, body) == (200, {"data": {"order_number": 0}})
    assert store.ledger()[0]["Tux"]["quantity"] == initial - 2

    assert await post(store.url, "k-1", quantity=2) == (200, body)  # a retry changes nothing
    await sold_once(store, "k-1", "Tux", 2)


@pytest_twisted.ensureDeferred
async def test_client_retry_resolves(new_store: Callable[..., Store], supervisor: Supervisor) -> None:
    """
    The catalog stays down past the front-end's deadline: the client gets a
    503, retries with its key once the catalog is back, and gets the order of
    the buy made before the crash.
    """
    store = new_store(frontend={"failover_deadline": 1.0})
    await start_armed(store)
    initial = store.ledger()[0]["Tux"]["quantity"]

    code, body = await post(store.url, "k-1", quantity=3)
    assert code == 503, body
    assert await supervisor.wait(store.children["catalog"]) == EXIT_STATUS
    assert [b["key"] for b in store.ledger()[1]] == ["k-1"]

    await store.start("catalog")
    code, body = await post(store.url, "k-1", quantity=3)
    assert (code, body) == (200, {"data": {"order_number": 0}})
    code, other = await post(store.url, "k-1", quantity=4)
    assert code == 422, other
    assert store.ledger()[0]["Tux"]["quantity"] == initial - 3
    await sold_once(store, "k-1", "Tux", 3)


@pytest_twisted.ensureDeferred
async def test_the_leader_asks_again_until_the_catalog_answers(
    reactor: Any, new_store: Callable[..., Store], supervisor: Supervisor
) -> None:
    """
    Straight to the leader: the order in the window is not answered while
    the catalog is down (the leader asks it again, same key) and nothing is
    logged; once the catalog is back, the leader gets the recorded reply and
    logs order 0, with no retry from anyone and no leader change.
    """
    store = new_store(frontends=0)
    await store.start("catalog", env={ENVIRONMENT: "catalog.after-commit"})
    for i in (1, 2, 3):
        await store.start(f"order-{i}")
    leader = await store.serving(expected=3)
    epoch = (await store.status(leader))["epoch"]

    placing = Deferred.fromCoroutine(store.call("order-3", "order", timeout=60, name="Fox", quantity=2, key="k-1"))
    assert await supervisor.wait(store.children["catalog"]) == EXIT_STATUS
    assert [b["key"] for b in store.ledger()[1]] == ["k-1"]
    status = await store.status(3)
    assert status is not None and status["serving"] and status["last_order"] == -1, status
    assert not placing.called

    await store.start("catalog")
    assert await placing == {"order_number": 0}
    assert (await store.status(3))["epoch"] == epoch  # no leader change: the catalog replayed the buy
    await sold_once(store, "k-1", "Fox", 2)
