"""
Properties of the public API over generated input, against a live store
(invariant 6 of ``docs/architecture.rst``): whatever a client POSTs to ``/orders``
(any JSON value, near-valid orders, arbitrary bytes, with or without an
Idempotency-Key) and whatever it puts in ``/products/<x>`` or
``/orders/<x>``, the answer is never a 5xx and always a JSON envelope; a 4xx
changes no stock and no order log (a 2xx order may, and is then replicated).

Hypothesis runs in a thread with blocking sockets, so the test's reactor
keeps running the wire calls that take the store's state between examples.
Its examples are derandomized (the seed is fixed by the test's code), so a
failure replays on the next run; the falsifying example is in the error.
"""

from __future__ import annotations

import json
from typing import Any, Callable
from urllib.parse import quote, quote_from_bytes

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread, deferToThread

from toystore.catalog.seed import TOYS
from toystore.supervise import Supervisor
from toystore.testing import Store

from .conftest import QUICK
from .test_hostile_input import request_bytes, send, snapshot

pytestmark = pytest.mark.integration

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
names = st.sampled_from(sorted(TOYS)) | st.text(max_size=120) | json_values
quantities = st.integers(-2, 110) | st.integers() | json_values
#: Objects shaped like orders: fields of any type, some missing, some extra.
orders = st.fixed_dictionaries(
    {}, optional={"name": names, "quantity": quantities, "coupon": json_values}
) | st.fixed_dictionaries({"name": names, "quantity": quantities})
#: Orders of the right shape: most are placed, some name no toy, some reuse a key.
well_formed = st.fixed_dictionaries(
    {"name": st.sampled_from([*sorted(TOYS), "Unicorn", "tux"]), "quantity": st.integers(1, 100)}
)
#: NaN and Infinity written as the bare tokens Python's json writes for them.  Well-formed
#: orders are weighted up: left to one_of, Hypothesis draws few of them.
bodies = st.sampled_from([0, 0, 0, 1, 2, 3]).flatmap(
    lambda kind: [
        well_formed.map(lambda v: json.dumps(v).encode()),
        orders.map(lambda v: json.dumps(v, allow_nan=True).encode()),
        json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
        st.binary(max_size=200),
    ][kind]
)
keys = st.none() | st.sampled_from(["prop-a", "prop-b", "prop-c"])
segments = (
    st.text(max_size=40).map(lambda s: quote(s, safe="").encode())
    | st.binary(max_size=40).map(lambda b: quote_from_bytes(b, safe="").encode())
    | st.binary(max_size=40).map(lambda b: bytes(c for c in b if c not in b" \r\n\t"))
    | st.sampled_from(
        [b"..", b".", b"%2e%2e", b"0", b"-0", b"product_name=Tux", b"order_num=0", *map(str.encode, TOYS)]
    )
)
targets = st.tuples(
    st.sampled_from([b"/products/", b"/orders/", b"/products?product_name=", b"/orders?order_number="]), segments
)


def envelope_problem(status: int, body: bytes) -> str | None:
    """What is wrong with ``body`` as the envelope of a ``status`` reply, or None."""
    try:
        envelope = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:200]!r}"
    if status < 300:
        return None if isinstance(envelope, dict) and set(envelope) == {"data"} else f"not a data envelope: {envelope}"
    error = envelope.get("error") if isinstance(envelope, dict) else None
    if not isinstance(error, dict) or error.get("code") != status or not isinstance(error.get("message"), str):
        return f"not the error envelope of a {status}: {envelope!r}"
    return None


async def settled(cluster: Store) -> dict[str, Any]:
    """The store's state once every replica holds every record."""
    await cluster.caught_up()
    return await snapshot(cluster)


def check_orders(port: int, state: Callable[[], dict[str, Any]]) -> None:
    """The POST /orders property (blocking: run it in a thread)."""

    @SETTINGS
    @given(body=bodies, key=keys)
    def placing(body: bytes, key: str | None) -> None:
        headers = () if key is None else (b"Idempotency-Key: " + key.encode(),)
        before = state()
        status, _, reply = send(port, request_bytes("POST", b"/orders", body, headers), "POST")
        assert status < 500, (status, reply)
        problem = envelope_problem(status, reply)
        assert problem is None, problem
        if status >= 400:
            assert state() == before, f"a {status} changed the store: {reply!r}"

    placing()


def check_paths(port: int) -> None:
    """The GET /products/<x> and /orders/<x> property (blocking: run it in a thread)."""

    @SETTINGS
    @given(target=targets)
    def reading(target: tuple[bytes, bytes]) -> None:
        status, _, reply = send(port, request_bytes("GET", b"".join(target)))
        assert status < 500, (status, reply)
        problem = envelope_problem(status, reply)
        assert problem is None, problem

    reading()


@pytest_twisted.ensureDeferred
async def test_generated_requests(reactor: Any, supervisor: Supervisor, tmp_path: Any) -> None:
    """
    Generated orders and paths never get a 5xx or a non-JSON reply; a
    refused order changes nothing, and reading changes nothing at all.
    """
    cluster = Store.create(reactor, tmp_path, supervisor, **QUICK)
    try:
        await cluster.start_all()
        port = cluster.sites["frontend"].ports["http"]

        def state() -> dict[str, Any]:
            return blockingCallFromThread(reactor, lambda: Deferred.fromCoroutine(settled(cluster)))

        await deferToThread(check_orders, port, state)
        before = await settled(cluster)
        await deferToThread(check_paths, port)
        after = await settled(cluster)
    finally:
        await cluster.close()
    assert after == before, "reading changed the store"
    dead = [child.name for child in supervisor.children if not child.running]
    assert not dead, f"processes died: {dead}"
