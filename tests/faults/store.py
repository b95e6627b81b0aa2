"""
The store under test: the real five processes on loopback, with a
:class:`~.proxy.Proxy` in front of every replica's lines port for each kind
of caller.

Replica *i* is reached by the other replicas through ``peer[i]`` (the
``peer_connect`` of the cluster file: the log stream, fencing and pulls) and
by the front-end through ``frontend[i]`` (its ``connect``).  Cutting
``peer[leader]`` partitions the leader from its followers while the
front-end still reaches it; dropping on ``frontend[leader]`` loses replies
on their way back to the front-end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater

from toystore.catalog.store import read_ledger
from toystore.config import dump, read_raw
from toystore.localcluster import REPLICAS, cluster_file, replica_status
from toystore.supervise import Child, Supervisor

from .proxy import Proxy

#: Knobs that make failures quick to see, and stock that runs out and is restocked.
KNOBS: dict[str, dict[str, Any]] = {
    "wire": {"reconnect_initial": 0.05, "reconnect_max": 0.5},
    "catalog": {"initial_stock": 30, "restock_interval": 2.0, "restock_quantity": 30},
    "order": {"commit_timeout": 3.0, "ack_timeout": 1.0, "discovery_interval": 0.5},
}


def sleep(reactor: Any, seconds: float) -> Any:
    return deferLater(reactor, max(0.0, seconds), lambda: None)


class FaultStore:
    """The processes, their proxies, and what an operator would ask them."""

    def __init__(self, reactor: Any, supervisor: Supervisor, directory: Path) -> None:
        self.reactor = reactor
        self.supervisor = supervisor
        self.directory = directory
        self.children: dict[str, Child] = {}
        self.peer: dict[int, Proxy] = {}
        self.frontend: dict[int, Proxy] = {}
        self.paused: set[str] = set()

    # -- start and stop -----------------------------------------------------

    async def start(self) -> None:
        """Write the cluster file (replicas behind proxies), start every process, wait for a leader."""
        self.config, self.ports = cluster_file(self.directory, **KNOBS)
        raw = read_raw(str(self.config))
        for entry in raw["order"]["replicas"]:
            i = entry["id"]
            target = self.ports[f"lines{i}"]
            self.peer[i] = Proxy(self.reactor, target, f"peers -> replica {i}")
            self.frontend[i] = Proxy(self.reactor, target, f"front-end -> replica {i}")
            entry["peer_connect"] = f"tcp:host=127.0.0.1:port={self.peer[i].start()}"
            entry["connect"] = f"tcp:host=127.0.0.1:port={self.frontend[i].start()}"
        self.config.write_text(dump(raw))
        for name in ("catalog", *(f"order-{i}" for i in REPLICAS), "frontend"):
            await self.start_process(name)
        await self.leader(timeout=30.0)

    async def start_process(self, name: str) -> Child:
        """Start (or restart) the process ``name``: ``catalog``, ``frontend`` or ``order-<i>``."""
        args = ["--config", str(self.config)]
        if name.startswith("order-"):
            command, args = "toystore-order", [*args, "--id", name.split("-")[1]]
        else:
            command = f"toystore-{name}"
        log = self.directory / "logs" / f"{name}.log"
        self.children[name] = await self.supervisor.start(name, command, args, log)
        return self.children[name]

    async def kill(self, name: str) -> None:
        """SIGKILL ``name`` and wait until it is gone."""
        child = self.children[name]
        child.signal("KILL")
        await self.supervisor.wait(child)

    def pause(self, name: str) -> None:
        self.children[name].signal("STOP")
        self.paused.add(name)

    def resume(self, name: str) -> None:
        self.children[name].signal("CONT")
        self.paused.discard(name)

    async def heal(self) -> None:
        """Resume paused processes, heal every proxy, restart every process that is down."""
        for name in list(self.paused):
            self.resume(name)
        for proxy in (*self.peer.values(), *self.frontend.values()):
            proxy.heal()
        for name, child in list(self.children.items()):
            if not child.running:
                await self.start_process(name)

    async def stop(self) -> None:
        """Stop the processes (SIGTERM, then SIGKILL) and the proxies."""
        for name in list(self.paused):
            self.resume(name)
        await self.supervisor.stop_all()
        await DeferredList([proxy.stop() for proxy in (*self.peer.values(), *self.frontend.values())])

    # -- questions -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['frontend']}"

    async def status(self, i: int, timeout: float = 1.0) -> dict[str, Any] | None:
        """Replica ``i``'s status, straight from its lines port, or None."""
        if not self.children[f"order-{i}"].running or f"order-{i}" in self.paused:
            return None
        return await replica_status(self.reactor, self.ports[f"lines{i}"], timeout)

    async def statuses(self) -> dict[int, dict[str, Any]]:
        found = {i: await self.status(i) for i in REPLICAS}
        return {i: s for i, s in found.items() if s is not None}

    async def leader(self, timeout: float = 10.0) -> int | None:
        """The replica that leads the newest epoch, as the replicas say; None if none within ``timeout``."""
        deadline = self.reactor.seconds() + timeout
        while True:
            statuses = await self.statuses()
            leaders = [s for s in statuses.values() if s["role"] == "leader"]
            if leaders:
                newest = max(leaders, key=lambda s: s["epoch"])
                if newest["epoch"] >= max(s["epoch"] for s in statuses.values()):
                    return newest["id"]
            if self.reactor.seconds() >= deadline:
                return None
            await sleep(self.reactor, 0.05)

    async def recovered(self, timeout: float = 30.0) -> dict[int, dict[str, Any]] | None:
        """
        Wait until one replica leads the newest epoch and all three hold its
        whole log on disk, committed; the statuses then, or None.
        """
        deadline = self.reactor.seconds() + timeout
        while self.reactor.seconds() < deadline:
            statuses = await self.statuses()
            if len(statuses) == len(REPLICAS):
                leaders = [s for s in statuses.values() if s["role"] == "leader"]
                lengths = {s["length"] for s in statuses.values()} | {s["durable"] for s in statuses.values()}
                if len(leaders) == 1 and len(lengths) == 1 and leaders[0]["commit"] == leaders[0]["length"]:
                    return statuses
            await sleep(self.reactor, 0.1)
        return None

    def logs(self) -> dict[int, bytes]:
        return {i: (self.directory / f"order-{i}" / "orders.log").read_bytes() for i in REPLICAS}

    def ledger(self) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
        return read_ledger(self.directory / "catalog" / "catalog.sqlite")
