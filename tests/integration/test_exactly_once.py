"""
End-to-end exactly-once: replies lost between the front-end and the leader,
retried with the same key, give one order and the identical reply, also
across a leader change; the same key with another body is a 422; the same
key while its first request is under way is a 409.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred

from toystore.supervise import Supervisor
from toystore.testing import Proxy, sleep

from ..faults.checker import orders_of
from ..faults.run import fault_store

pytestmark = pytest.mark.integration


async def post(url: str, key: str, name: str = "Tux", quantity: int = 1) -> tuple[int, bytes]:
    response = await treq.post(
        f"{url}/orders",
        data=json.dumps({"name": name, "quantity": quantity}).encode(),
        headers={"Idempotency-Key": key},
        timeout=10,
        persistent=False,
    )
    return response.code, await response.content()


async def answered_and_dropped(reactor: Any, proxy: Proxy, timeout: float = 10.0) -> None:
    """Wait until the replica has answered through ``proxy`` and the answer was dropped: the order is under way."""
    deadline = reactor.seconds() + timeout
    while not any(connection.dropped for connection in proxy.connections):
        assert reactor.seconds() < deadline, "the order never reached the replica"
        await sleep(reactor, 0.02)


@pytest_twisted.ensureDeferred
async def test_lost_replies_retried_once(reactor: Any, supervisor: Supervisor, tmp_path: Path) -> None:
    """
    The leader's replies to the front-end are dropped: the front-end goes
    through another replica, which relays to the leader, and the order exists
    once, with one reply.
    """
    store = fault_store(reactor, supervisor, tmp_path)
    try:
        await store.start_all()
        leader = await store.leader()
        store.proxies.frontend[leader].drop()  # the order reaches the leader; its answer never comes back
        code, first = await post(store.url, "k-1")
        assert code == 200, first
        found = await store.elected()
        successor = found["via"]
        assert (found["leader"], await store.leader()) == (leader, leader), "a lost reply changes no leader"
        assert successor != leader, "the front-end should go through another replica"
        store.proxies.frontend[leader].heal()

        assert await post(store.url, "k-1") == (200, first)  # byte for byte
        code, body = await post(store.url, "k-1", name="Fox")
        assert code == 422, body

        # The same key while its first request is still under way: 409 (and 422 with another body).
        store.proxies.frontend[successor].drop()
        under_way = Deferred.fromCoroutine(post(store.url, "k-2"))  # waits on the dropped reply
        await answered_and_dropped(reactor, store.proxies.frontend[successor])
        code, body = await post(store.url, "k-2")
        assert code == 409 and b"still being placed" in body, body
        assert (await post(store.url, "k-2", name="Fox"))[0] == 422
        store.proxies.frontend[successor].heal()
        code, second = await under_way
        assert code == 200, second
        assert await post(store.url, "k-2") == (200, second)

        assert await store.recovered() is not None
        keys = [order["key"] for order in orders_of(store.logs()[leader])]
        assert keys.count("k-1") == 1 and keys.count("k-2") == 1, keys
    finally:
        await store.stop()
