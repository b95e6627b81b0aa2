"""
End-to-end: a leader's first attempt at a buy reaches the catalog late,
after the leader's retry of the same key was refused for want of stock and
after a restock (the failpoint ``catalog.first-buy-late``, armed in the
catalog only).

Across hosts with packets dropped this happens on its own: the leader gives
up a call (timed out, or its connection closed by the idle watch), asks
again on a new connection and is refused, while TCP still retransmits the
first attempt on the old one.  The client has been told its order is
refused; the late attempt must not sell the key.  The catalog keeps the
refusal under the key, so the late attempt is refused in turn: nothing is
sold, no order appears, and the key stays refused.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest
import pytest_twisted
import treq
from twisted.internet.task import deferLater

from toystore.envelope import Conflict
from toystore.failpoints import ENVIRONMENT
from toystore.testing import Store

pytestmark = pytest.mark.integration

#: seconds the catalog holds each key's first buy: past the leader's call timeout and a restock
LATE = 4.0


async def buy_calls(store: Store) -> int:
    """The buy calls the catalog has answered, whatever their outcome (its ``/metrics``)."""
    response = await treq.get(f"{store.sites['catalog'].url}/metrics", persistent=False, timeout=5)
    text = (await response.content()).decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("toystore_catalog_calls_total{") and 'type="buy"' in line
    )


async def answered(reactor: Any, store: Store, calls: int, timeout: float) -> None:
    """Wait until the catalog has answered ``calls`` buy calls."""
    deadline = time.monotonic() + timeout
    while await buy_calls(store) < calls:
        assert time.monotonic() < deadline, f"the catalog answered fewer than {calls} buys in {timeout} s"
        await deferLater(reactor, 0.1, lambda: None)


async def refused(store: Store, leader: int, key: str, quantity: int) -> str:
    """Order straight from the leader, expecting a 409; its message."""
    with pytest.raises(Conflict) as refusal:
        await store.call(f"order-{leader}", "order", timeout=30, name="Tux", quantity=quantity, key=key)
    return refusal.value.message


@pytest_twisted.ensureDeferred
async def test_late_first_attempt_of_a_refused_buy_sells_nothing(reactor: Any, new_store: Callable[..., Store]) -> None:
    store = new_store(
        frontends=0,
        wire={"call_timeout": 1.0},
        catalog={"initial_stock": 1, "restock_interval": 1.0, "restock_quantity": 100},
    )
    await store.start("catalog", env={ENVIRONMENT: f"catalog.first-buy-late={LATE}"})
    for i in (1, 2, 3):
        await store.start(f"order-{i}")
    leader = await store.serving(expected=3)

    # Two of the last Tux: the first attempt is held, the leader's retry is refused (1 left).
    message = await refused(store, leader, "late", 2)
    assert "1 Tux left, 2 wanted" in message
    # The last Tux sells (on the retry again), and the restock after it brings 100.
    assert await store.order(leader, "last") == 0
    await answered(reactor, store, 4, timeout=LATE + 10)  # both first attempts have been answered too

    ledger, buys = store.ledger()
    assert [b["key"] for b in buys] == ["last"], "the late attempt sold a key refused to its client"
    assert ledger["Tux"]["restocked"] == 100 and ledger["Tux"]["quantity"] == 100, ledger["Tux"]
    assert await refused(store, leader, "late", 2) == message  # refused for good, as first answered
    status = await store.status(leader)
    assert status is not None and status["last_order"] == 0, status
