"""
The catalog's stock: toys, prices and quantities in SQLite.

Everything here is plain, synchronous and reactor-free.  :class:`CatalogDB`
owns the database and is used by one thread at a time (the catalog's writer
thread, or a test); the service checks each request against
:mod:`toystore.contract` before it gets here.  A batch of operations runs in
one transaction, so one fsync makes a whole batch durable (group commit),
while each operation keeps its own outcome.

A key's first definite answer is its answer for good: a sale is recorded in
``buys``, a refusal for want of stock in ``refusals``, and any later buy
under that key gets the same answer and changes nothing (but the newest
epoch seen).  Only then is a refusal definite for the order replicas: an
earlier attempt of the same buy, still on its way on a connection given up
for lost, cannot sell the key afterwards.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ..envelope import ApiError, Conflict, NotFound, StaleEpoch, Unprocessable, dumps, loads
from .seed import TOYS

SCHEMA = """
CREATE TABLE IF NOT EXISTS toys (
    name      TEXT PRIMARY KEY,
    price     REAL NOT NULL,
    quantity  INTEGER NOT NULL CHECK (quantity >= 0),
    initial   INTEGER NOT NULL,
    restocked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS buys (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    key      TEXT NOT NULL UNIQUE,
    name     TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    epoch    INTEGER NOT NULL,
    reply    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    key      TEXT PRIMARY KEY,
    name     TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    epoch    INTEGER NOT NULL,
    reason   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class Toy:
    """One toy as the catalog sells it."""

    name: str
    price: float
    quantity: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "price": self.price, "quantity": self.quantity}


@dataclass(frozen=True)
class Buy:
    """Take ``quantity`` of toy ``name``, once per ``key``, for a leader of ``epoch``."""

    name: str
    quantity: int
    key: str
    epoch: int


@dataclass(frozen=True)
class Reconcile:
    """
    A new leader of ``epoch`` takes over: refuse every older epoch from now
    on, and list the recorded buys after ``after`` (by seq, at most
    ``limit``), so that it can find those no order log holds.
    """

    epoch: int
    after: int
    limit: int = 1000


@dataclass(frozen=True)
class Restock:
    """Set every toy whose stock is 0 back to ``quantity``."""

    quantity: int


Operation = Union[Buy, Reconcile, Restock]


@dataclass
class Outcome:
    """
    What one operation of a batch did.

    :ivar value: the reply data, or the :class:`ApiError` to answer instead.
    :ivar changed: the new quantity of every toy whose stock changed.
    :ivar replayed: true when a buy's key was already recorded.
    """

    value: Any
    changed: dict[str, int] = field(default_factory=dict)
    replayed: bool = False


class CatalogDB:
    """
    The catalog's database: WAL journal, ``synchronous=FULL``, so a commit is
    on disk when :meth:`apply` returns.

    Not thread-safe: use it from one thread at a time.

    :param path: the SQLite file; created and filled with :data:`TOYS` at
        ``initial_stock`` each when new.
    """

    def __init__(self, path: Path | str, initial_stock: int = 100, toys: dict[str, float] = TOYS) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._transaction():
            for statement in _statements(SCHEMA):
                self._db.execute(statement)
            if self._db.execute("SELECT COUNT(*) FROM toys").fetchone()[0] == 0:
                self._db.executemany(
                    "INSERT INTO toys (name, price, quantity, initial) VALUES (?, ?, ?, ?)",
                    [(name, price, initial_stock, initial_stock) for name, price in toys.items()],
                )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # -- reads ------------------------------------------------------------

    def toys(self) -> dict[str, Toy]:
        """Every toy, by name."""
        rows = self._db.execute("SELECT name, price, quantity FROM toys ORDER BY name")
        return {name: Toy(name, price, quantity) for name, price, quantity in rows}

    def epoch(self) -> int:
        """The newest leader epoch any buy has carried."""
        row = self._db.execute("SELECT value FROM meta WHERE name = 'epoch'").fetchone()
        return row[0] if row else 0

    def ledger(self) -> dict[str, dict[str, int]]:
        """
        Per toy: ``initial``, ``restocked``, ``sold`` and ``quantity``, for
        checking that initial + restocked - sold = quantity.
        """
        return _ledger(self._db)

    def buys(self) -> list[dict[str, Any]]:
        """Every recorded buy, by seq."""
        return _buys(self._db)

    # -- writes -----------------------------------------------------------

    def apply(self, operations: list[Operation]) -> list[Outcome]:
        """
        Run ``operations`` in order, in one transaction committed before
        returning.  Each gets its own :class:`Outcome`; if the database
        itself fails, nothing is committed and the error is raised.
        """
        outcomes = []
        with self._transaction():
            for operation in operations:
                try:
                    if isinstance(operation, Buy):
                        outcomes.append(self._buy(operation))
                    elif isinstance(operation, Reconcile):
                        outcomes.append(self._reconcile(operation))
                    else:
                        outcomes.append(self._restock(operation))
                except ApiError as e:
                    outcomes.append(Outcome(e))
        return outcomes

    def _see(self, epoch: int) -> int:
        """Make ``epoch`` the newest seen if it is newer; return the newest seen before it."""
        newest = self.epoch()
        if epoch > newest:
            self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('epoch', ?)", (epoch,))
        return newest

    def _fence(self, epoch: int) -> None:
        """Refuse ``epoch`` if a newer one was seen; else make it the newest."""
        newest = self._see(epoch)
        if epoch < newest:
            raise StaleEpoch(f"epoch {epoch} is older than epoch {newest}, the newest seen")

    def _recorded(self, key: str) -> tuple[str, int, Outcome] | None:
        """The toy and quantity ``key`` was first used for, and its answer then: the reply, or the refusal."""
        sold = self._db.execute("SELECT seq, name, quantity, reply FROM buys WHERE key = ?", (key,)).fetchone()
        if sold is not None:
            seq, name, quantity, reply = sold
            return name, quantity, Outcome({**loads(reply.encode()), "seq": seq}, replayed=True)
        refused = self._db.execute("SELECT name, quantity, reason FROM refusals WHERE key = ?", (key,)).fetchone()
        if refused is not None:
            name, quantity, reason = refused
            return name, quantity, Outcome(Conflict(reason), replayed=True)
        return None

    def _reconcile(self, reconcile: Reconcile) -> Outcome:
        self._fence(reconcile.epoch)
        rows = self._db.execute(
            "SELECT seq, key, name, quantity FROM buys WHERE seq > ? ORDER BY seq LIMIT ?",
            (reconcile.after, reconcile.limit + 1),
        ).fetchall()
        buys = [{"seq": seq, "key": key, "name": name, "quantity": quantity} for seq, key, name, quantity in rows]
        return Outcome({"epoch": reconcile.epoch, "buys": buys[: reconcile.limit], "more": len(buys) > reconcile.limit})

    def _buy(self, buy: Buy) -> Outcome:
        # The key first: a key answered definitely (sold, or refused for want of stock) is answered
        # as it was the first time whatever the epoch, so that a leader that lost the reply (the
        # catalog died after the commit, the connection dropped) gets the same answer to its retry
        # even after a newer leader was seen, and so that a first attempt arriving late (its
        # connection given up, its bytes still in the network) cannot sell a key whose retry was
        # refused.  Only a new key is fenced.  A newer epoch is news either way.
        recorded = self._recorded(buy.key)
        if recorded is not None:
            self._see(buy.epoch)
            name, quantity, outcome = recorded
            if (name, quantity) != (buy.name, buy.quantity):
                raise Unprocessable(
                    f"key {buy.key!r} was used for {quantity} x {name}, not {buy.quantity} x {buy.name}"
                )
            return outcome
        self._fence(buy.epoch)
        row = self._db.execute("SELECT price, quantity FROM toys WHERE name = ?", (buy.name,)).fetchone()
        if row is None:
            raise NotFound(f"product {buy.name!r} not found")
        price, stock = row
        if buy.quantity > stock:
            reason = f"insufficient stock: {stock} {buy.name} left, {buy.quantity} wanted"
            self._db.execute(
                "INSERT INTO refusals (key, name, quantity, epoch, reason) VALUES (?, ?, ?, ?, ?)",
                (buy.key, buy.name, buy.quantity, buy.epoch, reason),
            )
            raise Conflict(reason)
        remaining = stock - buy.quantity
        self._db.execute("UPDATE toys SET quantity = ? WHERE name = ?", (remaining, buy.name))
        reply = {
            "name": buy.name,
            "quantity": buy.quantity,
            "price": price,
            "remaining": remaining,
            "key": buy.key,
            "epoch": buy.epoch,
        }
        seq = self._db.execute(
            "INSERT INTO buys (key, name, quantity, epoch, reply) VALUES (?, ?, ?, ?, ?)",
            (buy.key, buy.name, buy.quantity, buy.epoch, dumps(reply).decode()),
        ).lastrowid
        return Outcome({**reply, "seq": seq}, {buy.name: remaining})

    def _restock(self, restock: Restock) -> Outcome:
        names = [name for (name,) in self._db.execute("SELECT name FROM toys WHERE quantity = 0 ORDER BY name")]
        self._db.executemany(
            "UPDATE toys SET quantity = ?, restocked = restocked + ? WHERE name = ?",
            [(restock.quantity, restock.quantity, name) for name in names],
        )
        return Outcome({"restocked": names}, {name: restock.quantity for name in names})


def read_ledger(path: Path | str) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
    """
    The ledger and the buys of the database at ``path``, opened read-only:
    safe while the catalog runs (WAL lets a reader see the last commit).
    """
    db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        return _ledger(db), _buys(db)
    finally:
        db.close()


def _ledger(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
    sold = dict(db.execute("SELECT name, SUM(quantity) FROM buys GROUP BY name"))
    rows = db.execute("SELECT name, initial, restocked, quantity FROM toys ORDER BY name")
    return {
        name: {"initial": initial, "restocked": restocked, "sold": sold.get(name, 0), "quantity": quantity}
        for name, initial, restocked, quantity in rows
    }


def _buys(db: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = db.execute("SELECT seq, key, name, quantity, epoch FROM buys ORDER BY seq")
    return [{"seq": s, "key": k, "name": n, "quantity": q, "epoch": e} for s, k, n, q, e in rows]


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on an exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
