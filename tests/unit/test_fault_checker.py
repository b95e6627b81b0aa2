"""
Tests for the fault suite's checker (:mod:`tests.faults.checker`): each
violation it exists to find is found, in made-up histories (no processes).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from toystore.order.journal import Log

from ..faults.buyers import Attempt
from ..faults.checker import COUNTS, check


def log_of(*orders: tuple[str, str, int]) -> bytes:
    log = Log()
    log.append_leader(1, 3)
    for key, name, quantity in orders:
        log.append_order(1, name, quantity, key)
    return b"".join(log.lines)


def ledger(sold: int, quantity: int, restocked: int = 0) -> dict[str, dict[str, int]]:
    return {"Tux": {"initial": 10, "restocked": restocked, "sold": sold, "quantity": quantity}}


class CheckerTests(SynchronousTestCase):
    """A clean history counts nothing; each kind of damage counts once."""

    def setUp(self) -> None:
        self.attempts = [
            Attempt("a", "Tux", 1, "ok", number=0),
            Attempt("b", "Tux", 2, "unknown"),
            Attempt("c", "Tux", 1, "failed", code=409),
        ]
        self.log = log_of(("a", "Tux", 1), ("b", "Tux", 2))

    def counts(self, attempts=None, logs=None, book=None, mismatches=()) -> dict[str, int]:
        logs = logs or {1: self.log, 2: self.log, 3: self.log}
        counts, details = check(attempts or self.attempts, logs, book or ledger(3, 7), mismatches)
        self.assertEqual(len(details), sum(counts.values()))
        return {name: value for name, value in counts.items() if value}

    def test_clean(self) -> None:
        """An unknown outcome may be in the log; stock matches the log: all zero."""
        self.assertEqual(self.counts(), {})
        self.assertEqual(set(check(self.attempts, {1: self.log}, ledger(3, 7))[0]), set(COUNTS))

    def test_lost(self) -> None:
        """An acknowledged order missing from one replica (whose log then also differs)."""
        short = log_of(("b", "Tux", 2))
        self.assertEqual(self.counts(logs={1: self.log, 2: self.log, 3: short}), {"lost": 1, "logs_differ": 1})

    def test_wrong_number_is_lost(self) -> None:
        """Acknowledged as order 1, but the log has it as order 0."""
        attempts = [Attempt("a", "Tux", 1, "ok", number=1), Attempt("b", "Tux", 2, "unknown")]
        self.assertEqual(self.counts(attempts=attempts), {"lost": 1})

    def test_unexpected_and_failed_but_present(self) -> None:
        """An order nobody sent, and one whose only attempt was refused."""
        log = log_of(("a", "Tux", 1), ("b", "Tux", 2), ("c", "Tux", 1), ("z", "Tux", 1))
        counts = self.counts(logs={1: log, 2: log, 3: log}, book=ledger(5, 5))
        self.assertEqual(counts, {"unexpected": 1, "failed_but_present": 1})

    def test_duplicated(self) -> None:
        """One key, two orders."""
        log = log_of(("a", "Tux", 1), ("b", "Tux", 2), ("a", "Tux", 1))
        self.assertEqual(self.counts(logs={1: log, 2: log, 3: log}, book=ledger(4, 6)), {"duplicated": 1})

    def test_reply_mismatch(self) -> None:
        """The same key answered with two numbers, or a buyer saw it happen."""
        attempts = [*self.attempts, Attempt("a", "Tux", 1, "ok", number=0), Attempt("a", "Tux", 1, "ok", number=1)]
        self.assertEqual(self.counts(attempts=attempts), {"reply_mismatch": 1, "lost": 1})
        self.assertEqual(self.counts(mismatches=["a: 0 then 1"]), {"reply_mismatch": 1})

    def test_stock(self) -> None:
        """Stock that does not add up to the log, sales the log lacks, stock below zero."""
        self.assertEqual(self.counts(book=ledger(3, 6)), {"conservation": 1})
        self.assertEqual(self.counts(book=ledger(4, 7)), {"sold_not_ordered": 1})
        self.assertEqual(self.counts(book=ledger(3, -1, restocked=-8)), {"negative_stock": 1})
