"""
Hostile input against a live store (invariant 6 of ``docs/architecture.rst``): a
table of malformed, ill-typed, oversized and misdirected requests, each sent
as raw bytes on its own connection so that nothing between the test and the
front-end normalises it.  Every one must get its 4xx with a JSON error
envelope; afterwards every toy's stock and every replica's log are as they
were, every process still runs and none logged a traceback.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from toystore.supervise import Supervisor
from toystore.testing import REPLICAS, Store

from .conftest import QUICK

pytestmark = pytest.mark.integration

#: The key of the one order placed before the table, which a case reuses.
FIRST_KEY = "hostile-first"
FIRST_KEY_HEADER = b"Idempotency-Key: " + FIRST_KEY.encode()


def request_bytes(method: str, target: bytes, body: bytes | None = None, headers: tuple[bytes, ...] = ()) -> bytes:
    """An HTTP/1.1 request exactly as given: nothing is quoted, checked or normalised."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *headers]
    if body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def send(port: int, raw: bytes, method: str = "GET", timeout: float = 15.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` on a new connection (blocking); the status, headers (lower-cased names) and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        try:
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            response.close()


def error_problem(status: int, headers: dict[str, str], body: bytes) -> str | None:
    """What is wrong with ``body`` as the JSON error envelope of a ``status`` reply, or None."""
    if not headers.get("content-type", "").startswith("application/json"):
        return f"content-type {headers.get('content-type')!r}"
    try:
        envelope = json.loads(body)
    except ValueError:
        return f"body is not JSON: {body[:200]!r}"
    error = envelope.get("error") if isinstance(envelope, dict) else None
    if set(envelope) != {"error"} or not isinstance(error, dict):
        return f"not an error envelope: {envelope!r}"
    if error.get("code") != status or not isinstance(error.get("message"), str):
        return f"error object does not match status {status}: {error!r}"
    return None


async def snapshot(cluster: Store) -> dict[str, Any]:
    """Every toy's stock (from the catalog) and every replica's log length."""
    toys = (await cluster.call("catalog", "list"))["toys"]
    logs = {i: (await cluster.call(f"order-{i}", "status"))["length"] for i in REPLICAS}
    return {"stock": {toy["name"]: toy["quantity"] for toy in toys}, "logs": logs}


def _post(body: bytes, *headers: bytes) -> tuple[str, bytes]:
    return "POST", request_bytes("POST", b"/orders", body, headers)


def _order(**fields: Any) -> bytes:
    return json.dumps({"name": "Tux", "quantity": 1, **fields}).encode()


def _name(name: Any) -> bytes:
    return json.dumps({"name": name, "quantity": 1}).encode()


def _quantity(quantity: Any) -> bytes:
    return json.dumps({"name": "Tux", "quantity": quantity}).encode()


def _get(target: bytes, method: str = "GET") -> tuple[str, bytes]:
    return method, request_bytes(method, target, b"" if method in ("POST", "PUT", "PATCH") else None)


def _raw(data: bytes) -> tuple[str, bytes]:
    return "GET", data


BODIES = [
    ("truncated JSON", b'{"name": "Tux", "quantity": 1', 400),
    ("JSON then garbage", b'{"name": "Tux", "quantity": 1} x', 400),
    ("empty body", b"", 400),
    ("whitespace body", b"  \r\n ", 400),
    ("bare NaN", b"NaN", 400),
    ("NaN quantity", b'{"name": "Tux", "quantity": NaN}', 400),
    ("Infinity quantity", b'{"name": "Tux", "quantity": Infinity}', 400),
    ("-Infinity quantity", b'{"name": "Tux", "quantity": -Infinity}', 400),
    ("1e400 quantity", b'{"name": "Tux", "quantity": 1e400}', 400),
    ("duplicate key", b'{"name": "Tux", "quantity": 1, "quantity": 2}', 400),
    ("duplicate name", b'{"name": "Tux", "name": "Fox", "quantity": 1}', 400),
    ("nested 50000 deep", b"[" * 50_000, 400),
    ("non-UTF-8 byte in body", b'{"name": "\xff", "quantity": 1}', 400),
    ("UTF-16 body", '{"name": "Tux", "quantity": 1}'.encode("utf-16"), 400),
    ("lone surrogate in name", b'{"name": "\\ud800", "quantity": 1}', 400),
    ("array body", b"[]", 400),
    ("array of an order", b'[{"name": "Tux", "quantity": 1}]', 400),
    ("string body", b'"Tux"', 400),
    ("null body", b"null", 400),
    ("number body", b"1", 400),
    ("true body", b"true", 400),
    ("unknown field", _order(coupon="FREE"), 400),
    ("missing name", b'{"quantity": 1}', 400),
    ("missing quantity", b'{"name": "Tux"}', 400),
    ("empty object", b"{}", 400),
    ("name a number", _name(1), 400),
    ("name null", _name(None), 400),
    ("name a list", _name(["Tux"]), 400),
    ("name an object", _name({"name": "Tux"}), 400),
    ("name a bool", _name(True), 400),
    ("empty name", _name(""), 400),
    ("101-character name", _name("T" * 101), 400),
    ("10000-character name", _name("T" * 10_000), 400),
    ("NUL in name", _name("Tu\x00x"), 400),
    ("newline in name", _name("Tux\n"), 400),
    ("quantity true", _quantity(True), 400),
    ("quantity false", _quantity(False), 400),
    ("quantity 1.0", _quantity(1.0), 400),
    ("quantity 1.5", _quantity(1.5), 400),
    ("quantity a string", _quantity("1"), 400),
    ("quantity null", _quantity(None), 400),
    ("quantity a list", _quantity([1]), 400),
    ("quantity negative", _quantity(-1), 400),
    ("quantity zero", _quantity(0), 400),
    ("quantity over the maximum", _quantity(101), 400),
    ("quantity 10**30", _quantity(10**30), 400),
    ("quantity -10**30", _quantity(-(10**30)), 400),
    ("unknown toy", _name("Unicorn"), 404),
    ("10 MB body", b"x" * 10_000_000, 413),
]

KEYS = [
    ("key not UTF-8", b"Idempotency-Key: \xff\xfe", 400),
    ("key of 201 characters", b"Idempotency-Key: " + b"k" * 201, 400),
    ("key empty", b"Idempotency-Key: ", 400),
    ("key with a control character", b"Idempotency-Key: a\x01b", 400),
]

PATHS = [
    (b"/products/%00", 400),
    (b"/products/Tux%00", 400),
    (b"/products/Tu%0Ax", 400),
    (b"/products/..", 404),
    (b"/products/%2e%2e", 404),
    (b"/products/../orders/0", 404),
    (b"/products/%2e%2e/orders/0", 404),
    (b"/products/%2554ux", 404),
    (b"/products/%ff", 400),
    (b"/products/\xff", 400),
    (b"/products/" + b"a" * 101, 400),
    (b"/products/" + b"a" * 10_000, 400),
    (b"/products/" + b"a" * 20_000, 400),
    (b"/products/Tux/extra", 404),
    (b"/no/such/path", 404),
    (b"/", 404),
    (b"//orders/0", 404),
    (b"http://evil.example/orders/0", 404),
    (b"/orders/-1", 400),
    (b"/orders/abc", 400),
    (b"/orders/1.5", 400),
    (b"/orders/0x10", 400),
    (b"/orders/" + b"9" * 30, 400),
    (b"/orders/%00", 400),
    (b"/orders/%201", 400),
    (b"/orders/%D9%A1", 400),
    (b"/orders/", 400),
    (b"/orders/order_num=-1", 400),
    (b"/orders/12345", 404),
    (b"/products?product_name=", 400),
    (b"/products?product_name=Tux&product_name=Fox", 400),
    (b"/products?product_name=%ff", 400),
    (b"/products?%%%", 400),
    (b"/products?name=Tux", 400),
    (b"/orders?order_number=abc", 400),
    (b"/orders?order_number=1&order_number=2", 400),
    (b"/orders?order_number=-1", 400),
    (b"/orders?order_number=", 400),
    (b"/orders?", 400),
]

METHODS = [
    *[(m, p) for p in (b"/products/Tux", b"/products", b"/orders", b"/orders/0") for m in ("PUT", "DELETE", "PATCH")],
    ("POST", b"/products/Tux"),
    ("POST", b"/products"),
    ("POST", b"/orders/0"),
    ("TRACE", b"/orders"),
    ("OPTIONS", b"/orders/0"),
    ("BREW", b"/orders"),
    ("POST", b"/health"),
    ("POST", b"/leader"),
    ("DELETE", b"/cache"),
    ("PUT", b"/metrics"),
    ("GET", b"*"),
]

FRAMING = [
    ("garbage request line", b"GARBAGE\r\n\r\n"),
    ("space in the target", b"GET /products/T ux HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("bad chunk size", b"POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
    ("negative Content-Length", b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"),
    ("two Content-Lengths", b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
    ("600 headers", b"GET /products/Tux HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 600 + b"\r\n"),
    ("header over 16 KB", b"GET /products/Tux HTTP/1.1\r\nHost: x\r\nX-A: " + b"b" * 20_000 + b"\r\n\r\n"),
]


def table() -> list[tuple[str, tuple[str, bytes], int]]:
    """Every case: a label, (method, raw request), and the status it must get."""
    cases = [(f"POST /orders: {label}", _post(body), status) for label, body, status in BODIES]
    cases += [(f"POST /orders: {label}", _post(_order(), header), status) for label, header, status in KEYS]
    cases.append(("POST /orders: key reused for another order", _post(_order(quantity=2), FIRST_KEY_HEADER), 422))
    cases += [(f"GET {target[:60]!r}", _get(target), status) for target, status in PATHS]
    cases += [(f"{method} {target.decode()}", _get(target, method), 405) for method, target in METHODS]
    cases += [(f"framing: {label}", _raw(data), 400) for label, data in FRAMING]
    return cases


def run_table(port: int, cases: list[tuple[str, tuple[str, bytes], int]]) -> list[str]:
    """Send every case (blocking, in a thread); what went wrong, one line per case."""
    failures = []
    for label, (method, raw), expected in cases:
        try:
            status, headers, body = send(port, raw, method)
        except (OSError, http.client.HTTPException) as e:
            failures.append(f"{label}: no reply ({type(e).__name__}: {e})")
            continue
        problem = error_problem(status, headers, body)
        if status != expected:
            failures.append(f"{label}: status {status}, expected {expected}: {body[:200]!r}")
        elif problem:
            failures.append(f"{label}: {problem}")
    return failures


@pytest_twisted.ensureDeferred
async def test_hostile_requests_get_json_4xx_and_change_nothing(
    reactor: Any, supervisor: Supervisor, tmp_path: Any
) -> None:
    """
    Each request of the table gets its 4xx and a JSON error envelope; no
    stock or order log changes; no process dies or logs a traceback.
    """
    cluster = Store.create(reactor, tmp_path, supervisor, **QUICK)
    try:
        await cluster.start_all()
        port = cluster.sites["frontend"].ports["http"]
        placed = await deferToThread(send, port, _post(_order(), FIRST_KEY_HEADER)[1], "POST")
        assert placed[0] == 200, placed
        await cluster.caught_up()
        before = await snapshot(cluster)
        cases = table()
        assert len(cases) >= 40
        failures = await deferToThread(run_table, port, cases)
        await cluster.caught_up()
        after = await snapshot(cluster)
        still = await deferToThread(send, port, request_bytes("GET", b"/products/Tux"))
    finally:
        await cluster.close()
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)
    assert after == before, f"a refused request changed the store: {before} -> {after}"
    assert still[0] == 200, still
    dead = [child.name for child in supervisor.children if not child.running]
    assert not dead, f"processes died: {dead}"
    traced = [child for child in supervisor.children if "Traceback" in child.output()]
    assert not traced, "\n\n".join(f"{child.name}:\n{child.output()}" for child in traced)
