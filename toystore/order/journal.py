"""
The order log: an append-only file of checksummed JSON records, one a line.

Every line is ``<crc32 of the JSON, 8 hex digits> <JSON>\\n`` with the JSON
encoded deterministically (sorted keys, no spaces), so that replicas holding
the same records hold byte-identical files.  Records are numbered by their
position, ``index`` 0, 1, 2, ..., and carry the ``epoch`` of the leader that
wrote them.  Two kinds exist::

    {"epoch": 2, "index": 7, "order": {"key": "k", "name": "Tux", "number": 5, "quantity": 2, "seq": 41}}
    {"epoch": 3, "index": 8, "leader": 3, "reconciled": 41}

An *order* record holds one order; order numbers count order records only,
so they run 0, 1, 2, ... without gaps; ``seq`` numbers the catalog's buy
of it.  A *leader* record ends each leader's start: a new leader commits one
before it serves, which also commits every record before it (the
log-matching rule of Raft: a leader counts copies only of records of its own
epoch).  Its ``reconciled`` says that every buy the catalog made up to that
seq is an order of this log (:mod:`toystore.order.reconcile`).

This module is reactor-free.  :func:`scan` reads a file at start: a torn last
record (a crash mid-write) is cut off; a bad record followed by good ones is
:class:`CorruptJournal`.  :class:`Log` is the in-memory view the service
reads from; :class:`JournalFile` does the writes, each batch ending in one
fsync.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..envelope import BadRequest, dumps, loads


class CorruptJournal(Exception):
    """A record that is not the torn tail of the file is bad."""


def encode(record: dict[str, Any]) -> bytes:
    """The line of ``record``: checksum, space, deterministic JSON, newline."""
    body = dumps(record)
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode(line: bytes) -> dict[str, Any]:
    """
    The record of one line (with or without its newline).

    :raises ValueError: when the checksum, the JSON or the shape is wrong.
    """
    line = line.rstrip(b"\n")
    crc, space, body = line.partition(b" ")
    if not space or len(crc) != 8:
        raise ValueError("no checksum")
    try:
        expected = int(crc, 16)
    except ValueError:
        raise ValueError("checksum is not hexadecimal") from None
    if zlib.crc32(body) != expected:
        raise ValueError("checksum mismatch")
    try:
        record = loads(body)
    except BadRequest as e:
        raise ValueError(e.message) from None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("index"), int)
        or not isinstance(record.get("epoch"), int)
    ):
        raise ValueError("not a record")
    return record


@dataclass
class Scanned:
    """What :func:`scan` found: the good lines, and where the good part of the file ends."""

    lines: list[bytes] = field(default_factory=list)
    good_bytes: int = 0
    torn_bytes: int = 0


def scan(path: Path) -> Scanned:
    """
    Read and check the journal at ``path`` (a missing file is an empty log).

    :raises CorruptJournal: naming the first bad record, when a good record
        follows it, or when records are out of order.
    """
    result = Scanned()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return result
    offset = 0
    bad: tuple[int, int, str] | None = None  # (line number, offset, reason) of the first bad line
    for number, line in enumerate(_lines(data), start=1):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("no newline")
            record = decode(line)
        except ValueError as e:
            if bad is None:
                bad = (number, offset, str(e))
        else:
            if bad is not None:
                raise CorruptJournal(
                    f"{path}: record {bad[0]} (byte {bad[1]}) is bad ({bad[2]}) but good records follow it"
                )
            if record["index"] != len(result.lines):
                raise CorruptJournal(
                    f"{path}: record {number} has index {record['index']}, expected {len(result.lines)}"
                )
            result.lines.append(line)
            result.good_bytes = offset + len(line)
        offset += len(line)
    result.torn_bytes = len(data) - result.good_bytes
    return result


def _lines(data: bytes) -> list[bytes]:
    """``data`` cut after each newline (only ``\\n`` ends a line); the last piece may have none."""
    pieces = data.split(b"\n")
    lines = [piece + b"\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


class JournalFile:
    """
    The journal's file, for one writer thread at a time: appends and
    truncations, each call ending with an fsync.
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self._file = open(path, "ab")
        self._size = size
        if self._file.tell() != size:
            raise CorruptJournal(f"{path}: expected {size} bytes, found {self._file.tell()}")

    def write(self, operations: list[tuple[str, Any]]) -> list[int]:
        """
        Apply ``("append", bytes)`` and ``("truncate", size)`` operations in
        order, then fsync once.  Returns the file size after each operation.
        """
        sizes = []
        for kind, value in operations:
            if kind == "append":
                self._file.write(value)
                self._size += len(value)
            else:
                self._file.flush()
                os.ftruncate(self._file.fileno(), value)
                self._file.seek(value)
                self._size = value
            sizes.append(self._size)
        self._file.flush()
        os.fsync(self._file.fileno())
        return sizes

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def open_journal(path: Path) -> tuple[Scanned, JournalFile]:
    """
    Scan the journal, cut a torn tail off (durably), and open it for appends.

    :raises CorruptJournal: see :func:`scan`.
    """
    scanned = scan(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if scanned.torn_bytes:
        with open(path, "r+b") as f:
            f.truncate(scanned.good_bytes)
            f.flush()
            os.fsync(f.fileno())
    elif not path.exists():
        path.touch()
        _fsync_directory(path.parent)
    return scanned, JournalFile(path, scanned.good_bytes)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """Replace the file at ``path`` with ``data``: temporary file, fsync, rename, fsync the directory."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    _fsync_directory(path.parent)


class Log:
    """
    The journal in memory: its lines and records, and the indexes the
    service needs (order number to record, key to order number).

    Changes here are made on the reactor thread first; the service writes
    the same changes to the file through :class:`JournalFile`.
    """

    def __init__(self, lines: Iterable[bytes] = ()) -> None:
        self.lines: list[bytes] = []
        self.records: list[dict[str, Any]] = []
        self.orders: list[int] = []  # order number -> index
        self.keys: dict[str, int] = {}  # key -> order number
        self.offsets: list[int] = [0]  # offsets[i] = file size before record i
        for line in lines:
            self._add(line, decode(line))

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def last_epoch(self) -> int:
        """The epoch of the last record (0 when empty)."""
        return self.records[-1]["epoch"] if self.records else 0

    @property
    def size(self) -> int:
        """The file size of the whole log."""
        return self.offsets[-1]

    def _add(self, line: bytes, record: dict[str, Any]) -> None:
        if record["index"] != len(self.lines):
            raise ValueError(f"record index {record['index']} where {len(self.lines)} was expected")
        order = record.get("order")
        if order is not None:
            if order["number"] != len(self.orders):
                raise ValueError(f"order number {order['number']} where {len(self.orders)} was expected")
            self.orders.append(record["index"])
            self.keys[order["key"]] = order["number"]
        self.lines.append(line)
        self.records.append(record)
        self.offsets.append(self.offsets[-1] + len(line))

    def append_order(self, epoch: int, name: str, quantity: int, key: str, seq: int | None = None) -> bytes:
        """Add an order record (``seq``: the catalog's number of its buy); return its line."""
        order: dict[str, Any] = {"number": len(self.orders), "name": name, "quantity": quantity, "key": key}
        if seq is not None:
            order["seq"] = seq
        return self._append({"index": len(self.lines), "epoch": epoch, "order": order})

    def append_leader(self, epoch: int, leader: int, reconciled: int = 0) -> bytes:
        """Add the record with which ``leader`` starts serving ``epoch``; return its line."""
        return self._append({"index": len(self.lines), "epoch": epoch, "leader": leader, "reconciled": reconciled})

    def reconciled(self) -> int:
        """
        The catalog seq up to which every buy is an order of this log: the
        last leader record's ``reconciled``, carried on by the seqs of the
        orders after it for as long as they run without a gap.
        """
        seqs = set()
        through = 0
        for record in reversed(self.records):
            if "leader" in record:
                through = record.get("reconciled", 0)
                break
            seq = record.get("order", {}).get("seq")
            if seq is not None:
                seqs.add(seq)
        while through + 1 in seqs:
            through += 1
        return through

    def _append(self, record: dict[str, Any]) -> bytes:
        line = encode(record)
        self._add(line, record)
        return line

    def append_line(self, line: bytes) -> dict[str, Any]:
        """
        Add a line received from a peer, checked.

        :raises ValueError: when it is bad or does not continue this log.
        """
        record = decode(line)
        self._add(line if line.endswith(b"\n") else line + b"\n", record)
        return record

    def truncate(self, length: int) -> int:
        """Keep the first ``length`` records; return the new file size."""
        if length < len(self.lines):
            del self.lines[length:]
            del self.records[length:]
            del self.offsets[length + 1 :]
            while self.orders and self.orders[-1] >= length:
                self.orders.pop()
            self.keys = {key: number for key, number in self.keys.items() if number < len(self.orders)}
        return self.size

    def order(self, number: int) -> dict[str, Any] | None:
        """The order with ``number``, or None."""
        if 0 <= number < len(self.orders):
            return self.records[self.orders[number]]["order"]
        return None

    def runs(self) -> list[list[int]]:
        """
        The log's epochs as ``[[first index, epoch], ...]``: enough for a peer
        to tell where two logs part (records with the same index and epoch
        are the same record, and so are all records before them).
        """
        runs: list[list[int]] = []
        for record in self.records:
            if not runs or runs[-1][1] != record["epoch"]:
                runs.append([record["index"], record["epoch"]])
        return runs

    def common_length(self, runs: list[list[int]], length: int) -> int:
        """
        How many first records a peer's log (described by its ``runs`` and
        ``length``) shares with this one.
        """
        theirs = _epochs_by_index(runs, length)
        mine = _epochs_by_index(self.runs(), len(self))
        common = 0
        for start, end, epoch in _overlaps(theirs, mine):
            if epoch is None or start != common:
                break
            common = end
        return common

    def newer_than(self, last_epoch: int, length: int) -> bool:
        """Whether this log is more up to date than one ending at ``(last_epoch, length)``."""
        return (self.last_epoch, len(self)) > (last_epoch, length)


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
