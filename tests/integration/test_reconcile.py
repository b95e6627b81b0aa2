"""
End-to-end: the leader dies exactly after the catalog sold an order's toys
and before the order reached its log (a failpoint makes it exit there), and
nobody retries.  The next leader adopts that buy once it serves, so that
the logs agree with the catalog and stock is conserved; a late retry with
the same key then finds the order and buys nothing.
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
    """
    Replica 3 leads and dies right after its first buy; the next leader logs
    that buy as an order; replica 3 comes back, catches up and leads again.
    """
    store = Store.create(reactor, tmp_path, supervisor, frontends=0, **QUICK)
    try:
        await store.start("catalog")
        for i in (1, 2):
            await store.start(f"order-{i}")
        await store.start("order-3", env={ENVIRONMENT: "order.after-buy"})
        await store.serving(expected=3)
        with pytest.raises(ApiError):  # the connection drops: the outcome is unknown to the caller
            await store.order(3, "crash-1", name="Fox", quantity=3)
        assert await supervisor.wait(store.children["order-3"]) == EXIT_STATUS

        successor = await store.serving()  # no retry of crash-1 anywhere
        await store.start("order-3")
        await store.serving(expected=3)
        await store.caught_up()
        logs = {i: store.log(i) for i in (1, 2, 3)}
        assert logs[1] == logs[2] == logs[3]
        log = Log(logs[1].splitlines(keepends=True))
        orders = [log.order(n) for n in range(len(log.orders))]
        assert [(o["key"], o["name"], o["quantity"], o["seq"]) for o in orders] == [("crash-1", "Fox", 3, 1)]
        leaders = [r for r in log.records if "leader" in r]
        adopted = next(i for i, r in enumerate(log.records) if "order" in r)
        assert log.records[adopted - 1]["leader"] == successor, "adopted by the next leader, in its own epoch"
        assert leaders[-1]["leader"] == 3 and leaders[-1]["reconciled"] == 1, leaders

        ledger, buys = store.ledger()
        assert [b["key"] for b in buys] == ["crash-1"]
        for name, row in ledger.items():
            ordered = sum(o["quantity"] for o in orders if o["name"] == name)
            assert row["sold"] == ordered, name
            assert row["initial"] + row["restocked"] - ordered == row["quantity"], name

        # The client's late retry finds its order; the catalog sells nothing more.
        assert await store.order(3, "crash-1", name="Fox", quantity=3) == 0
        assert len(store.ledger()[1]) == 1
    finally:
        await store.close()
