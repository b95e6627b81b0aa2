"""
A cluster of protocol cores driven by hand, for unit tests: no reactor, no
clock.  The test sets ``now``, chooses which messages arrive (the rest wait
in ``network`` until delivered or dropped) and says when each replica's
writes are durable.  The driver does what a shell does and nothing more: it
keeps each replica's records (``records``), fills an ``Append`` from the
sender's records when it is sent, and keeps each replica's durable state.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterable

from toystore.order.core import (
    Append,
    EpochLog,
    Message,
    Node,
    Ready,
    Role,
    State,
    Timing,
    VoteReply,
    VoteRequest,
    Write,
)

DIGEST = "replicas-1-2-3"
Kind = type | tuple[type, ...]


def leader_record(epoch: int, id: int) -> tuple[str, int, int]:
    return ("leader", epoch, id)


def epoch_log(epochs: Iterable[int]) -> EpochLog:
    log = EpochLog()
    for epoch in epochs:
        log.append(epoch)
    return log


class Cluster:
    """Replicas ``1 .. n`` with their disks, and the messages between them."""

    def __init__(
        self,
        n: int = 3,
        *,
        seed: int = 1,
        timing: Timing = Timing(),
        states: dict[int, State] | None = None,
        logs: dict[int, list[int]] | None = None,
    ) -> None:
        self.now = 0.0
        self.timing = timing
        self.ids = list(range(1, n + 1))
        states, logs = states or {}, logs or {}
        #: the shell's copy of each log: the payloads, written as soon as a Write is issued
        self.records: dict[int, list[Any]] = {
            i: [("old", index, epoch) for index, epoch in enumerate(logs.get(i, []))] for i in self.ids
        }
        self.state: dict[int, State] = {i: states.get(i, State()) for i in self.ids}  # durable
        self.unsynced: dict[int, list[Write]] = {i: [] for i in self.ids}
        self.writes: dict[int, list[Write]] = {i: [] for i in self.ids}  # every write asked for
        self.network: list[tuple[int, Message]] = []  # (to, message), in the order sent
        self.last: dict[int, Ready] = {}
        self.reads: dict[int, list[tuple[Any, int]]] = {i: [] for i in self.ids}
        self.failed_reads: dict[int, list[Any]] = {i: [] for i in self.ids}
        self.notes: list[str] = []
        self.nodes = {
            i: Node(
                i,
                self.ids,
                DIGEST,
                self.state[i],
                epoch_log(logs.get(i, [])),
                leader_record,
                random.Random(seed * 100 + i),
                self.now,
                timing,
            )
            for i in self.ids
        }
        for i in self.ids:  # what a shell does first: arm the timer
            self.take(i, self.nodes[i].tick(self.now))

    def take(self, i: int, ready: Ready) -> Ready:
        """Carry out what replica ``i`` asked for: write its records (not yet durable), queue its messages."""
        self.last[i] = ready
        records = self.records[i]
        for write in ready.writes:
            if write.truncate is not None:
                del records[write.truncate :]
            assert write.start == len(records) or not write.payloads, f"{i}: write at {write.start} of {len(records)}"
            records.extend(write.payloads)
            self.unsynced[i].append(write)
            self.writes[i].append(write)
        assert len(records) == len(self.nodes[i].log), f"replica {i}: {len(records)} records, {self.nodes[i].log}"
        for to, message in ready.messages:
            if isinstance(message, Append) and message.payloads is None:
                message = message.with_payloads(tuple(records[message.start : message.end]))
            self.network.append((to, message))
        self.reads[i].extend(ready.reads)
        self.failed_reads[i].extend(ready.failed_reads)
        self.notes.extend(ready.notes)
        return ready

    def persist(self, i: int, ticket: int | None = None) -> Ready:
        """Replica ``i``'s writes up to ``ticket`` (default: all) are durable."""
        done = [w for w in self.unsynced[i] if ticket is None or w.ticket <= ticket]
        if not done:
            return Ready()
        self.unsynced[i] = self.unsynced[i][len(done) :]
        for write in done:
            if write.state is not None:
                self.state[i] = write.state
        return self.take(i, self.nodes[i].persisted(done[-1].ticket, self.now))

    def persist_all(self) -> None:
        for i in self.ids:
            self.persist(i)

    def tick(self, i: int) -> Ready:
        return self.take(i, self.nodes[i].tick(self.now))

    def pending(
        self,
        frm: int | None = None,
        to: int | None = None,
        kind: Kind | None = None,
        where: Callable[[Message], bool] = lambda m: True,
    ) -> list[tuple[int, Message]]:
        """The messages in flight that match."""
        return [
            (t, m)
            for t, m in self.network
            if (frm is None or m.sender == frm)
            and (to is None or t == to)
            and (kind is None or isinstance(m, kind))
            and where(m)
        ]

    def deliver(
        self,
        frm: int | None = None,
        to: int | None = None,
        kind: Kind | None = None,
        where: Callable[[Message], bool] = lambda m: True,
        drop: bool = False,
    ) -> list[tuple[int, Message]]:
        """Deliver (or drop) the matching messages in flight, in the order they were sent."""
        chosen = self.pending(frm, to, kind, where)
        for item in chosen:
            self.network.remove(item)
        if not drop:
            for t, message in chosen:
                self.take(t, self.nodes[t].receive(message, self.now))
        return chosen

    def drop(
        self,
        frm: int | None = None,
        to: int | None = None,
        kind: Kind | None = None,
        where: Callable[[Message], bool] = lambda m: True,
    ) -> list[tuple[int, Message]]:
        return self.deliver(frm, to, kind, where, drop=True)

    def settle(self, cut: Iterable[int] = ()) -> None:
        """Make every write durable and deliver every message until none is left (``cut`` replicas' are lost)."""
        cut = set(cut)
        for _ in range(10_000):
            self.persist_all()
            self.drop(where=lambda m: m.sender in cut)
            self.network = [(t, m) for t, m in self.network if t not in cut]
            if not self.network and not any(self.unsynced.values()):
                return
            self.deliver()
        raise AssertionError(f"still talking after 10000 rounds: {self.network[:5]}")

    def run(self, seconds: float, step: float = 0.05, cut: Iterable[int] = ()) -> None:
        """
        Let time pass: every replica ticks each ``step`` and everything is
        delivered at once, except what ``cut`` replicas say or are told.
        """
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = min(end, self.now + step)
            for i in self.ids:
                self.tick(i)
            self.settle(cut)

    def campaign(self, i: int) -> None:
        """Replica ``i``'s election timer fires; votes (not records) go round until it wins or none is left."""
        self.now = max(self.now, self.last[i].deadline)
        self.tick(i)
        while self.nodes[i].role is not Role.LEADER:
            self.persist_all()
            if not self.deliver(kind=(VoteRequest, VoteReply)):
                return

    def elect(self, i: int, cut: Iterable[int] = ()) -> None:
        """Replica ``i``'s election timer fires; it campaigns and everything settles (``cut`` replicas hear nothing)."""
        self.now = max(self.now, self.last[i].deadline)
        self.tick(i)
        self.settle(cut)
        assert self.nodes[i].role is Role.LEADER, f"replica {i} did not win: {self.notes[-5:]}"
