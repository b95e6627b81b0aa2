"""
The nemesis: one fault at a time, drawn from a seed, each healed before the
next.

=================  ===========================================================
``kill-leader``     SIGKILL the leader; restart it after a delay
``kill-follower``   SIGKILL a follower; restart it after a delay
``kill-catalog``    SIGKILL the catalog; restart it after a delay
``kill-frontend``   SIGKILL the front-end; restart it after a delay
``pause-leader``    SIGSTOP the leader; SIGCONT once another replica leads
                    (or after 10 s)
``partition``       cut the leader's peer proxy: its followers cannot stream
                    from it, the front-end still reaches it
``stall``           stall the leader's peer proxy: the stream hangs
``drop-replies``    the front-end's proxy to the leader drops every reply
=================  ===========================================================
"""

from __future__ import annotations

import random
from typing import Any

from toystore.testing import Store, sleep

FAULTS = (
    "kill-leader",
    "kill-follower",
    "kill-catalog",
    "kill-frontend",
    "pause-leader",
    "partition",
    "stall",
    "drop-replies",
)


class Nemesis:
    """
    Injects faults into ``store`` (made with its proxies) until told to
    stop; ``seed`` decides which, where and for how long.
    """

    def __init__(self, store: Store, seed: int, faults: tuple[str, ...] = FAULTS) -> None:
        self.store = store
        self.reactor = store.reactor
        self.rng = random.Random(f"nemesis-{seed}")
        self.faults = faults
        self.done: list[dict[str, Any]] = []

    async def run(self, duration: float) -> list[dict[str, Any]]:
        """Inject faults for ``duration`` seconds (the last one is healed after), then heal everything."""
        end = self.reactor.seconds() + duration
        await sleep(self.reactor, self.rng.uniform(0.5, 1.5))
        while self.reactor.seconds() < end:
            fault = self.rng.choice(self.faults)
            hold = self.rng.uniform(0.5, 3.0)
            started = self.reactor.seconds()
            detail = await getattr(self, "_" + fault.replace("-", "_"))(hold)
            self.done.append({"fault": fault, "at": round(started, 2), "hold": round(hold, 2), **detail})
            await sleep(self.reactor, self.rng.uniform(0.5, 2.0))
        await self.store.heal()
        return self.done

    async def _leader(self) -> int:
        leader = await self.store.leader(timeout=10.0)
        return leader if leader is not None else self.rng.choice(self.store.replicas)

    async def _kill_and_restart(self, name: str, hold: float) -> dict[str, Any]:
        await self.store.kill(name)
        await sleep(self.reactor, hold)
        await self.store.start(name, *self.store.flags[name])
        return {"target": name}

    async def _kill_leader(self, hold: float) -> dict[str, Any]:
        return await self._kill_and_restart(f"order-{await self._leader()}", hold)

    async def _kill_follower(self, hold: float) -> dict[str, Any]:
        leader = await self._leader()
        follower = self.rng.choice([i for i in self.store.replicas if i != leader])
        return await self._kill_and_restart(f"order-{follower}", hold)

    async def _kill_catalog(self, hold: float) -> dict[str, Any]:
        return await self._kill_and_restart("catalog", hold)

    async def _kill_frontend(self, hold: float) -> dict[str, Any]:
        return await self._kill_and_restart("frontend", hold)

    async def _pause_leader(self, hold: float) -> dict[str, Any]:
        leader = await self._leader()
        name = f"order-{leader}"
        self.store.pause(name)
        deadline = self.reactor.seconds() + 10.0
        successor = None
        while self.reactor.seconds() < deadline:
            successor = await self.store.leader(timeout=0.5)
            if successor is not None and successor != leader:
                break
            await sleep(self.reactor, 0.1)
        self.store.resume(name)
        return {"target": name, "successor": successor}

    async def _proxy_fault(self, proxy: Any, action: str, hold: float, leader: int) -> dict[str, Any]:
        getattr(proxy, action)()
        await sleep(self.reactor, hold)
        proxy.heal()
        return {"target": f"order-{leader}", "proxy": proxy.name}

    async def _partition(self, hold: float) -> dict[str, Any]:
        leader = await self._leader()
        return await self._proxy_fault(self.store.proxies.peer[leader], "cut", hold, leader)

    async def _stall(self, hold: float) -> dict[str, Any]:
        leader = await self._leader()
        return await self._proxy_fault(self.store.proxies.peer[leader], "stall", hold, leader)

    async def _drop_replies(self, hold: float) -> dict[str, Any]:
        leader = await self._leader()
        return await self._proxy_fault(self.store.proxies.frontend[leader], "drop", hold, leader)
