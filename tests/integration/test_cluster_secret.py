"""
End-to-end test of the cluster secret: a store whose cluster file has one
works as usual, and its lines ports serve no connection that does not give it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString

from toystore.config import load
from toystore.envelope import Unauthorized
from toystore.supervise import Supervisor
from toystore.testing import Store, connect
from toystore.wire import WireFactory

pytestmark = pytest.mark.integration

SECRET = "end-to-end-cluster-secret"


@pytest_twisted.ensureDeferred
async def test_store_with_a_secret(reactor: Any, supervisor: Supervisor, tmp_path: Path) -> None:
    """
    Every internal connection of the store authenticates, so orders go
    through; a raw connection to the catalog's lines port that does not give
    the secret gets a 401 and is closed, and so does one with a wrong secret.
    """
    store = Store.create(reactor, tmp_path, supervisor, wire={"secret": SECRET})
    await store.start_all()
    url = store.url
    for n in range(3):
        response = await treq.post(f"{url}/orders", json={"name": "Tux", "quantity": 1}, persistent=False)
        assert (response.code, await response.json()) == (200, {"data": {"order_number": n}})
    response = await treq.get(f"{url}/orders/2", persistent=False)
    assert response.code == 200

    wire = load(str(store.config), environ={}).wire
    assert wire.secret == SECRET
    port = store.sites["catalog"].ports["lines"]
    trusted = await connect(reactor, port, wire)
    try:
        assert (await trusted.call("query", {"name": "Tux"}))["quantity"] == 97
    finally:
        trusted.transport.loseConnection()

    closed: Deferred[None] = Deferred()
    watcher = SimpleNamespace(connection_lost=lambda connection, reason: closed.callback(None))
    endpoint = clientFromString(reactor, f"tcp:host=127.0.0.1:port={port}")
    raw = await endpoint.connect(WireFactory(watcher, reactor, replace(wire, secret=""), client=True))
    with pytest.raises(Unauthorized, match="authenticate first"):
        await raw.call("query", {"name": "Tux"})
    await closed  # the catalog closed the connection
    with pytest.raises(Unauthorized, match="wrong secret"):
        await connect(reactor, port, replace(wire, secret="not-the-cluster-secret"))
