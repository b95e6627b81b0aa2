"""
End-to-end test of the store harness itself (:mod:`toystore.testing`): two
front-ends behind which the replicas sit behind proxies, and every operation
the tests and the fault suite rely on: statuses, ``/health``, the leader,
pause and resume, kill and restart, heal and stop.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import pytest_twisted
import treq

from toystore.config import load
from toystore.testing import Store, replica_status

pytestmark = pytest.mark.integration


@pytest_twisted.ensureDeferred
async def test_two_frontends_proxies_and_the_operations(new_store: Callable[..., Store]) -> None:
    """
    A store with two front-ends and the fault proxies starts; both front-ends
    take orders and name the same leader; a paused leader answers no status
    and is replaced; a killed follower restarts and catches up; after
    healing, every log is the same; stop ends every process.
    """
    store = new_store(frontends=2, proxies=True)
    assert store.names == ["catalog", "order-1", "order-2", "order-3", "frontend", "frontend-2"]
    views = {i: load(str(store.configs[f"order-{i}"])) for i in store.replicas}
    for i, view in views.items():  # each replica reaches each other one, and the catalog, through a proxy of its own
        assert view.catalog.connect.endswith(f"port={store.proxies.catalog[i].port}")
        for peer in view.order.replicas:
            if peer.id != i:
                assert peer.peer_address.endswith(f"port={store.proxies.pair[i, peer.id].port}")
    assert store.cluster.catalog.connect.endswith(f"port={store.sites['catalog'].ports['lines']}")
    await store.start_all()
    assert store.sites["frontend-2"].url != store.url
    await store.elected("frontend-2")

    for url in (store.url, store.sites["frontend-2"].url):
        response = await treq.post(f"{url}/orders", json={"name": "Tux", "quantity": 1}, persistent=False)
        assert response.code == 200, await response.text()
        await response.content()
    assert (await store.health("catalog"))["service"] == "catalog"
    assert (await store.health("frontend-2"))["service"] == "frontend"
    leader = await store.leader()
    assert leader is not None and (await store.health(f"order-{leader}"))["role"] == "leader"

    store.pause(f"order-{leader}")
    assert await store.status(leader) is None
    paused = store.sites[f"order-{leader}"]  # asked for real: the harness answers None for a paused one itself
    assert await replica_status(store.reactor, paused.ports["lines"], 0.5, store.cluster.wire, paused.host) is None
    successor = None
    for _ in range(20):  # the front-ends elect another replica on the next order that fails
        response = await treq.post(f"{store.url}/orders", json={"name": "Fox", "quantity": 1}, persistent=False)
        await response.content()
        successor = await store.leader(timeout=1.0)
        if successor not in (None, leader):
            break
    assert successor not in (None, leader)
    store.resume(f"order-{leader}")

    follower = next(i for i in store.replicas if i not in (leader, successor))
    assert await store.kill(f"order-{follower}") == -9
    killed = store.sites[f"order-{follower}"]
    assert await replica_status(store.reactor, killed.ports["lines"], 0.5, store.cluster.wire, killed.host) is None
    store.proxies.peer[successor].cut()
    await store.heal()
    assert store.running(f"order-{follower}")
    assert await store.recovered() is not None
    assert len(set(store.logs().values())) == 1

    children = list(store.children.values())
    await store.stop()
    assert not any(child.running for child in children)


def test_a_store_of_a_cluster_file_is_the_file(tmp_path: Any) -> None:
    """Store.from_file takes the processes and addresses a cluster file names, and writes nothing."""
    first = Store.create(None, tmp_path / "one", frontends=0)
    again = Store.from_file(None, tmp_path / "two", str(first.config))
    assert again.names == ["catalog", "order-1", "order-2", "order-3", "frontend"]
    assert again.sites == first.sites
    assert first.names == ["catalog", "order-1", "order-2", "order-3"]
    assert not (tmp_path / "two").exists()
