"""
End-to-end: the leader dies exactly after the catalog sold an order's toys
and before the order reached its log (a failpoint makes it exit there), and
nobody retries.  The next leader must adopt that buy before it serves, so
that the logs agree with the catalog and stock is conserved; a late retry
with the same key then finds the order and buys nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from toystore.envelope import ApiError
from toystore.failpoints import ENVIRONMENT, EXIT_STATUS
from toystore.order.journal import Log
from toystore.supervise import Supervisor
from toystore.testing import Store

from .conftest import QUICK

pytestmark = pytest.mark.integration


@pytest_twisted.ensureDeferred
async def test_leader_dies_between_buy_and_log(reactor: Any, supervisor: Supervisor, tmp_path: Path) -> None:
    """Replica 3 leads and dies after its second buy; replica 2 leads next and logs that buy as an order."""
    store = Store.create(reactor, tmp_path, supervisor, frontends=0, **QUICK)
    try:
        await store.start("catalog")
        for i in (1, 2):
            await store.start(f"order-{i}")
        await store.start("order-3", env={ENVIRONMENT: "order.after-buy"})
        await store.elect(1, 2)
        assert await store.order(2, "before", name="Tux", quantity=1) == 0
        await store.elect(2, 3)
        with pytest.raises(ApiError):  # the connection drops: the outcome is unknown to the caller
            await store.order(3, "crash-1", name="Fox", quantity=3)
        assert await supervisor.wait(store.children["order-3"]) == EXIT_STATUS

        await store.elect(3, 2, skip=(3,))  # no retry of crash-1 anywhere
        await store.start("order-3")
        await store.caught_up()
        logs = {i: store.log(i) for i in (1, 2, 3)}
        assert logs[1] == logs[2] == logs[3]
        log = Log(logs[1].splitlines(keepends=True))
        orders = [log.order(n) for n in range(len(log.orders))]
        assert [(o["key"], o["name"], o["quantity"], o["seq"]) for o in orders] == [
            ("before", "Tux", 1, 1),
            ("crash-1", "Fox", 3, 2),
        ]
        assert log.records[-1] == {"index": 4, "epoch": 3, "leader": 2, "reconciled": 2}

        ledger, buys = store.ledger()
        assert [b["key"] for b in buys] == ["before", "crash-1"]
        for name, row in ledger.items():
            ordered = sum(o["quantity"] for o in orders if o["name"] == name)
            assert row["sold"] == ordered, name
            assert row["initial"] + row["restocked"] - ordered == row["quantity"], name

        # The client's late retry finds its order; the catalog sells nothing more.
        assert await store.order(2, "crash-1", name="Fox", quantity=3) == 1
        assert len(store.ledger()[1]) == 2
    finally:
        await store.close()
