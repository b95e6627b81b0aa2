"""
The shape of a log, without its records: the epoch of every index.

The protocol never reads a record's contents; it needs only each record's
epoch, and two records with the same index and epoch are the same record,
with the same records before them (the log matching property).  The epochs
are kept as runs, ``(first index, epoch)``, so a log of millions of records
written under a handful of leaders costs a handful of pairs.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Iterable


class EpochLog:
    """The epochs of a log's records, indexes ``0 .. len - 1``, as runs."""

    __slots__ = ("_starts", "_epochs", "_length")

    def __init__(self, runs: Iterable[tuple[int, int]] = (), length: int = 0) -> None:
        self._starts: list[int] = []
        self._epochs: list[int] = []
        self._length = 0
        runs = list(runs)
        for i, (start, epoch) in enumerate(runs):
            end = runs[i + 1][0] if i + 1 < len(runs) else length
            self.append(epoch, end - start)

    def __len__(self) -> int:
        return self._length

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EpochLog) and self.runs() == other.runs() and len(self) == len(other)

    def __repr__(self) -> str:
        return f"EpochLog({self.runs()}, {self._length})"

    def runs(self) -> list[tuple[int, int]]:
        """``[(first index, epoch), ...]``, one pair per run of equal epochs."""
        return list(zip(self._starts, self._epochs, strict=True))

    @property
    def last_epoch(self) -> int:
        """The epoch of the last record, 0 for an empty log."""
        return self._epochs[-1] if self._epochs else 0

    def epoch_at(self, length: int) -> int:
        """The epoch of record ``length - 1`` (the last of the first ``length``), 0 for ``length`` 0."""
        if length <= 0:
            return 0
        if length > self._length:
            raise IndexError(f"record {length - 1} is past the end ({self._length})")
        return self._epochs[bisect_right(self._starts, length - 1) - 1]

    def matches(self, length: int, epoch: int) -> bool:
        """Whether this log holds the first ``length`` records of a log whose record ``length - 1`` has ``epoch``."""
        return length <= self._length and self.epoch_at(length) == epoch

    def append(self, epoch: int, count: int = 1) -> None:
        """Add ``count`` records of ``epoch`` at the end."""
        if count <= 0:
            return
        if epoch < self.last_epoch:
            raise ValueError(f"epoch {epoch} after epoch {self.last_epoch}: a log's epochs never go down")
        if not self._epochs or self._epochs[-1] != epoch:
            self._starts.append(self._length)
            self._epochs.append(epoch)
        self._length += count

    def truncate(self, length: int) -> None:
        """Keep only the first ``length`` records."""
        if length >= self._length:
            return
        length = max(length, 0)
        while self._starts and self._starts[-1] >= length:
            self._starts.pop()
            self._epochs.pop()
        self._length = length

    def first_conflict(self, start: int, epochs: list[int]) -> int:
        """
        Where records ``start, start + 1, ...`` with ``epochs`` first differ
        from this log (or run past its end): that index, or
        ``start + len(epochs)`` when this log already holds them all.
        """
        for offset, epoch in enumerate(epochs):
            index = start + offset
            if index >= self._length or self.epoch_at(index + 1) != epoch:
                return index
        return start + len(epochs)

    def last_at_most(self, length: int, epoch: int) -> int:
        """
        The longest prefix, at most ``length`` records, whose last record's
        epoch is at most ``epoch``: where a leader looks again after a
        follower said its record ``length - 1`` has ``epoch``.
        """
        length = min(length, self._length)
        while length > 0:
            run = bisect_right(self._starts, length - 1) - 1
            if self._epochs[run] <= epoch:
                return length
            length = self._starts[run]
        return 0
