"""
A whole store on free loopback ports, for end-to-end tests: a cluster file
written for the test, real twistd children, and wire calls that play the
front-end's part where it is not built yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from toystore.catalog.store import read_ledger
from toystore.localcluster import REPLICAS, cluster_file, connect, wait_for_leader
from toystore.supervise import Child, Supervisor
from toystore.wire import WireProtocol


def write_cluster(directory: Path, **order_knobs: Any) -> tuple[Path, dict[str, int]]:
    """A cluster file on free loopback ports, with knobs that make failures quick to see."""
    return cluster_file(
        directory,
        wire={"reconnect_initial": 0.05, "reconnect_max": 0.5},
        catalog={"initial_stock": 100_000},
        order={"commit_timeout": 3.0, "ack_timeout": 1.0, "discovery_interval": 0.5, **order_knobs},
    )


class Cluster:
    """The processes of one test's store, and calls to them."""

    def __init__(self, reactor: Any, supervisor: Supervisor, directory: Path, **order_knobs: Any) -> None:
        self.reactor = reactor
        self.supervisor = supervisor
        self.directory = directory
        self.config, self.ports = write_cluster(directory, **order_knobs)
        self.replicas: dict[int, Child] = {}
        self._connections: dict[int, WireProtocol] = {}

    async def start_catalog(self) -> Child:
        return await self.supervisor.start("catalog", "toystore-catalog", ["--config", str(self.config)])

    async def start_replica(self, i: int, env: dict[str, str] | None = None) -> Child:
        child = await self.supervisor.start(
            f"order-{i}", "toystore-order", ["--config", str(self.config), "--id", str(i)], env=env
        )
        self.replicas[i] = child
        self._connections.pop(i, None)
        return child

    async def start(self) -> None:
        """The catalog and three replicas, replica 3 leading epoch 1."""
        await self.start_catalog()
        for i in REPLICAS:
            await self.start_replica(i)
        await self.elect(1, 3)

    async def start_store(self, *flags: str, env: dict[int, dict[str, str]] | None = None) -> Child:
        """
        The whole store: catalog, three replicas, and the front-end, which
        elects the leader; ``env`` adds environment variables per replica id.
        """
        await self.start_catalog()
        for i in REPLICAS:
            await self.start_replica(i, (env or {}).get(i))
        self.frontend = await self.supervisor.start(
            "frontend", "toystore-frontend", ["--config", str(self.config), *flags]
        )
        await self.leader_elected()
        return self.frontend

    async def leader_elected(self) -> dict[str, int]:
        """Wait until the front-end's first election is over (it runs after the front-end is ready)."""
        return await wait_for_leader(self.reactor, self.url)

    @property
    def url(self) -> str:
        """The front-end's base URL."""
        return f"http://127.0.0.1:{self.ports['frontend']}"

    async def call(self, i: int, type: str, timeout: float = 5.0, **fields: Any) -> Any:
        """A wire call to replica ``i`` (one cached connection per replica)."""
        connection = self._connections.get(i)
        if connection is None or not connection.connected:
            connection = await connect(self.reactor, self.ports[f"lines{i}"])
            self._connections[i] = connection
        return await connection.call(type, fields, timeout=timeout)

    async def call_catalog(self, type: str, **fields: Any) -> Any:
        """A wire call to the catalog."""
        connection = await connect(self.reactor, self.ports["catalog_lines"])
        try:
            return await connection.call(type, fields)
        finally:
            connection.transport.loseConnection()

    async def elect(self, epoch: int, leader: int, skip: tuple[int, ...] = ()) -> None:
        """What the front-end does: tell ``leader`` it leads, wait for ready, tell the others."""
        reply = await self.call(leader, "lead", epoch=epoch, leader=leader)
        assert reply["ready"], reply
        for i in REPLICAS:
            if i != leader and i not in skip and self.replicas[i].running:
                await self.call(i, "lead", epoch=epoch, leader=leader)

    async def order(self, leader: int, key: str, name: str = "Tux", quantity: int = 1) -> int:
        reply = await self.call(leader, "order", name=name, quantity=quantity, key=key)
        return reply["order_number"]

    async def caught_up(self, length: int | None = None, replicas: tuple[int, ...] = REPLICAS) -> None:
        """Wait until every replica named has ``length`` records on disk (default: the longest log)."""
        for _ in range(200):
            statuses = [await self.call(i, "status") for i in replicas]
            target = length if length is not None else max(s["length"] for s in statuses)
            if all(s["durable"] == target for s in statuses):
                return
            await _sleep(self.reactor, 0.05)
        raise AssertionError(f"replicas did not catch up: {statuses}")

    def ledger(self) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
        """The catalog's ledger and buys, read from its database."""
        return read_ledger(self.directory / "catalog" / "catalog.sqlite")

    def log(self, i: int) -> bytes:
        return (self.directory / f"order-{i}" / "orders.log").read_bytes()

    def close(self) -> None:
        for connection in self._connections.values():
            connection.transport.loseConnection()


def _sleep(reactor: Any, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def gather(*coroutines: Any) -> list[tuple[bool, Any]]:
    return await DeferredList([Deferred.fromCoroutine(c) for c in coroutines], consumeErrors=True)
