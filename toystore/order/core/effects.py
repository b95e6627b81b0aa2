"""
What the core and its shell exchange, besides messages: what the shell
gives a node (its ``State`` from disk, its ``Timing``) and what each event
gives back (a ``Ready``: ``Write`` s to make durable, messages to send,
reads to answer, the time of the next tick).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .messages import Message

#: a deadline that never comes
NEVER = float("inf")


@dataclass(frozen=True, slots=True)
class State:
    """
    What a replica keeps on disk besides its log: its epoch, the replica it
    voted for in that epoch, and whether it may vote at all (false for a
    replica that lost its disk, until it catches up).
    """

    epoch: int = 0
    vote: int | None = None
    voter: bool = True


@dataclass(frozen=True, slots=True)
class Timing:
    """
    The protocol's clock, in seconds.  An election timeout is drawn from
    ``[election, 2 * election)``; a leader sends a heartbeat every
    ``heartbeat``; ``stagger`` spaces the campaigns of followers that saw
    their leader's connection reset, highest id first.
    """

    election: float = 1.0
    heartbeat: float = 0.1
    stagger: float = 0.2
    #: records per append message, and append messages a follower may have unanswered
    max_batch: int = 512
    max_in_flight: int = 8


@dataclass(frozen=True, slots=True)
class Write:
    """
    Make this durable, in order after every earlier write, then report
    ``ticket`` to :meth:`Node.persisted`: first ``state`` (if any), then
    the log cut to ``truncate`` records (if not None), then ``payloads``
    written from index ``start``.
    """

    ticket: int
    state: State | None
    truncate: int | None
    start: int
    payloads: tuple[Any, ...]


@dataclass(slots=True)
class Ready:
    """What one event asks the shell to do."""

    writes: list[Write] = field(default_factory=list)
    #: ``(to, message)``; an ``Append`` without payloads is filled from the log by the shell
    messages: list[tuple[int, Message]] = field(default_factory=list)
    #: ``(context, commit point)``: the read may be answered once the log is applied to that point
    reads: list[tuple[Any, int]] = field(default_factory=list)
    #: reads that cannot be confirmed (this replica stopped leading)
    failed_reads: list[Any] = field(default_factory=list)
    #: one line each, for the log: a refused peer, a role change
    notes: list[str] = field(default_factory=list)
    #: call :meth:`Node.tick` at this time
    deadline: float = NEVER
