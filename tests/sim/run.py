"""
One simulated run: a store, a nemesis drawn from the seed, then healing,
then the final checks.

Each seed also draws its own mix (how many clients, how much stock, which
faults, how often, how many at once, the network's weather), so that many
seeds explore many kinds of trouble rather than one kind many times.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from toystore.order.core import Node, Role, Timing

from .checker import Checker, Violation
from .store import CATALOG, Catalog, Client, Reader, Replica
from .world import World

FAULTS = (
    "crash",
    "crash-leader",
    "pause",
    "isolate",
    "cut-in",
    "cut-out",
    "split",
    "cut-catalog",
    "cut-clients",
    "catalog-down",
    "lose-disk",
)
TIMING = Timing(election=1.0, heartbeat=0.1, stagger=0.2)


@dataclass
class Result:
    seed: int
    replicas: int
    steps: int
    violation: Violation | None
    faults: list[str] = field(default_factory=list)
    orders: int = 0
    acked: int = 0
    elections: int = 0
    digest: str = ""
    highest_leads: bool = False


class Simulation:
    def __init__(
        self,
        seed: int,
        replicas: int = 3,
        duration: float = 30.0,
        quiet: float = 20.0,
        node_type: type[Node] = Node,
        faults: tuple[str, ...] = FAULTS,
        catalog_type: type[Catalog] = Catalog,
    ) -> None:
        self.seed = seed
        self.world = world = World(seed)
        self.rng = world.rng
        self.checker = Checker()
        self.duration = duration
        self.quiet = quiet
        self.ids = tuple(range(1, replicas + 1))
        self.replicas = {i: Replica(world, self.checker, i, self.ids, node_type, TIMING) for i in self.ids}
        self.catalog = catalog_type(world, stock=self.rng.choice([30, 300, 10**6]))
        self.clients = [Client(world, self.checker, f"client-{k}", self.ids) for k in range(self.rng.randint(1, 4))]
        self.readers = [Reader(world, self.checker, f"reader-{k}", self.ids) for k in range(self.rng.randint(0, 2))]
        # the seed's mix of faults
        self.menu = tuple(f for f in faults if self.rng.random() < 0.6) or faults
        self.fault_gap = self.rng.choice([0.5, 2.0, 5.0])
        self.most_at_once = self.rng.choice([1, 1, 2])
        self.active: list[str] = []
        self.ended = False
        self.busy: set[Any] = set()
        self.log: list[str] = []

    # -- the run --------------------------------------------------------------------------

    def run(self) -> Result:
        world = self.world
        violation = None
        try:
            for replica in self.replicas.values():
                replica.start()
            for client in [*self.clients, *self.readers]:
                client.start()
            world.after(self.rng.expovariate(1 / self.fault_gap), self._fault)
            world.run_until(self.duration)
            self._heal_all()
            world.run_until(self.duration + self.quiet)
            self._check_converged()
            self.checker.final(self.catalog.sold)
        except Violation as error:
            violation = error
        return self._result(violation)

    def _result(self, violation: Violation | None) -> Result:
        digest = hashlib.sha256(repr((self.world.steps, self.checker.committed_records, sorted(self.checker.leaders.items()))).encode())
        leader = self._leader()
        return Result(
            seed=self.seed,
            replicas=len(self.ids),
            steps=self.world.steps,
            violation=violation,
            faults=self.log,
            orders=len(self.checker.orders),
            acked=len(self.checker.acked),
            elections=sum(r.node.counters.elections for r in self.replicas.values() if r.up),
            digest=digest.hexdigest()[:16],
            highest_leads=leader is not None and leader.id == self.ids[-1],
        )

    def _leader(self) -> Replica | None:
        leaders = [r for r in self.replicas.values() if r.up and r.node.serving]
        return max(leaders, key=lambda r: r.node.epoch) if leaders else None

    def _check_converged(self) -> None:
        """After healing and a quiet spell: a leader serves, every log is its log, and no client waits."""
        leader = self._leader()
        if leader is None:
            raise Violation("liveness", f"no replica serves {self.quiet} s after healing")
        for replica in self.replicas.values():
            if replica.chain != leader.chain or replica.node.commit != len(leader.records):
                raise Violation(
                    "liveness",
                    f"replica {replica.id} holds {len(replica.records)} records (commit {replica.node.commit}), "
                    f"the leader {leader.id} {len(leader.records)}, {self.quiet} s after healing",
                )
        waiting = [client.name for client in self.clients if client.busy]
        if waiting:
            raise Violation("liveness", f"{waiting} still wait for an order {self.quiet} s after healing")

    # -- the nemesis ----------------------------------------------------------------------

    def _fault(self) -> None:
        world = self.world
        if self.ended or world.now >= self.duration:
            return
        world.after(self.rng.expovariate(1 / self.fault_gap), self._fault)
        if len(self.active) >= self.most_at_once:
            return
        kind = self.rng.choice(self.menu)
        hold = self.rng.choice([self.rng.uniform(0.05, 1.0), self.rng.uniform(1.0, 5.0), self.rng.uniform(5.0, 12.0)])
        heal = getattr(self, "_" + kind.replace("-", "_"))()
        if heal is None:
            return
        self.active.append(kind)
        self.log.append(f"{world.now:.3f} {kind} for {hold:.2f} s")

        def healed() -> None:
            if not self.ended:
                heal()
                self.active.remove(kind)

        world.after(hold, healed)

    def _pick(self, leader: bool = False) -> Replica | None:
        free = [r for r in self.replicas.values() if r.id not in self.busy and r.up]
        if leader:
            free = [r for r in free if r.node.role is Role.LEADER]
        if not free:
            return None
        replica = self.rng.choice(free)
        self.busy.add(replica.id)
        return replica

    def _crash(self, leader: bool = False, lose_disk: bool = False) -> Any:
        replica = self._pick(leader)
        if replica is None:
            return None
        was_leader = replica.node.role is Role.LEADER
        replica.crash(lose_disk=lose_disk)
        if was_leader and self.rng.random() < 0.8:
            # its sockets are reset: followers that can hear it learn at once
            for other in self.replicas.values():
                if other.up and other.node.leader == replica.id and (replica.id, other.id) not in self.world.blocked:
                    self.world.after(self.rng.uniform(0.0002, 0.002), other._event, "leader lost")

        def heal() -> None:
            replica.start()
            self.busy.discard(replica.id)

        return heal

    def _crash_leader(self) -> Any:
        return self._crash(leader=True)

    def _lose_disk(self) -> Any:
        if any(not r.disk_state.voter or not r.up for r in self.replicas.values()):
            return None  # one lost disk at a time, and not while another replica is down
        return self._crash(lose_disk=True)

    def _pause(self) -> Any:
        replica = self._pick()
        if replica is None:
            return None
        replica.pause()

        def heal() -> None:
            self.busy.discard(replica.id)
            if replica.up:
                replica.resume()

        return heal

    def _links(self, links: list[tuple[Any, Any]]) -> Any:
        self.world.block(links)
        return lambda: self.world.unblock(links)

    def _others(self, replica: int) -> list[Any]:
        return [i for i in self.ids if i != replica]

    def _isolate(self) -> Any:
        r = self.rng.choice(self.ids)
        everyone = self._others(r) + [CATALOG] + [c.name for c in [*self.clients, *self.readers]]
        return self._links([(r, x) for x in everyone] + [(x, r) for x in everyone])

    def _cut_in(self) -> Any:
        r = self.rng.choice(self.ids)
        return self._links([(x, r) for x in self._others(r)])

    def _cut_out(self) -> Any:
        r = self.rng.choice(self.ids)
        return self._links([(r, x) for x in self._others(r)])

    def _split(self) -> Any:
        ids = list(self.ids)
        self.rng.shuffle(ids)
        minority = ids[: self.rng.randint(1, len(ids) // 2)]
        rest = [i for i in ids if i not in minority]
        return self._links([(a, b) for a in minority for b in rest] + [(b, a) for a in minority for b in rest])

    def _cut_catalog(self) -> Any:
        r = self.rng.choice(self.ids)
        return self._links([(r, CATALOG), (CATALOG, r)])

    def _cut_clients(self) -> Any:
        r = self.rng.choice(self.ids)
        names = [c.name for c in [*self.clients, *self.readers]]
        return self._links([(r, n) for n in names] + [(n, r) for n in names])

    def _catalog_down(self) -> Any:
        self.catalog.up = False

        def heal() -> None:
            self.catalog.up = True

        return heal

    def _heal_all(self) -> None:
        """The end of the faults: every link restored, every replica up, no new orders."""
        self.world.blocked.clear()
        self.catalog.up = True
        for replica in self.replicas.values():
            if not replica.up:
                replica.start()
            elif replica.paused:
                replica.resume()
        self.ended = True  # heals still scheduled do nothing, and no new fault starts
        for client in self.clients:
            client.ordering = False
        for reader in self.readers:
            reader.running = False


def replay_command(result: Result, duration: float, bug: str | None) -> str:
    command = f"python -m tests.sim --seed {result.seed} --replicas {result.replicas} --duration {duration:g}"
    return command + (f" --bug {bug}" if bug else "")
