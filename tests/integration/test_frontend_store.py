"""
End-to-end tests of the whole store through its public API: a real catalog,
three real replicas and the real front-end, over HTTP; and the leader
SIGKILLed while clients order.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import HTTPConnectionPool

from toystore.testing import Store, sleep

from .conftest import ROOT, gather

pytestmark = pytest.mark.integration

PROCESSES = ["frontend", "catalog", "order-1", "order-2", "order-3"]


async def fetch(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    response = await treq.request(method, url, **kwargs)
    return response.code, await response.json()


@pytest_twisted.ensureDeferred
async def test_every_request_kind(store: Store) -> None:
    """Each kind of request and each error path, over real HTTP, as the public API lists them."""
    await store.start_all()
    url = store.url
    code, toy = await fetch("GET", f"{url}/products/Tux")
    assert code == 200 and set(toy["data"]) == {"name", "price", "quantity"}
    for path in ("/products/product_name=Tux", "/products?product_name=Tux"):
        assert await fetch("GET", url + path) == (200, toy)
    code, placed = await fetch("POST", f"{url}/orders", json={"name": "Tux", "quantity": 2})
    assert (code, placed) == (200, {"data": {"order_number": 0}})
    expected = {"data": {"number": 0, "name": "Tux", "quantity": 2}}
    for path in ("/orders/0", "/orders/order_num=0", "/orders?order_number=0"):
        assert await fetch("GET", url + path) == (200, expected)
    code, after = await fetch("GET", f"{url}/products/Tux")
    assert after["data"]["quantity"] == toy["data"]["quantity"] - 2, "the order left a stale cache entry"
    key = {"Idempotency-Key": "same"}
    first = await fetch("POST", f"{url}/orders", json={"name": "Fox", "quantity": 1}, headers=key)
    assert await fetch("POST", f"{url}/orders", json={"name": "Fox", "quantity": 1}, headers=key) == first
    code, error = await fetch("POST", f"{url}/orders", json={"name": "Fox", "quantity": 2}, headers=key)
    assert code == 422 and error["error"]["code"] == 422
    errors = [
        ("GET", "/products/Unicorn", {}, 404),
        ("POST", "/orders", {"json": {"name": "Unicorn", "quantity": 1}}, 404),
        ("POST", "/orders", {"json": {"name": "Tux", "quantity": 100_000_000}}, 400),
        ("POST", "/orders", {"data": b"{not json"}, 400),
        ("POST", "/orders", {"data": b"x" * 10_000_000}, 413),
        ("GET", "/orders/12345", {}, 404),
        ("GET", "/orders/x", {}, 400),
        ("DELETE", "/products/Tux", {}, 405),
        ("GET", "/no/such/path", {}, 404),
    ]
    for method, path, kwargs, expected_code in errors:
        code, body = await fetch(method, url + path, **kwargs)
        assert (code, body["error"]["code"]) == (expected_code, expected_code), (method, path, body)
    code, leader = await fetch("GET", f"{url}/leader")
    assert code == 200 and leader["data"]["leader"] == 3


@pytest_twisted.ensureDeferred
async def test_insufficient_stock_and_the_push(store: Store) -> None:
    """
    A buy behind the front-end's back (straight to the catalog) reaches the
    cached reply through the catalog's push; ordering more than is left is
    a 409.
    """
    await store.start_all()
    url = store.url
    code, toy = await fetch("GET", f"{url}/products/Kite")
    code, leader = await fetch("GET", f"{url}/leader")
    assert code == 200, leader
    sold = await store.call(
        "catalog", "buy", name="Kite", quantity=toy["data"]["quantity"] - 1, key="direct", epoch=leader["data"]["epoch"]
    )
    assert sold["remaining"] == 1
    for _ in range(100):
        code, now = await fetch("GET", f"{url}/products/Kite")
        if now["data"]["quantity"] == 1:
            break
        await sleep(store.reactor, 0.02)
    assert now["data"]["quantity"] == 1, "the push did not invalidate the cached reply"
    code, error = await fetch("POST", f"{url}/orders", json={"name": "Kite", "quantity": 2})
    assert (code, error["error"]["code"]) == (409, 409)
    assert await fetch("POST", f"{url}/orders", json={"name": "Kite", "quantity": 1}) == (
        200,
        {"data": {"order_number": 0}},
    )


@pytest_twisted.ensureDeferred
async def test_leader_killed_while_clients_order(store: Store) -> None:
    """
    Four clients order through the front-end, each on a keep-alive
    connection; the leader is SIGKILLed meanwhile.  No client sees an
    error, and every acknowledged order reads back with its content.
    """
    await store.start_all()
    url = store.url
    acknowledged: dict[int, dict[str, Any]] = {}
    failures: list[Any] = []

    async def client(c: int) -> None:
        pool = HTTPConnectionPool(store.reactor, persistent=True)
        try:
            for n in range(40):
                order = {"name": ["Tux", "Fox", "Whale", "Kite"][c], "quantity": 1 + n % 3}
                response = await treq.post(f"{url}/orders", json=order, pool=pool)
                body = await response.json()
                if response.code != 200:
                    failures.append((response.code, body))
                    continue
                acknowledged[body["data"]["order_number"]] = order
        finally:
            await pool.closeCachedConnections()

    async def kill_leader() -> None:
        while len(acknowledged) < 40:
            await sleep(store.reactor, 0.01)
        await store.kill("order-3")

    results = await gather(kill_leader(), *(client(c) for c in range(4)))
    assert all(ok for ok, _ in results), [r for ok, r in results if not ok]
    assert failures == [], failures
    assert len(acknowledged) == 160
    assert sorted(acknowledged) == list(range(160)), "order numbers have gaps or repeats"
    for number, order in acknowledged.items():
        code, body = await fetch("GET", f"{url}/orders/{number}")
        assert (code, body["data"]) == (200, {"number": number, **order})
    code, leader = await fetch("GET", f"{url}/leader")
    assert leader["data"]["leader"] == 2
    await store.start("order-3")
    await store.caught_up()
    assert store.log(1) == store.log(2) == store.log(3)


@pytest_twisted.ensureDeferred
async def test_toystore_status(store: Store) -> None:
    """toystore status shows each process up with its role; a dead one is down, and the exit status says so."""
    await store.start_all()
    await fetch("POST", f"{store.url}/orders", json={"name": "Tux", "quantity": 1})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ("-m", "toystore", "status", "--config", str(store.config))
    out, err, code = await getProcessOutputAndValue(sys.executable, argv, env=env)
    lines = out.decode().splitlines()
    assert code == 0, err
    assert [line.split()[:2] for line in lines[1:]] == [[name, "up"] for name in PROCESSES]
    role, epoch, last_order, vote, commit = lines[-1].split()[2:7]
    assert (role, last_order, vote) == ("leader", "0", "3") and int(epoch) >= 1 and int(commit) >= 2, lines
    assert "1:" in lines[-1] and "2:" in lines[-1], "the leader's row shows each follower's lag"
    assert lines[0].split()[6:9] == ["vote", "commit", "lag"] and "pre-votes refused" in lines[0], lines[0]
    await store.kill("order-1")
    out, err, code = await getProcessOutputAndValue(sys.executable, argv, env=env)
    assert code == 1
    assert out.decode().splitlines()[3].split()[:2] == ["order-1", "down"]


@pytest_twisted.ensureDeferred
async def test_toystore_client(store: Store) -> None:
    """toystore client runs its shoppers against the store, checks every order and exits 0."""
    await store.start_all()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ("-m", "toystore", "client", "--url", store.url, "--clients", "3", "--iterations", "20", "-p", "0.8")
    out, err, code = await getProcessOutputAndValue(sys.executable, (*argv, "--seed", "4", "--json"), env=env)
    assert code == 0, err
    report = json.loads(out)
    rows = {row["type"]: row for row in report["summary"]}
    assert rows["query"]["count"] == 60 and rows["query"]["errors"] == 0
    assert rows["buy"]["count"] > 0 and rows["check"]["count"] == report["orders"] == rows["buy"]["count"]
    assert report["mismatches"] == []


class _Output(ProcessProtocol):
    """Collects a child's output and its exit status."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


@pytest_twisted.ensureDeferred
async def test_toystore_client_forever(store: Store, reactor: Any) -> None:
    """With --forever the client runs until Ctrl-C, then reads back its orders, reports, and exits 0."""
    await store.start_all()
    child = _Output()
    argv = [sys.executable, "-m", "toystore", "client", "--url", store.url, "--clients", "2", "-p", "1", "--forever"]
    process = reactor.spawnProcess(child, sys.executable, argv, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        for _ in range(200):  # until an order has been placed
            response = await treq.get(f"{store.url}/orders/0")
            await response.content()
            if response.code == 200:
                break
            await sleep(reactor, 0.05)
        process.signalProcess("INT")
        assert await child.ended.addTimeout(30, reactor) == 0, child.output.decode()
    finally:
        if not child.ended.called:
            process.signalProcess("KILL")
    output = child.output.decode()
    assert "reading back the orders" in output
    placed = int(re.search(r"(\d+) orders placed, 0 read back wrong", output).group(1))
    assert placed > 0
    check = re.search(r"^check +(\d+) +0 ", output, re.MULTILINE)
    assert check and int(check.group(1)) == placed, output
