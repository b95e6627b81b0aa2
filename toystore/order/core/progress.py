"""
What a leader knows of each follower, and the majority rules it counts with.

A follower is *probed* (one batch at a time, from where the leader guesses
their logs still agree, backing off on each refusal) until it accepts one;
from then on it is *streamed* to (batches sent ahead of its answers, up to
a window).  Its ``match`` is how much of the leader's log it holds durably,
as it said; only a voter's match counts toward a commit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Progress:
    """A leader's view of one follower."""

    next: int
    match: int = 0
    #: streamed to (true) or probed (false)
    streaming: bool = False
    #: batches sent and not answered yet
    in_flight: int = 0
    #: the last time it answered this leader
    heard: float = float("-inf")
    #: the newest round of this leader it has answered
    round: int = 0
    #: its copies count toward a commit (false until it says so)
    voter: bool = False

    def refused(self, next: int) -> None:
        """
        It did not hold what we sent after: probe again from ``next``.  Below
        its match only if it lost its disk (or the refusal is an old one):
        lowering the match is always safe, it only delays a commit.
        """
        self.match = min(self.match, next)
        self.next = next
        self.streaming = False
        self.in_flight = 0

    def accepted(self, length: int) -> None:
        """It holds the first ``length`` records of our log."""
        self.match = max(self.match, length)
        self.next = max(self.next, self.match)
        # Probed until now: the batches counted were probes, answered now or lost (sent to a follower
        # that was down); counted on, they would keep the window shut for good.
        self.in_flight = max(0, self.in_flight - 1) if self.streaming else 0
        self.streaming = True


def majority(count: int) -> int:
    """How many of ``count`` replicas make a majority."""
    return count // 2 + 1


def quorum_value(values: list[int], quorum: int) -> int | None:
    """The largest value that at least ``quorum`` of ``values`` reach (None: too few values)."""
    if len(values) < quorum:
        return None
    return sorted(values, reverse=True)[quorum - 1]
