"""
Reading a replica's log back: from memory when the log still holds a line,
else from the journal file.

The log in memory keeps the lines of its most recent records only
(:mod:`toystore.order.log`); the rest are on disk.  A read from the disk
goes to a thread (the replica's disk thread unless it is given one for
reads), so the reactor never waits on it, and it uses a read-only
descriptor of its own (:class:`~toystore.order.journal.JournalReader`).
Lines in memory are answered at once.

Time passes during a read from the disk, and the log may be truncated
meanwhile (a follower cutting a tail its new leader does not have): then
what was read may no longer be in the log, and the read fails with
:class:`LogChanged`, for the caller to look again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred

from ..envelope import Unavailable
from .journal import CorruptJournal, JournalReader, Log, record_of

RunInThread = Callable[..., Deferred[Any]]


class LogChanged(Unavailable):
    """The log was truncated while records were read back from the file: what was read may be gone."""


class LogReads:
    """
    Reads of one log's records, in memory or on disk.

    :param log: the log.
    :param run_in_thread: runs the disk reads: the replica's disk thread, or
        a thread of their own (reads use their own descriptor and ``pread``,
        so they may run beside the writes).
    """

    def __init__(self, log: Log, run_in_thread: RunInThread) -> None:
        self.log = log
        self.run_in_thread = run_in_thread
        self._reader: JournalReader | None = None

    def open(self, log: Log, path: Path) -> None:
        """Read ``log``, whose journal file is at ``path``."""
        self.log = log
        self._reader = JournalReader(path)

    async def close(self) -> None:
        """Close the file (in the disk thread, after any read queued before)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            await self.run_in_thread(reader.close)

    async def lines(self, start: int, end: int) -> list[bytes]:
        """
        The lines of records ``start`` .. ``end - 1``.

        :raises LogChanged: when the log is truncated during the read.
        """
        log, lines = self.log, []
        generation = log.generation
        while start < end:
            in_memory = log.lines_in_memory(start, end)
            if in_memory is not None:
                return lines + in_memory
            # Lines before the window are on disk (only durable lines leave memory).
            stop = min(end, log.first_in_memory)
            if self._reader is None:
                raise Unavailable("the order log is closed")
            try:
                got = await self.run_in_thread(
                    self._reader.read_lines, log.offsets[start], log.offsets[stop], stop - start
                )
            except CorruptJournal:
                if log.generation == generation:
                    raise
                got = []  # cut meanwhile: the file may have been shorter than the read by then
            if log.generation != generation:
                raise LogChanged(f"the order log was truncated while records {start} to {stop} were read")
            lines += got
            start = stop
        return lines

    async def record(self, index: int) -> dict[str, Any]:
        """
        Record ``index``; one read from the disk is remembered a while, for
        a record asked for again and again.

        :raises LogChanged: when the log is truncated during the read.
        """
        line = self.log.line(index)
        if line is None:
            [line] = await self.lines(index, index + 1)
            self.log.remember(index, line)
        return record_of(line)

    async def find_order(self, key: str) -> tuple[int, dict[str, Any]] | None:
        """
        The number and order of the order placed with ``key``, or None.

        The log's key index holds 64-bit digests of keys: each order it
        names is checked against its record (read back if need be), so a
        different key with the same digest is told apart, not mistaken for
        this one.  Only those reads let time pass: if the log changed
        meanwhile (a truncation, or records that may hold this key), the
        search starts again, so None means "not in the log now".
        """
        log = self.log
        while True:
            length, generation = len(log), log.generation
            try:
                for number in log.key_candidates(key):
                    index = log.order_index(number)
                    order = None if index is None else (await self.record(index)).get("order")
                    if order is not None and order["key"] == key and order["number"] == number:
                        return number, order
            except LogChanged:
                continue
            if (len(log), log.generation) == (length, generation):
                return None
