"""
The nemesis: one fault at a time, drawn from a seed, each healed before the
next.  Each kind is named by what it blocks; every one is held for the run's
hold (``--hold``; by default 0.5 to 3 s, drawn from the seed).

=============================  ===============================================
``kill-leader``                SIGKILL the leader; restart it after the hold
``kill-follower``              SIGKILL a follower; restart it after the hold
``kill-catalog``               SIGKILL the catalog; restart it after the hold
``kill-frontend``              SIGKILL a front-end (one of them, if there are
                               two); restart it after the hold
``pause-leader``               SIGSTOP the leader; SIGCONT once another
                               replica leads (at most 10 s), or after the hold
                               when ``--hold`` is given
``cut-leader-lines``           the leader's lines port unreachable from its
                               followers (they cannot reach it; it still
                               reaches theirs; the front-ends still reach it);
                               ``partition`` is its old name
``cut-leader-both``            the leader and its followers cut both ways:
                               neither side reaches the other's lines port
                               (the front-ends still reach every replica)
``cut-frontend-leader``        the front-ends cannot reach the leader's lines
                               port; the replicas still reach each other and
                               the catalog
``cut-leader-catalog``         the leader cannot reach the catalog; the
                               front-ends and the other replicas still do
``stall``                      stall the followers' connections to the
                               leader: the stream hangs with its connections
                               open
``drop-replies``               the front-ends' proxy to the leader drops every
                               reply (requests still arrive and are served)
``isolate-leader``             (hosts only) the leader's host exchanges no
                               packet with any other host
``cut-pair``                   (hosts only) two hosts drawn from all of the
                               store's exchange no packet, both ways
``loss-leader``                (hosts only) 30% of the packets on the
                               leader's link dropped at random, both ways
``catalog-dies-after-commit``  restart the catalog with the failpoint
                               ``catalog.after-commit`` armed: it exits right
                               after it commits the next buy; restart it
                               normally after the hold (drawn only when
                               named: see :data:`EXTRA`)
=============================  ===============================================

On loopback (the default) a cut is made by the harness's fault proxies,
which close or hold the connections they carry.  On hosts (``--hosts``: a
network namespace per process, :mod:`toystore.hosts`) there are no proxies:
each cut is an nftables rule that drops packets, silently, as a real
network does (:class:`toystore.hosts.faults.PacketFaults`); a port-scoped
cut (``cut-leader-lines``, ``cut-frontend-leader``) is one-sided, the
others block both ways.  ``stall`` and ``drop-replies`` are proxy faults
and run on loopback only; ``isolate-leader``, ``cut-pair`` and
``loss-leader`` on hosts only.

A fault's record says when it began (``at``: the moment it was applied,
after the leader was looked up) and when it was healed (``healed``: the
process restarted and ready, resumed, or the proxies healed), on the
buyers' clock, for the availability figures of :mod:`.checker`.  A cut's
record also says how long after the heal the replica it cut off held, on
disk, the commit point the leader had at the heal (``caught_up_s``; None
if not within :data:`CATCH_UP_TIMEOUT`).
"""

from __future__ import annotations

import random
from typing import Any, Awaitable, Callable

from twisted.internet.threads import deferToThread

from toystore.failpoints import ENVIRONMENT, EXIT_STATUS
from toystore.testing import Store, sleep

#: The faults drawn by default.
FAULTS = (
    "kill-leader",
    "kill-follower",
    "kill-catalog",
    "kill-frontend",
    "pause-leader",
    "cut-leader-lines",
    "cut-leader-both",
    "cut-frontend-leader",
    "cut-leader-catalog",
    "stall",
    "drop-replies",
)
#: Faults that need the fault proxies (loopback), and those that need hosts.
PROXY_ONLY = ("stall", "drop-replies")
HOSTS_ONLY = ("isolate-leader", "cut-pair", "loss-leader")
#: The faults drawn by default on hosts: the proxy faults give way to packet faults.
HOST_FAULTS = tuple(f for f in FAULTS if f not in PROXY_ONLY) + HOSTS_ONLY
#: The share of packets ``loss-leader`` drops.
LOSS_PERCENT = 30
#: Faults drawn only when named: they rest on a failpoint (``catalog.after-commit``)
#: that a tree without it lacks; a catalog armed with a point it does not have just
#: runs until the 10 s wait for its death ends, and the record's ``died`` says False.
EXTRA = ("catalog-dies-after-commit",)
#: Every kind the nemesis knows.
KINDS = FAULTS + HOSTS_ONLY + EXTRA
#: Old names still accepted, and the kinds they stand for.
ALIASES = {"partition": "cut-leader-lines"}
#: Seconds the nemesis waits, after healing a cut, for the replica it cut off to hold the commit point.
CATCH_UP_TIMEOUT = 10.0
#: The failpoint of ``catalog-dies-after-commit``.
CATALOG_AFTER_COMMIT = "catalog.after-commit"


def kinds_of(names: str, hosts: bool = False) -> tuple[str, ...]:
    """
    The kinds named in ``names`` (comma-separated, old names allowed), for
    a store on hosts or (by default) on loopback.

    :raises ValueError: naming the unknown ones, or those the place cannot make.
    """
    faults = tuple(ALIASES.get(f, f) for f in names.split(",") if f)
    unknown = sorted(set(faults) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown faults: {unknown}; known: {', '.join(KINDS)}")
    elsewhere = sorted(set(faults) & set(PROXY_ONLY if hosts else HOSTS_ONLY))
    if elsewhere:
        where = "on loopback only (the fault proxies)" if hosts else "on hosts only (--hosts)"
        raise ValueError(f"{', '.join(elsewhere)}: made {where}")
    return faults


class Nemesis:
    """
    Injects faults into ``store`` (made with its proxies) until told to
    stop; ``seed`` decides which, where and for how long (``hold`` seconds
    each, when given).
    """

    def __init__(
        self,
        store: Store,
        seed: int,
        faults: tuple[str, ...] = FAULTS,
        hold: float | None = None,
        packets: Any = None,
    ) -> None:
        self.store = store
        #: the packet faults between the store's hosts (:class:`toystore.hosts.faults.PacketFaults`);
        #: None on loopback
        self.packets = packets
        self.reactor = store.reactor
        self.rng = random.Random(f"nemesis-{seed}")
        self.faults = tuple(ALIASES.get(f, f) for f in faults)
        self.hold = hold
        self.done: list[dict[str, Any]] = []
        self._at = 0.0

    async def run(self, duration: float) -> list[dict[str, Any]]:
        """Inject faults for ``duration`` seconds (the last one is healed after), then heal everything."""
        end = self.reactor.seconds() + duration
        await sleep(self.reactor, self.rng.uniform(0.5, 1.5))
        while self.reactor.seconds() < end:
            fault = self.rng.choice(self.faults)
            hold = self.rng.uniform(0.5, 3.0)  # drawn even when fixed: the same seed, the same schedule
            if self.hold is not None:
                hold = self.hold
            self._at = self.reactor.seconds()
            detail = await getattr(self, "_" + fault.replace("-", "_"))(hold)
            healed = self.reactor.seconds()
            self.done.append(
                {"fault": fault, "at": round(self._at, 3), "healed": round(healed, 3), "hold": round(hold, 2), **detail}
            )
            await sleep(self.reactor, self.rng.uniform(0.5, 2.0))
        await self.store.heal()
        return self.done

    def _begin(self) -> None:
        """The fault is applied now."""
        self._at = self.reactor.seconds()

    async def _leader(self) -> int:
        leader = await self.store.leader(timeout=10.0)
        return leader if leader is not None else self.rng.choice(self.store.replicas)

    async def _kill_and_restart(self, name: str, hold: float) -> dict[str, Any]:
        self._begin()
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
        frontends = [name for name in self.store.names if name.startswith("frontend")]
        # One front-end: no draw, so that the schedules of one front-end stay as they were.
        name = self.rng.choice(frontends) if len(frontends) > 1 else frontends[0]
        return await self._kill_and_restart(name, hold)

    async def _pause_leader(self, hold: float) -> dict[str, Any]:
        leader = await self._leader()
        name = f"order-{leader}"
        self._begin()
        self.store.pause(name)
        successor = None
        if self.hold is not None:
            await sleep(self.reactor, hold)
            successor = await self.store.leader(timeout=0.0)
        else:
            deadline = self.reactor.seconds() + 10.0
            while self.reactor.seconds() < deadline:
                successor = await self.store.leader(timeout=0.5)
                if successor is not None and successor != leader:
                    break
                await sleep(self.reactor, 0.1)
        self.store.resume(name)
        return {"target": name, "successor": successor}

    async def _proxy_fault(self, proxies: list[Any], action: str, hold: float, leader: int) -> dict[str, Any]:
        async def apply() -> None:
            for proxy in proxies:
                getattr(proxy, action)()

        async def heal() -> None:
            for proxy in proxies:
                proxy.heal()

        return await self._held(apply, heal, hold, leader, {"proxy": ", ".join(proxy.name for proxy in proxies)})

    async def _packet_fault(self, apply: Callable[[Any], None], what: str, hold: float, leader: int) -> dict[str, Any]:
        """
        Apply packet rules with ``apply(packets)``, hold, remove them all.
        nft takes tens of ms: it runs in a thread, so that the buyers'
        clock does not stop meanwhile (it touches no Twisted object).
        """
        packets = self.packets

        async def add() -> None:
            await deferToThread(apply, packets)

        async def heal() -> None:
            await deferToThread(packets.heal)

        return await self._held(add, heal, hold, leader, {"rules": what})

    async def _held(
        self,
        apply: Callable[[], Awaitable[None]],
        heal: Callable[[], Awaitable[None]],
        hold: float,
        leader: int,
        detail: dict[str, Any],
    ) -> dict[str, Any]:
        """Apply a fault (in the reactor thread: proxies are Twisted objects), hold it, heal it."""
        self._begin()
        await apply()
        try:
            await sleep(self.reactor, hold)
        finally:
            await heal()
        healed = self.reactor.seconds()
        caught_up = await self._caught_up(leader)
        return {"target": f"order-{leader}", **detail, "healed": round(healed, 3), "caught_up_s": caught_up}

    def _port(self, name: str) -> int:
        return self.store.sites[name].ports["lines"]

    def _followers(self, leader: int) -> list[str]:
        return [f"order-{i}" for i in self.store.replicas if i != leader]

    def _frontends(self) -> list[str]:
        return [name for name in self.store.names if name.startswith("frontend")]

    async def _caught_up(self, replica: int, timeout: float = CATCH_UP_TIMEOUT) -> float | None:
        """
        Seconds from the heal until ``replica``'s log on disk reaches the
        commit point the serving leader had at the heal (None: not within
        ``timeout``).
        """
        start = self.reactor.seconds()
        commit = None
        while self.reactor.seconds() - start < timeout:
            if commit is None:
                serving = [s["commit"] for s in (await self.store.statuses()).values() if s["serving"]]
                commit = max(serving, default=None)
            status = await self.store.status(replica)
            if commit is not None and status is not None and status["durable"] >= commit:
                return round(self.reactor.seconds() - start, 3)
            await sleep(self.reactor, 0.05)
        return None

    async def _cut_leader_lines(self, hold: float) -> dict[str, Any]:
        leader = await self._leader()
        if self.packets is not None:
            host, followers = f"order-{leader}", self._followers(leader)
            port = self._port(host)
            what = f"{host}:{port} from {', '.join(followers)}"
            return await self._packet_fault(lambda p: p.block(host, port, followers), what, hold, leader)
        return await self._proxy_fault([self.store.proxies.peer[leader]], "cut", hold, leader)

    async def _cut_leader_both(self, hold: float) -> dict[str, Any]:
        leader = await self._leader()
        if self.packets is not None:
            host, followers = f"order-{leader}", self._followers(leader)

            def cut(packets: Any) -> None:
                for follower in followers:
                    packets.cut(host, follower)

            return await self._packet_fault(cut, f"{host} <-> {', '.join(followers)}", hold, leader)
        pair = self.store.proxies.pair
        links = [pair[ends] for ends in sorted(pair) if leader in ends]
        return await self._proxy_fault(links, "cut", hold, leader)

    async def _cut_frontend_leader(self, hold: float) -> dict[str, Any]:
        leader = await self._leader()
        if self.packets is not None:
            host, frontends = f"order-{leader}", self._frontends()
            port = self._port(host)
            what = f"{host}:{port} from {', '.join(frontends)}"
            return await self._packet_fault(lambda p: p.block(host, port, frontends), what, hold, leader)
        return await self._proxy_fault([self.store.proxies.frontend[leader]], "cut", hold, leader)

    async def _cut_leader_catalog(self, hold: float) -> dict[str, Any]:
        leader = await self._leader()
        if self.packets is not None:
            host = f"order-{leader}"
            return await self._packet_fault(lambda p: p.cut(host, "catalog"), f"{host} <-> catalog", hold, leader)
        return await self._proxy_fault([self.store.proxies.catalog[leader]], "cut", hold, leader)

    async def _isolate_leader(self, hold: float) -> dict[str, Any]:
        leader = await self._leader()
        host = f"order-{leader}"
        return await self._packet_fault(lambda p: p.isolate(host), f"{host} isolated", hold, leader)

    async def _cut_pair(self, hold: float) -> dict[str, Any]:
        a, b = self.rng.sample(sorted(self.store.names), 2)
        replicas = [int(name.split("-")[1]) for name in (a, b) if name.startswith("order-")]
        cut_off = replicas[0] if replicas else await self._leader()  # whose catching up is timed
        return await self._packet_fault(lambda p: p.cut(a, b), f"{a} <-> {b}", hold, cut_off)

    async def _loss_leader(self, hold: float) -> dict[str, Any]:
        leader = await self._leader()
        host = f"order-{leader}"
        what = f"{host} loses {LOSS_PERCENT}%"
        return await self._packet_fault(lambda p: p.loss(host, LOSS_PERCENT), what, hold, leader)

    async def _stall(self, hold: float) -> dict[str, Any]:
        leader = await self._leader()
        return await self._proxy_fault([self.store.proxies.peer[leader]], "stall", hold, leader)

    async def _drop_replies(self, hold: float) -> dict[str, Any]:
        leader = await self._leader()
        return await self._proxy_fault([self.store.proxies.frontend[leader]], "drop", hold, leader)

    async def _catalog_dies_after_commit(self, hold: float) -> dict[str, Any]:
        """The catalog armed for one buy: it dies after committing it, before it answers; down for the hold."""
        self._begin()
        flags = self.store.flags["catalog"]
        armed = await self.store.restart("catalog", *flags, env={ENVIRONMENT: CATALOG_AFTER_COMMIT})
        try:
            status = await self.store.supervisor.wait(armed, timeout=10.0)
        except Exception:  # no buy reached the point in time (or the point is not there): it still runs
            status = None
        await sleep(self.reactor, hold)
        await self.store.restart("catalog", *flags)
        return {"target": "catalog", "died": status == EXIT_STATUS}
