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
from .journal import CorruptJournal, JournalReader, Log

RunInThread = Callable[..., Deferred[Any]]


class LogChanged(Unavailable):
    """The log was truncated while records were read back from the file: what was read may be gone."""


class LogReads:
    """
    Reads of one log's records, in memory or on disk.

    :param order_log: the log.
    :param run_in_thread: runs the disk reads: the replica's disk thread, or
        a thread of their own (reads use their own descriptor and ``pread``,
        so they may run beside the writes).
    :param find_key: the key store's number and epoch of a key
        (:meth:`~toystore.order.writes.LogWrites.find_key`).
    """

    def __init__(
        self,
        order_log: Log,
        run_in_thread: RunInThread,
        find_key: Callable[[str], Deferred[tuple[int, int] | None]],
    ) -> None:
        self.order_log = order_log
        self.run_in_thread = run_in_thread
        self._find_key = find_key
        self._reader: JournalReader | None = None

    def open(self, order_log: Log, path: Path) -> None:
        """Read ``order_log``, whose journal file is at ``path``."""
        self.order_log = order_log
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
        order_log, lines = self.order_log, []
        generation = order_log.generation
        while start < end:
            in_memory = order_log.lines_in_memory(start, end)
            if in_memory is not None:
                return lines + in_memory
            # Lines before the window are on disk (only durable lines leave memory).
            stop = min(end, order_log.first_in_memory)
            if self._reader is None:
                raise Unavailable("the order log is closed")
            try:
                got = await self.run_in_thread(
                    self._reader.read_lines, order_log.offset(start), order_log.offset(stop), stop - start
                )
            except CorruptJournal:
                if order_log.generation == generation:
                    raise
                got = []  # cut meanwhile: the file may have been shorter than the read by then
            if order_log.generation != generation:
                raise LogChanged(f"the order log was truncated while records {start} to {stop} were read")
            lines += got
            start = stop
        return lines

    async def find_order(self, key: str) -> int | None:
        """
        The number of the order placed with ``key``, or None.

        A key is in the log's memory until its batch of writes has ended,
        and in the key store after (:mod:`toystore.order.keystore`); the
        log's Bloom filter says at once that most new keys are in neither.
        Only the store's answer lets time pass, meanwhile the log may grow
        or be cut: an order placed meanwhile is still in memory when the
        answer comes (the store's writes and lookups share one thread, in
        order), and an answer whose order was cut since (its number and
        epoch no longer the log's) is no answer.
        """
        order_log = self.order_log
        number = order_log.unindexed_order(key)
        if number is not None or not order_log.may_hold(key):
            return number
        stored = await self._find_key(key)
        number = order_log.unindexed_order(key)
        if number is None and stored is not None and order_log.order_epoch(stored[0]) == stored[1]:
            number = stored[0]
        return number
