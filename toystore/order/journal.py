"""
The order log's file: an append-only file of record lines
(:mod:`toystore.order.records`), read at start, appended to and truncated
by one writer thread, and read back by byte range.

This module is reactor-free.  :func:`open_journal` reads a file at start, a
chunk at a time, into a :class:`~toystore.order.log.Log` that keeps only
what it needs: a torn last record (a crash mid-write) is cut off; a bad
record followed by good ones is :class:`CorruptJournal`.
:class:`JournalFile` does the writes, each batch ending in one fsync;
:class:`JournalReader` reads back the records the log no longer holds in
memory.  :func:`scan` reads a whole file into a list of lines, for tools.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .keystore import KEYS_FILE, KeyStore, open_keystore
from .log import WINDOW_BYTES, Log, NotInMemory
from .records import CorruptJournal, decode, encode, record_of

__all__ = [
    "CorruptJournal",
    "JournalFile",
    "JournalReader",
    "Log",
    "NotInMemory",
    "Opened",
    "Scanned",
    "decode",
    "encode",
    "open_journal",
    "open_log",
    "record_of",
    "scan",
    "write_durably",
]

#: The journal's file in a replica's data directory.
JOURNAL_FILE = "orders.log"
#: Bytes read at a time when a journal is opened.
READ_CHUNK = 1 << 20


class _Scan:
    """
    One pass over a journal file, a chunk at a time: :meth:`records` yields
    the good records, and then :attr:`good_bytes` and :attr:`size` say where
    the good part ends.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.good_bytes = 0
        self.size = 0

    def records(self) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """
        ``(line, record)`` of each good record, in order.

        :raises CorruptJournal: naming the first bad record, when a good
            record follows it, or when records are out of order.
        """
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return
        with f:
            count = 0
            bad: tuple[int, int, str] | None = None  # (line number, offset, reason) of the first bad line
            rest = b""
            while True:
                chunk = f.read(READ_CHUNK)
                pieces = (rest + chunk).split(b"\n")
                rest = pieces.pop()
                lines = [piece + b"\n" for piece in pieces]
                if not chunk and rest:
                    lines.append(rest)  # the last line, without its newline
                for line in lines:
                    try:
                        if not line.endswith(b"\n"):
                            raise ValueError("no newline")
                        record = decode(line)
                    except ValueError as e:
                        if bad is None:
                            bad = (count + 1, self.size, str(e))
                    else:
                        if bad is not None:
                            raise CorruptJournal(
                                f"{self.path}: record {bad[0]} (byte {bad[1]}) is bad ({bad[2]}) "
                                "but good records follow it"
                            )
                        if record["index"] != count:
                            raise CorruptJournal(
                                f"{self.path}: record {count + 1} has index {record['index']}, expected {count}"
                            )
                        yield line, record
                        self.good_bytes = self.size + len(line)
                    if bad is None:
                        count += 1
                    self.size += len(line)
                if not chunk:
                    return


@dataclass
class Scanned:
    """What :func:`scan` found: the good lines, and where the good part of the file ends."""

    lines: list[bytes] = field(default_factory=list)
    good_bytes: int = 0
    torn_bytes: int = 0


def scan(path: Path) -> Scanned:
    """
    Read and check the journal at ``path`` (a missing file is an empty log),
    keeping every good line: for tools and tests.  A replica opens its
    journal with :func:`open_journal`, which keeps only what its log needs.

    :raises CorruptJournal: see :meth:`_Scan.records`.
    """
    reading = _Scan(path)
    lines = [line for line, _ in reading.records()]
    return Scanned(lines, reading.good_bytes, reading.size - reading.good_bytes)


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


class JournalReader:
    """
    Reads records back from the journal, by byte range, through a read-only
    descriptor of its own (``os.pread``: no shared position, so reads may
    run in any thread beside the writer).  Only records already on disk are
    asked for: the log keeps the others in memory.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)

    def read_lines(self, start: int, end: int, count: int) -> list[bytes]:
        """
        The ``count`` lines between byte ``start`` and byte ``end``, each checked.

        :raises CorruptJournal: when they are not ``count`` good lines.
        """
        parts = []
        offset = start
        while offset < end:
            data = os.pread(self._fd, end - offset, offset)
            if not data:
                raise CorruptJournal(f"{self.path}: ends at byte {offset}, before byte {end}")
            parts.append(data)
            offset += len(data)
        pieces = b"".join(parts).split(b"\n")
        if pieces.pop() or len(pieces) != count:
            raise CorruptJournal(f"{self.path}: bytes {start} to {end} are not {count} records")
        lines = []
        for piece in pieces:
            crc, _, body = piece.partition(b" ")
            try:
                good = len(crc) == 8 and zlib.crc32(body) == int(crc, 16)
            except ValueError:
                good = False
            if not good:
                raise CorruptJournal(f"{self.path}: the record at byte {start + sum(map(len, lines))} is bad")
            lines.append(piece + b"\n")
        return lines

    def close(self) -> None:
        """Close the descriptor."""
        os.close(self._fd)


@dataclass
class Opened:
    """
    What :func:`open_journal` gives: the log in memory, the file for writes,
    what was cut off, and the first order whose key the key store had to be
    given again (None when it agreed with the journal).
    """

    order_log: Log
    file: JournalFile
    torn_bytes: int
    keys_rewritten_from: int | None = None
    keys: KeyStore | None = None  # the key store, when :func:`open_log` opened one
    keys_remade: bool = False  # ..., made anew because its file could not be read


def open_journal(
    path: Path, window_bytes: int = WINDOW_BYTES, keys: KeyStore | None = None, key_hash: Callable[[str], int] = hash
) -> Opened:
    """
    Read the journal into a :class:`Log` (a chunk at a time, keeping only
    what the log keeps), cut a torn tail off (durably), and open it for
    appends.

    :param keys: the key store, brought in line with the journal's orders
        as they are read (:meth:`~toystore.order.keystore.KeyStore.check`);
        without one, the log keeps every key in memory.
    :param key_hash: the hash of keys for the log's Bloom filter.
    :raises CorruptJournal: see :meth:`_Scan.records`, or a record that
        does not continue the log (an order number out of sequence).
    """
    order_log = Log(window_bytes=window_bytes, key_hash=key_hash)
    reading = _Scan(path)
    check = None if keys is None else keys.check()
    try:
        for line, record in reading.records():
            try:
                order_log.load(line, record, indexed=check is not None)
            except ValueError as e:
                raise CorruptJournal(
                    f"{path}: record {len(order_log) + 1} (byte {order_log.size}) is bad ({e})"
                ) from None
            order = record.get("order")
            if check is not None and order is not None:
                check.see(order["key"], order["number"], record["epoch"])
    except BaseException:
        if check is not None:
            check.abandon()
        raise
    if check is not None:
        check.done()
    torn_bytes = reading.size - reading.good_bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    if torn_bytes:
        with open(path, "r+b") as f:
            f.truncate(reading.good_bytes)
            f.flush()
            os.fsync(f.fileno())
    elif not path.exists():
        path.touch()
        _fsync_directory(path.parent)
    rewritten = None if check is None else check.rewritten_from
    return Opened(order_log, JournalFile(path, reading.good_bytes), torn_bytes, rewritten)


def open_log(directory: Path, window_bytes: int = WINDOW_BYTES, key_hash: Callable[[str], int] = hash) -> Opened:
    """
    A replica's log in ``directory``: its key store (made anew if its file
    cannot be read, see :func:`~toystore.order.keystore.open_keystore`) and
    its journal, read with :func:`open_journal`.  If the journal cannot be
    read, the key store is closed again.
    """
    keys, remade = open_keystore(directory / KEYS_FILE)
    try:
        opened = open_journal(directory / JOURNAL_FILE, window_bytes, keys, key_hash)
    except BaseException:
        keys.close()
        raise
    opened.keys, opened.keys_remade = keys, remade
    return opened


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
