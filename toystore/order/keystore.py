"""
The idempotency keys of the order log, on disk: a key's order number and
epoch, in an SQLite table beside the journal (``keys.sqlite``).

Every key is in the journal already.  This table is an index of them, so
that the log in memory need not hold a key per order (tens of bytes each,
for as long as orders come).  It is derived from the journal and follows
it:

* It is written in the replica's disk thread, in the same batch as the
  journal lines, after their fsync.  SQLite runs it in WAL mode with
  ``synchronous=NORMAL``: a crash can lose its last commits, never corrupt
  it, and a commit costs no fsync of its own.
* So at start it may be behind the journal, or ahead of it (a truncation
  of the journal whose delete was lost), or from another journal altogether
  (a data directory put together by hand).  :meth:`KeyStore.check` compares
  it with the journal's orders, row by row in number order, as the journal
  is read; from the first row that differs, it is written again.  A file
  SQLite cannot read is deleted and made again (:func:`open_keystore`).

A row names the epoch of its order besides its number.  Records with the
same index and epoch are the same record in every log, so a row whose
number and epoch match the log's order is that order, and one that does not
is a row whose order was cut from the log (its delete still queued): the
caller checks that in memory (:meth:`~toystore.order.log.Log.order_epoch`).

This module is reactor-free: its calls are made in the disk thread (and at
start, before the replica serves).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

#: The file beside the journal.
KEYS_FILE = "keys.sqlite"

#: SQLite's page cache, KiB (its default is about 2 MiB): the table's pages are in the kernel's cache anyway.
CACHE_KIB = 1024
#: Rows inserted at a time while the table is brought in line with the journal.
CHECK_BATCH = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    number INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    epoch INTEGER NOT NULL
)
"""

#: One write of a batch: ``("append", [(key, number, epoch), ...])`` or ``("truncate", order_count)``.
KeyWrite = tuple[str, Any]


class KeyStore:
    """
    Key -> (order number, epoch) of every order of one journal.

    :param path: the SQLite file (made if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self._db.execute(_SCHEMA)
            self._db.execute("SELECT 1 FROM orders LIMIT 1").fetchone()  # a file that is not a database fails here
        except BaseException:
            self._db.close()
            raise

    def find(self, key: str) -> tuple[int, int] | None:
        """The number and epoch of the order with ``key``, or None."""
        row = self._db.execute("SELECT number, epoch FROM orders WHERE key = ?", (key,)).fetchone()
        return None if row is None else (row[0], row[1])

    def write(self, writes: list[KeyWrite]) -> None:
        """Apply the key writes of one batch, in order, in one transaction."""
        db = self._db
        db.execute("BEGIN")
        try:
            for kind, value in writes:
                if kind == "append":
                    if value:
                        # A row of a cut order may still hold the number or the key: the journal wins.
                        db.executemany("INSERT OR REPLACE INTO orders (key, number, epoch) VALUES (?, ?, ?)", value)
                else:
                    db.execute("DELETE FROM orders WHERE number >= ?", (value,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def check(self) -> KeyCheck:
        """Begin comparing the table with the journal's orders (see :class:`KeyCheck`)."""
        return KeyCheck(self._db)

    def count(self) -> int:
        """How many keys the table holds."""
        (n,) = self._db.execute("SELECT count(*) FROM orders").fetchone()
        return int(n)

    def close(self) -> None:
        """Close the database."""
        self._db.close()


class KeyCheck:
    """
    The journal's orders, given one at a time in number order as the
    journal is read, compared with the table's rows a chunk at a time; from
    the first that differs, the table is written again.  :meth:`done` ends
    the check.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._rows: sqlite3.Cursor | None = db.execute("SELECT key, number, epoch FROM orders ORDER BY number")
        self._chunk: list[tuple[str, int, int]] = []  # orders not yet compared, or not yet written
        self.rewritten_from: int | None = None  # the first number written again, if any

    def see(self, key: str, number: int, epoch: int) -> None:
        """The journal's order ``number`` (the next in sequence) has ``key`` and ``epoch``."""
        self._chunk.append((key, number, epoch))
        if len(self._chunk) >= CHECK_BATCH:
            self._settle()

    def _settle(self) -> None:
        """Compare the orders seen with the next rows, or write them if the table differs already."""
        chunk = self._chunk
        if not chunk:
            return
        if self._rows is not None:
            rows = self._rows.fetchmany(len(chunk))
            if rows == chunk:
                self._chunk = []
                return
            # The first order that differs from its row, or that has no row (the table is behind).
            first = next(
                (i for i, (row, order) in enumerate(zip(rows, chunk, strict=False)) if row != order), len(rows)
            )
            self._diverge(chunk[first][1])
            chunk = chunk[first:]
        self._db.executemany("INSERT OR REPLACE INTO orders (key, number, epoch) VALUES (?, ?, ?)", chunk)
        self._chunk = []

    def _diverge(self, number: int) -> None:
        """The table differs from the journal at ``number``: drop what it holds from there on."""
        assert self._rows is not None
        self._rows.close()
        self._rows = None
        self.rewritten_from = number
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM orders WHERE number >= ?", (number,))

    def done(self) -> None:
        """The journal holds no more orders: drop any row beyond them, and commit."""
        self._settle()
        if self._rows is not None:
            extra = self._rows.fetchone()
            if extra is None:
                self._rows.close()
                self._rows = None
                return
            self._diverge(extra[1])
        self._db.execute("COMMIT")

    def abandon(self) -> None:
        """The journal could not be read: leave the table as it was."""
        if self._rows is not None:
            self._rows.close()
            self._rows = None
        elif self._db.in_transaction:
            self._db.execute("ROLLBACK")


def open_keystore(path: Path) -> tuple[KeyStore, bool]:
    """
    The key store at ``path``; a file SQLite cannot read is deleted and made
    anew (the journal has every key).

    :return: the store, and whether a bad file was replaced.
    """
    try:
        return KeyStore(path), False
    except sqlite3.DatabaseError:
        for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            stale.unlink(missing_ok=True)
        return KeyStore(path), True
