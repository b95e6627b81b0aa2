"""
Tests for the fault suite's checker (:mod:`tests.faults.checker`): each
violation it exists to find is found, and the availability figures come out
as worked by hand, in made-up histories (no processes).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from toystore.order.journal import Log

from ..faults.buyers import Attempt
from ..faults.checker import (
    COUNTS,
    availability,
    availability_misses,
    check,
    describe_availability,
    merge_availability,
)


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


def tried(key: str, started: float, ended: float, outcome: str, code: int | None = None) -> Attempt:
    """An attempt at order ``key`` from ``started`` to ``ended``."""
    number = 0 if outcome == "ok" else None
    code = 200 if outcome == "ok" else code
    return Attempt(key, "Tux", 1, outcome, number=number, code=code, started=started, ended=ended)


class AvailabilityTests(SynchronousTestCase):
    """
    A 20 s window, a leader killed from 5 to 8 s and its lines cut from 12 to
    15 s; acknowledgements at 1.1, 9, 13.2, 14 and 17.1 s, so the gaps are
    1.1, 7.9, 4.2, 0.8, 3.1 and 2.9 s.
    """

    faults = [
        {"fault": "kill-leader", "at": 5.0, "healed": 8.0},
        {"fault": "cut-leader-lines", "at": 12.0, "healed": 15.0},
    ]

    def setUp(self) -> None:
        self.attempts = [
            tried("a", 1.0, 1.1, "ok"),  # no fault
            tried("b", 5.5, 13.6, "unknown"),  # kill-leader: timed out, then
            tried("b", 13.8, 14.0, "ok"),  # acknowledged 8.5 s after its first try: too late
            tried("c", 6.0, 6.2, "failed", 409),  # kill-leader: refused (out of stock), the store answered
            tried("d", 7.0, 9.0, "ok"),  # kill-leader: acknowledged in time
            tried("e", 7.5, 7.5, "failed"),  # kill-leader: connection refused, no answer
            tried("a", 12.5, 12.6, "ok"),  # a repeat of an order first tried before the cut: not the cut's
            tried("f", 13.0, 13.2, "ok"),  # cut-leader-lines: acknowledged
            tried("g", 17.0, 17.1, "ok"),  # no fault
            tried("h", 21.0, 21.1, "ok"),  # after the window: left out
        ]

    def figures(self, attempts=None, faults=None) -> dict:
        return availability(self.attempts if attempts is None else attempts, faults or self.faults, (0.0, 20.0))

    def test_per_kind(self) -> None:
        """Shares over the orders first tried during each kind, refusals left out; gaps around each fault."""
        kinds = self.figures()["kinds"]
        self.assertEqual(list(kinds), ["cut-leader-lines", "kill-leader"])
        self.assertEqual(
            kinds["kill-leader"],
            {
                "faults": 1,
                "tried": 4,
                "refused": 1,
                "acknowledged": 1,
                "availability": 0.3333,
                "max_gap": 7.9,
                "gaps": [7.9],
            },
        )
        self.assertEqual(
            kinds["cut-leader-lines"],
            {
                "faults": 1,
                "tried": 1,
                "refused": 0,
                "acknowledged": 1,
                "availability": 1.0,
                "max_gap": 4.2,
                "gaps": [4.2],
            },
        )

    def test_no_fault_and_overall(self) -> None:
        """Orders tried between faults, and every order with the window's longest gap."""
        figures = self.figures()
        self.assertEqual(figures["no_fault"]["tried"], 2)
        self.assertEqual(figures["no_fault"]["availability"], 1.0)
        self.assertIsNone(figures["no_fault"]["max_gap"])
        overall = {"faults": 2, "tried": 7, "refused": 1, "acknowledged": 4, "availability": 0.6667, "max_gap": 7.9}
        self.assertEqual(figures["overall"], {**overall, "gaps": []})

    def test_timeout_is_inclusive(self) -> None:
        """A 200 exactly the timeout after the first try counts; a moment later does not."""
        on_time = [tried("x", 6.0, 14.0, "ok")]
        late = [tried("x", 6.0, 14.01, "ok")]
        self.assertEqual(self.figures(on_time)["kinds"]["kill-leader"]["acknowledged"], 1)
        self.assertEqual(self.figures(late)["kinds"]["kill-leader"]["acknowledged"], 0)

    def test_nothing_acknowledged(self) -> None:
        """No acknowledgement at all: the whole window is one gap, and a kind with only refusals has no share."""
        figures = self.figures([tried("c", 6.0, 6.2, "failed", 409)])
        self.assertEqual(figures["overall"]["max_gap"], 20.0)
        self.assertEqual(figures["kinds"]["kill-leader"]["max_gap"], 20.0)
        self.assertIsNone(figures["kinds"]["kill-leader"]["availability"])
        self.assertEqual(figures["kinds"]["cut-leader-lines"]["tried"], 0)

    def test_overlapping_faults(self) -> None:
        """An order tried while two faults hold counts for both kinds, once overall."""
        faults = [*self.faults, {"fault": "kill-catalog", "at": 6.5, "healed": 7.2}]
        figures = self.figures(faults=faults)
        self.assertEqual(figures["kinds"]["kill-catalog"]["tried"], 1)  # d, at 7.0
        self.assertEqual(figures["kinds"]["kill-leader"]["tried"], 4)
        self.assertEqual(figures["overall"]["tried"], 7)

    def test_merge(self) -> None:
        """Two runs: counts add up, shares are recomputed, the longest gaps kept."""
        first = self.figures()
        second = self.figures([tried("y", 5.0, 5.1, "ok")], faults=[{"fault": "kill-leader", "at": 4.0, "healed": 6.0}])
        merged = merge_availability([first, second])
        self.assertEqual(
            merged["kinds"]["kill-leader"],
            {
                "faults": 2,
                "tried": 5,
                "refused": 1,
                "acknowledged": 2,
                "availability": 0.5,
                "max_gap": 14.9,
                "gaps": [7.9, 14.9],
            },
        )
        self.assertEqual(merged["overall"]["max_gap"], 14.9)
        self.assertEqual(merged["no_fault"]["tried"], 2)
        self.assertEqual(merge_availability([])["overall"]["tried"], 0)

    def test_misses(self) -> None:
        """Thresholds name each kind below or above them; without thresholds nothing misses."""
        figures = self.figures()
        self.assertEqual(availability_misses(figures), [])
        self.assertEqual(availability_misses(figures, 0.3, 8.0), [])
        below = availability_misses(figures, min_availability=0.5)
        self.assertEqual(len(below), 1)
        self.assertIn("kill-leader", below[0])
        gaps = availability_misses(figures, max_gap=5.0)
        self.assertEqual(len(gaps), 2)  # kill-leader's 7.9 s, and the run's
        self.assertIn("7.9 s > 5 s", gaps[0])

    def test_describe(self) -> None:
        """One line: each kind's share of the orders that could be acknowledged, and its gap."""
        line = describe_availability(self.figures())
        self.assertEqual(
            line,
            "cut-leader-lines 100% of 1, gap 4.2 s; kill-leader 33% of 3, gap 7.9 s; no fault 100% of 2;"
            " longest gap 7.9 s",
        )
