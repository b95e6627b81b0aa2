"""
What replicas say to each other, as the protocol sees it.

Every message carries the sender's epoch and the digest of the replica list
it was configured with; a replica drops a message whose digest differs from
its own (two halves of a store configured differently must not form one
majority).  The shell turns these into wire lines and back; the records'
contents travel as ``payloads`` that the protocol passes along unread.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """The fields every message has."""

    epoch: int
    sender: int
    digest: str


@dataclass(frozen=True, slots=True)
class VoteRequest(Message):
    """
    A candidate asks for a vote (``pre``: would you vote for me at ``epoch``,
    without anyone raising theirs yet).  ``last_epoch`` and ``length``
    describe its durable log.  ``handover``: the leader asked it to run, so
    a replica that still hears that leader grants it anyway.
    """

    last_epoch: int
    length: int
    pre: bool = False
    handover: bool = False


@dataclass(frozen=True, slots=True)
class VoteReply(Message):
    """The answer to a ``VoteRequest`` (``epoch`` is the request's when ``pre``)."""

    granted: bool
    pre: bool = False


@dataclass(frozen=True, slots=True)
class Append(Message):
    """
    A leader's records ``start .. start + len(epochs) - 1``, following record
    ``start - 1`` of epoch ``prev_epoch``; none is a heartbeat.  ``commit``:
    the leader's commit point; ``round``: echoed back, so the leader knows
    which of its rounds a majority has seen (reads wait on one).
    ``payloads`` are the records themselves, filled in by whoever sends the
    message: the protocol keeps only their epochs.
    """

    start: int
    prev_epoch: int
    epochs: tuple[int, ...]
    commit: int
    round: int
    payloads: tuple[Any, ...] | None = field(default=None, compare=False)

    @property
    def end(self) -> int:
        """The length of a log that holds these records."""
        return self.start + len(self.epochs)

    def with_payloads(self, payloads: tuple[Any, ...]) -> Append:
        """This message carrying its records."""
        if len(payloads) != len(self.epochs):
            raise ValueError(f"{len(payloads)} payloads for {len(self.epochs)} records")
        return replace(self, payloads=payloads)


@dataclass(frozen=True, slots=True)
class AppendReply(Message):
    """
    A follower's answer to an ``Append``.  Accepted: ``length`` is how much
    of the leader's log it now holds durably.  Refused: its log does not hold
    record ``start - 1`` as the leader has it; ``length`` and ``last_epoch``
    say where to look again.  ``voter`` is false for a replica that lost its
    disk and has not caught up yet: its copies do not count toward a commit.
    """

    accepted: bool
    length: int
    last_epoch: int
    round: int
    voter: bool = True


@dataclass(frozen=True, slots=True)
class Handover(Message):
    """The leader tells a caught-up follower to run for leader now (the thesis's TimeoutNow)."""
