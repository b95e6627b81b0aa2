"""
Writing a replica's log to its journal file: group commit in the disk thread.

Records are added to the in-memory log (:mod:`toystore.order.log`) first,
then written here.  Writes go through a :class:`~toystore.batch.BatchQueue`
to one thread: every write that arrives while a batch is being written and
fsynced goes in the next batch, so a batch of any size costs one fsync, and
the reactor thread never waits on the disk.  The keys of the batch's orders
go to the key store (:mod:`toystore.order.keystore`) in the same thread,
after the fsync of their lines, so a key is in the store only once its
record is on disk; until the batch ends the log keeps it in memory.

What a batch makes durable is settled once per batch, not once per write:
the new durable length, and the one call to ``on_durable(length)`` that the
replica turns into a commit point and acknowledgements.  A truncation of
the log raises its generation; a write queued before it no longer counts
when its batch ends (its records may be gone, or others in their place).

The replica's vote state (its epoch, its vote, whether it may vote) goes
through the same queue: a batch writes it first (to its own small file,
replaced durably), then the log's lines, so that after a crash the state on
disk is never older than a record written after it.

A batch that fails (the disk is full, an fsync reports an error) leaves the
file in a state nobody knows: some of the batch may be there, and after a
failed fsync the kernel may have dropped pages it was asked to keep.  Later
records appended after it would leave a gap or a torn record in the middle
of the file, which a restart refuses as corrupt.  So the first failure is
final: every later write fails at once without touching the file, and
``on_failed`` is told, once, so that the replica stops (fail-stop) and comes
back from what its file really holds and from its peers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ..batch import BatchQueue, timed_in_thread
from ..envelope import Unavailable
from .journal import JournalFile, Log, write_durably
from .keystore import KeyStore, KeyWrite

RunInThread = Callable[..., Deferred[Any]]

#: One write: ``("append", data, (length, order_count, generation), key rows)``,
#: ``("truncate", size, None, order_count)`` or ``("state", data, None, path)``.
Operation = tuple[str, Any, Any, Any]


class LogWrites:
    """
    The writes of one log to its journal file.

    :param run_in_thread: runs the writes (one thread: they must not overlap).
    :param max_batch: the most writes that share one fsync.
    :param metrics: the replica's metrics (``fsync_seconds``, ``batch_size``).
    :param on_durable: called after a batch with the log's length now on disk,
        when that length grew.
    :param on_failed: called once, with the failure, when a batch fails.
    """

    def __init__(
        self,
        run_in_thread: RunInThread,
        max_batch: int,
        metrics: Any,
        on_durable: Callable[[int], None],
        on_failed: Callable[[Failure], None] = lambda failure: None,
    ) -> None:
        self.order_log = Log()
        self.durable = 0  # records on disk
        self.file: JournalFile | None = None
        self.keys: KeyStore | None = None
        self._keyed = 0  # orders whose keys are in a write handed to the queue
        self._run = run_in_thread
        self._metrics = metrics
        self._on_durable = on_durable
        self._on_failed = on_failed
        self.broken: Failure | None = None  # the failure of the batch that failed, if one did
        self._queue: BatchQueue[Operation, int] = BatchQueue(self._write_batch, max_batch)

    def open(self, order_log: Log, file: JournalFile, keys: KeyStore | None = None) -> None:
        """
        Write to ``file`` the records of ``order_log``, all of which are on disk
        now, and to ``keys`` the keys of its orders, of which those not in
        it already are in the log's memory.
        """
        self.order_log = order_log
        self.file = file
        self.keys = keys
        self.durable = len(order_log)
        self._keyed = 0 if keys is None else order_log.order_count

    def append(self, lines: list[bytes], end: int) -> Deferred[int]:
        """
        Append ``lines``, records ``end - len(lines)`` .. ``end - 1`` of the
        log in memory, to the file (after every record before them), and the
        keys of every order not yet given to the key store to it.

        :return: a Deferred that fires once they are fsynced (with the file's size).
        """
        order_log = self.order_log
        order_count = order_log.orders_before(end)
        rows = order_log.unindexed(self._keyed, order_count) if self.keys is not None else []
        self._keyed = max(self._keyed, order_count)
        return self._queue.submit(("append", b"".join(lines), (end, order_count, order_log.generation), rows))

    def find_key(self, key: str) -> Deferred[tuple[int, int] | None]:
        """
        The number and epoch the key store holds for ``key``, or None: in the
        disk thread, after the batches that ran before it (a key whose batch
        has not ended is in the log's memory).
        """
        keys = self.keys
        if keys is None or self.broken is not None:
            raise Unavailable("the order log's key store is closed")
        return self._run(keys.find, key)

    def truncate(self, length: int, size: int) -> Deferred[int]:
        """The log in memory was cut to ``length`` records (``size`` bytes): cut the file too, durably."""
        self.durable = min(self.durable, length)
        order_count = self.order_log.order_count
        self._keyed = min(self._keyed, order_count)
        return self._queue.submit(("truncate", size, None, order_count))

    def save_state(self, path: Path, data: bytes) -> Deferred[int]:
        """Replace the file at ``path`` with ``data`` durably, ahead of the log writes of its batch."""
        return self._queue.submit(("state", data, None, path))

    async def close(self) -> None:
        """Let the queued writes finish, then close the file (in the disk thread)."""
        await self._queue.when_idle()
        file, self.file = self.file, None
        keys, self.keys = self.keys, None
        if file is not None:
            await self._run(file.close)
        if keys is not None:
            await self._run(keys.close)

    def _write_batch(self, operations: list[Operation]) -> Deferred[list[int]]:
        file = self.file
        if file is None:
            raise Unavailable("the order log is closed")
        if self.broken is not None:  # a batch failed: no write touches the file any more
            raise Unavailable(f"the order log's file failed a write ({self.broken.getErrorMessage()})")
        states = [(path, data) for kind, data, _, path in operations if kind == "state"]
        writes = [(kind, value) for kind, value, _, _ in operations if kind != "state"]
        keys = self.keys
        key_writes: list[KeyWrite] = [(kind, rows) for kind, _, _, rows in operations if kind != "state"]

        def write() -> list[int]:
            if states:  # the newest state replaces the others: written once, first
                write_durably(*states[-1])
            sizes = iter(file.write(writes) if writes else [])
            if keys is not None and key_writes:
                keys.write(key_writes)
            return [0 if kind == "state" else next(sizes) for kind, _, _, _ in operations]

        metrics = self._metrics
        done = timed_in_thread(self._run, write, metrics.fsync_seconds, metrics.batch_size, len(writes))
        return done.addCallbacks(self._written, self._failed, callbackArgs=(operations,))

    def _failed(self, failure: Failure) -> Failure:
        """A batch failed: the first failure is final (see the module's docstring)."""
        if self.broken is None:
            self.broken = failure
            self._on_failed(failure)
        return failure

    def _written(self, sizes: list[int], operations: list[Operation]) -> list[int]:
        """A batch is on disk: settle what it made durable, once, before its writers hear of it."""
        generation, durable, indexed = self.order_log.generation, self.durable, 0
        for _, _, mark, _ in operations:
            if mark is not None and mark[2] == generation:
                durable = max(durable, mark[0])
                indexed = max(indexed, mark[1])
        if indexed and self.keys is not None:
            self.order_log.mark_indexed(indexed)
        if durable > self.durable:
            self.durable = durable
            self.order_log.mark_durable(durable)
            self._on_durable(durable)
        return sizes
