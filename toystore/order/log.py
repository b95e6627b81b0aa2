"""
The order log in memory: what the service needs to find a record, and the
lines of the most recent records.

The journal file (:mod:`toystore.order.journal`) is the store of the lines,
and an SQLite table beside it the store of the idempotency keys
(:mod:`toystore.order.keystore`).  Per record, the log keeps the length of
its line (from which a record's file offset is computed, with the offset of
one record in every :data:`OFFSET_STEP`); per order, its toy (as the number
of the name in a table of the names seen) and its quantity, so that no
order query, however old the order, needs the disk.  Each column of
integers takes the fewest bytes its values need (what that comes to an
order: :mod:`toystore.order.columns`), where a key string alone took a
hundred.  Everything else it keeps is bounded: a Bloom filter of the keys,
of fixed size (:mod:`toystore.order.bloom`), so that a new key needs the
disk no more than a query does; the lines of the most recent records
within a byte budget, and those not yet on disk
(:mod:`toystore.order.window`); the keys of the orders not yet in the key
store; one entry per epoch; one per leader record (from which an order's
record index is computed, so orders need no table of their own); a
snapshot of :meth:`Log.reconciled` every
:data:`~toystore.order.reconcile.CHECKPOINT_EVERY` records.

This module is reactor-free and does no I/O.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Any, Callable, Iterable

from .bloom import Bloom
from .columns import Column
from .reconcile import Reconciled
from .records import check_record, decode, encode, order_line, record_of
from .window import Window

#: Bytes of record lines a log keeps in memory once they are on disk (about 26,000 orders).
WINDOW_BYTES = 4 << 20
#: The file offset of every this many-th record is kept; the others are computed from line lengths.
OFFSET_STEP = 64


class NotInMemory(LookupError):
    """The record is only in the journal file: read it with a :class:`~toystore.order.journal.JournalReader`."""


class Log:
    """
    The journal in memory: what the service needs to find a record, and the
    lines of the most recent records.

    Changes here are made on the reactor thread first; the service writes
    the same changes to the file through
    :class:`~toystore.order.journal.JournalFile`, then says so with
    :meth:`mark_durable`.  A line that is on disk and older than the window
    (``window_bytes`` of lines) leaves memory: :meth:`line` then answers
    None, and the service reads it back (:mod:`toystore.order.reads`)
    between the byte offsets :meth:`offset` gives.

    An order's key stays in memory (:meth:`unindexed`) until the service
    has written it to the key store with its record (:meth:`mark_indexed`);
    keys read from the journal at start are in the store already.  A log
    made from lines (``Log(lines)``, as tools and tests do) never marks them
    durable or indexed, so it keeps them all.

    :param key_hash: the hash of keys for the Bloom filter.
    """

    def __init__(
        self, lines: Iterable[bytes] = (), window_bytes: int = WINDOW_BYTES, key_hash: Callable[[str], int] = hash
    ) -> None:
        self.generation = 0  # raised by each truncation that removes records
        self._lengths = Column()  # record index -> the length of its line
        self._marks = array("q", [0])  # _marks[j] = the file offset of record j * OFFSET_STEP
        self._size = 0  # of the whole log's file
        self._others = array("q")  # indexes of the records that are not orders (leader records)
        self._orders_before_other = array("q")  # ..., and how many orders come before each
        self._bloom = Bloom(key_hash)
        self._unindexed: dict[str, tuple[int, int]] = {}  # key -> (number, epoch), in number order
        self._names: dict[str, int] = {}  # toy name -> its number in _name_list
        self._name_list: list[str] = []
        self._order_names = Column()  # order number -> the number of its toy's name
        self._order_quantities = Column(signed=True)  # order number -> its quantity
        self._runs: list[list[int]] = []  # [first index, epoch] of each epoch
        self._reconciled = Reconciled()
        self._window = Window(window_bytes)
        for line in lines:
            self.append_line(line)

    def __len__(self) -> int:
        return len(self._lengths)

    @property
    def last_epoch(self) -> int:
        """The epoch of the last record (0 when empty)."""
        return self._runs[-1][1] if self._runs else 0

    @property
    def size(self) -> int:
        """The file size of the whole log."""
        return self._size

    def offset(self, index: int) -> int:
        """The file offset of record ``index`` (``len(self)``: the file size)."""
        mark = index // OFFSET_STEP
        return self._marks[mark] + sum(self._lengths[mark * OFFSET_STEP : index])

    @property
    def order_count(self) -> int:
        """How many orders the log holds (the next order's number)."""
        return len(self) - len(self._others)

    @property
    def first_in_memory(self) -> int:
        """The index of the oldest record whose line is in the window."""
        return self._window.first

    @property
    def window(self) -> Window:
        """The lines in memory."""
        return self._window

    # -- adding and removing records -------------------------------------------

    def _add(self, line: bytes, record: dict[str, Any], indexed: bool = False) -> None:
        index = len(self)
        number = self.order_count
        check_record(record, index, number)
        order = record.get("order")
        if order is not None:
            self._keep_key(order["key"], number, record["epoch"], indexed)
            self._summarise(order["name"], order["quantity"])
        else:
            self._others.append(index)
            self._orders_before_other.append(number)
        self._reconciled.add(index, record)
        self._extend(index, record["epoch"], line)

    def _extend(self, index: int, epoch: int, line: bytes) -> None:
        if not self._runs or self._runs[-1][1] != epoch:
            self._runs.append([index, epoch])
        self._lengths.append(len(line))
        self._size += len(line)
        if len(self._lengths) % OFFSET_STEP == 0:
            self._marks.append(self._size)
        self._window.append(line)

    def _keep_key(self, key: str, number: int, epoch: int, indexed: bool) -> None:
        self._bloom.add(key)
        if not indexed:
            self._unindexed[key] = (number, epoch)

    def load(self, line: bytes, record: dict[str, Any], indexed: bool = True) -> None:
        """
        Add a record read from the journal file (so durable), checked.

        :param indexed: whether its key is in the key store (else the log keeps it).
        """
        self._add(line, record, indexed)
        self._window.mark_durable(len(self))

    def append_order(self, epoch: int, name: str, quantity: int, key: str, seq: int | None = None) -> bytes:
        """
        Add an order record (``seq``: the catalog's number of its buy); return its line.

        :raises ValueError: when a value has the wrong type (nothing is added then).
        """
        index, number = len(self), self.order_count
        line = order_line(epoch, index, number, name, quantity, key, seq)
        self._keep_key(key, number, epoch, False)
        self._summarise(name, quantity)
        self._reconciled.add_order(index, seq)
        self._extend(index, epoch, line)
        return line

    def _summarise(self, name: str, quantity: int) -> None:
        named = self._names.get(name)
        if named is None:
            named = self._names[name] = len(self._name_list)
            self._name_list.append(name)
        self._order_names.append(named)
        self._order_quantities.append(quantity)

    def append_leader(self, epoch: int, leader: int, reconciled: int = 0) -> bytes:
        """Add the record with which ``leader`` starts serving ``epoch``; return its line."""
        return self._append({"index": len(self), "epoch": epoch, "leader": leader, "reconciled": reconciled})

    def _append(self, record: dict[str, Any]) -> bytes:
        line = encode(record)
        self._add(line, record)
        return line

    def append_line(self, line: bytes) -> bytes:
        """
        Add a line received from a peer, checked; return it as kept (with its newline).

        :raises ValueError: when it is bad or does not continue this log.
        """
        record = decode(line)
        if not line.endswith(b"\n"):
            line += b"\n"
        self._add(line, record)
        return line

    def append_record(self, line: bytes, record: dict[str, Any]) -> bytes:
        """
        Add a line already decoded (by :func:`~toystore.order.records.decode`) into ``record``; return it.

        :raises ValueError: when it does not continue this log.
        """
        self._add(line, record)
        return line

    def mark_durable(self, length: int) -> None:
        """The first ``length`` records are on disk: their lines may leave memory."""
        self._window.mark_durable(length)

    def mark_indexed(self, count: int) -> None:
        """The keys of the first ``count`` orders are in the key store: they may leave memory."""
        unindexed = self._unindexed
        while unindexed:
            key = next(iter(unindexed))
            if unindexed[key][0] >= count:
                break
            del unindexed[key]

    def unindexed(self, start: int, end: int) -> list[tuple[str, int, int]]:
        """``(key, number, epoch)`` of orders ``start`` .. ``end - 1`` whose keys are not in the key store."""
        rows = []
        for key, (number, epoch) in reversed(self._unindexed.items()):
            if number < start:
                break
            if number < end:
                rows.append((key, number, epoch))
        rows.reverse()
        return rows

    def truncate(self, length: int) -> int:
        """Keep the first ``length`` records; return the new file size."""
        if length >= len(self):
            return self.size
        orders = self.orders_before(length)
        self._window.truncate(length)
        while self._unindexed and next(reversed(self._unindexed.values()))[0] >= orders:
            self._unindexed.popitem()
        del self._order_names[orders:]
        del self._order_quantities[orders:]
        self._size = self.offset(length)
        del self._lengths[length:]
        del self._marks[length // OFFSET_STEP + 1 :]
        cut = bisect_left(self._others, length)
        del self._others[cut:]
        del self._orders_before_other[cut:]
        while self._runs and self._runs[-1][0] >= length:
            self._runs.pop()
        replay = self._reconciled.restore(length)
        for index in range(max(replay, self._window.first), length):
            self._reconciled.add(index, record_of(self._window.get(index)))
        self.generation += 1
        return self.size

    # -- finding records -------------------------------------------------------

    def orders_before(self, length: int) -> int:
        """How many orders the first ``length`` records hold."""
        return length - bisect_left(self._others, length)

    def order_index(self, number: int) -> int | None:
        """The index of the record of order ``number``, or None."""
        if not 0 <= number < self.order_count:
            return None
        # Order n is preceded by n orders and by every other record that has at most n orders before it.
        return number + bisect_right(self._orders_before_other, number)

    def summary(self, number: int) -> tuple[str, int] | None:
        """The toy and quantity of order ``number``, from memory whatever its age; None if there is none."""
        if not 0 <= number < self.order_count:
            return None
        return self._name_list[self._order_names[number]], self._order_quantities[number]

    def order_epoch(self, number: int) -> int | None:
        """The epoch of order ``number``, or None if there is no such order."""
        index = self.order_index(number)
        if index is None:
            return None
        return self._runs[bisect_right(self._runs, index, key=lambda run: run[0]) - 1][1]

    def unindexed_order(self, key: str) -> int | None:
        """The number of the order with ``key`` if its key is still in memory (not yet in the key store)."""
        found = self._unindexed.get(key)
        return None if found is None else found[0]

    def may_hold(self, key: str) -> bool:
        """False if no order of this log ever had ``key``; True if one may have (the key store says)."""
        return key in self._bloom

    def line(self, index: int) -> bytes | None:
        """The line of record ``index`` if it is in memory, else None."""
        return self._window.get(index)

    def lines_in_memory(self, start: int, end: int) -> list[bytes] | None:
        """The lines of records ``start`` .. ``end - 1`` if all are in the window, else None."""
        return self._window.lines(start, end)

    def record(self, index: int) -> dict[str, Any]:
        """
        Record ``index``, decoded from its line in memory.

        :raises NotInMemory: when its line is only on disk.
        :raises IndexError: when there is no such record.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"no record {index} in a log of {len(self)}")
        line = self._window.get(index % len(self))
        if line is None:
            raise NotInMemory(f"record {index} is only in the journal file")
        return record_of(line)

    def order(self, number: int) -> dict[str, Any] | None:
        """
        The order with ``number``, or None.

        :raises NotInMemory: when its line is only on disk.
        """
        index = self.order_index(number)
        return None if index is None else self.record(index)["order"]

    def reconciled(self) -> int:
        """
        The catalog seq up to which every buy is an order of this log: the
        last leader record's ``reconciled``, carried on by the seqs of the
        orders after it for as long as they run without a gap (kept up to
        date as records come: :class:`~toystore.order.reconcile.Reconciled`).
        """
        return self._reconciled.through

    # -- views for tools and tests, which hold small logs all in memory ---------

    @property
    def lines(self) -> Sequence[bytes]:
        """Every record's line (:class:`NotInMemory` for one only on disk)."""
        return _View(self.__len__, self._line)

    @property
    def offsets(self) -> Sequence[int]:
        """Every record's file offset, and the file size last (as :meth:`offset` gives them)."""
        return _View(lambda: len(self) + 1, self.offset)

    @property
    def records(self) -> Sequence[dict[str, Any]]:
        """Every record, decoded (:class:`NotInMemory` for one only on disk)."""
        return _View(self.__len__, self.record)

    @property
    def orders(self) -> Sequence[int]:
        """The index of the record of each order, by number (computed from the few records that are not orders)."""
        return _View(lambda: self.order_count, self._order_index)

    @property
    def keys(self) -> dict[str, int]:
        """Key -> order number of every order, built from the lines (:class:`NotInMemory` if one is on disk)."""
        return {order["key"]: order["number"] for order in map(_order_of, self.lines) if order is not None}

    def _line(self, index: int) -> bytes:
        line = self._window.get(index)
        if line is None:
            raise NotInMemory(f"record {index} is only in the journal file")
        return line

    def _order_index(self, number: int) -> int:
        index = self.order_index(number)
        assert index is not None
        return index

    # -- where two logs part ------------------------------------------------------

    def runs(self) -> list[list[int]]:
        """
        The log's epochs as ``[[first index, epoch], ...]``: enough for a peer
        to tell where two logs part (records with the same index and epoch
        are the same record, and so are all records before them).
        """
        return [list(run) for run in self._runs]

    def common_length(self, runs: list[list[int]], length: int) -> int:
        """
        How many first records a peer's log (described by its ``runs`` and
        ``length``) shares with this one.
        """
        theirs = _epochs_by_index(runs, length)
        mine = _epochs_by_index(self._runs, len(self))
        common = 0
        for start, end, epoch in _overlaps(theirs, mine):
            if epoch is None or start != common:
                break
            common = end
        return common


def _order_of(line: bytes) -> dict[str, Any] | None:
    return record_of(line).get("order")


class _View(Sequence[Any]):
    """Items ``0 .. length() - 1`` of a log, each through ``get``; equal to any sequence of the same items."""

    def __init__(self, length: Callable[[], int], get: Callable[[int], Any]) -> None:
        self._length = length
        self._get = get

    def __len__(self) -> int:
        return self._length()

    def __getitem__(self, index: Any) -> Any:
        length = self._length()
        if isinstance(index, slice):
            return [self._get(i) for i in range(*index.indices(length))]
        if not -length <= index < length:
            raise IndexError(index)
        return self._get(index % length)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


def _epochs_by_index(runs: list[list[int]], length: int) -> list[tuple[int, int, int]]:
    """``runs`` as ``(start, end, epoch)`` ranges covering ``0..length``."""
    ranges = []
    for i, (start, epoch) in enumerate(runs):
        end = runs[i + 1][0] if i + 1 < len(runs) else length
        ranges.append((start, end, epoch))
    return ranges


def _overlaps(a: list[tuple[int, int, int]], b: list[tuple[int, int, int]]) -> list[tuple[int, int, int | None]]:
    """The pieces where both range lists are defined: ``(start, end, epoch or None if they differ)``."""
    pieces = []
    i = j = 0
    while i < len(a) and j < len(b):
        start = max(a[i][0], b[j][0])
        end = min(a[i][1], b[j][1])
        if start < end:
            pieces.append((start, end, a[i][2] if a[i][2] == b[j][2] else None))
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return pieces
