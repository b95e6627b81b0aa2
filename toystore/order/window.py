"""
The lines of the order log kept in memory: the most recent ones, within a
byte budget, and every one not yet on disk.

The journal file is the store of record lines; the window spares the disk
the reads that are common: the order queries, which ask mostly for recent
orders, and the live log stream, which sends each record as it is written.
A line leaves the window only once it is durable (the replica appends to
the in-memory log first and writes to the file after), so a line that is not
here can always be read back from the file.

This module is reactor-free and does no I/O.
"""

from __future__ import annotations

#: Bytes a line costs beyond its length: the bytes object's header (33), its list slot (8), rounding.
LINE_OVERHEAD = 48


class Window:
    """
    Lines ``first`` .. ``end - 1`` of a log.

    :param budget: bytes of lines (with :data:`LINE_OVERHEAD` each) kept
        once they are durable; lines beyond it go, oldest first, in steps of
        a sixteenth of it.  Lines not yet durable are kept whatever their size.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.first = 0  # index of the oldest line in memory
        self.durable = 0  # lines known to be on disk
        self.nbytes = 0  # bytes counted against the budget
        self._lines: list[bytes] = []
        self._slack = budget // 16

    @property
    def end(self) -> int:
        """One past the index of the newest line."""
        return self.first + len(self._lines)

    def append(self, line: bytes) -> None:
        """Add the line of the next record."""
        self._lines.append(line)
        self.nbytes += len(line) + LINE_OVERHEAD
        if self.nbytes > self.budget + self._slack:
            self._evict()

    def get(self, index: int) -> bytes | None:
        """The line of record ``index`` if it is in memory, else None."""
        i = index - self.first
        return self._lines[i] if 0 <= i < len(self._lines) else None

    def lines(self, start: int, end: int) -> list[bytes] | None:
        """Lines ``start`` .. ``end - 1`` if all are in the window, else None."""
        if start < self.first or end > self.end:
            return None
        return self._lines[start - self.first : end - self.first]

    def mark_durable(self, length: int) -> None:
        """The first ``length`` lines are on disk: those beyond the budget may go."""
        if length > self.durable:
            self.durable = min(length, self.end)
            if self.nbytes > self.budget + self._slack:
                self._evict()

    def truncate(self, length: int) -> None:
        """Forget lines ``length`` and after."""
        self.durable = min(self.durable, length)
        if length >= self.first:
            dropped = self._lines[length - self.first :]
            del self._lines[length - self.first :]
            self.nbytes -= sum(len(line) for line in dropped) + LINE_OVERHEAD * len(dropped)
        else:
            self._lines = []
            self.nbytes = 0
            self.first = length

    def _evict(self) -> None:
        lines = self._lines
        limit = min(len(lines), self.durable - self.first)
        over = self.nbytes - self.budget
        count = freed = 0
        while count < limit and freed < over:
            freed += len(lines[count]) + LINE_OVERHEAD
            count += 1
        if count:
            del lines[:count]
            self.first += count
            self.nbytes -= freed
