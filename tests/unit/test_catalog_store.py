"""Tests for the catalog's stock in SQLite, :mod:`toystore.catalog.store` (no reactor)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from toystore.catalog.seed import TOYS
from toystore.catalog.store import Buy, CatalogDB, Outcome, Reconcile, Restock
from toystore.envelope import Conflict, NotFound, StaleEpoch, Unprocessable


def open_db(case: SynchronousTestCase, initial_stock: int) -> CatalogDB:
    """A new database in a fresh temporary file, closed when the test ends."""
    path = Path(case.mktemp())
    path.parent.mkdir(parents=True, exist_ok=True)
    db = CatalogDB(path, initial_stock=initial_stock)
    case.addCleanup(db.close)
    return db


class NewDatabaseTests(SynchronousTestCase):
    """A new database holds the fifteen toys at the initial stock, durably configured."""

    def setUp(self) -> None:
        self.db = open_db(self, initial_stock=100)
        self.path = self.db.path

    def test_fifteen_toys(self) -> None:
        """All toys of the design are there, each at 100, with its price."""
        toys = self.db.toys()
        self.assertEqual(len(toys), 15)
        for name in ("Tux", "Whale", "Elephant", "Dolphin", "Fox", "Python"):
            self.assertEqual(toys[name].quantity, 100)
            self.assertEqual(toys[name].price, TOYS[name])

    def test_durability_settings(self) -> None:
        """The journal is WAL and every commit is synced (synchronous=FULL)."""
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(self.db._db.execute("PRAGMA synchronous").fetchone()[0], 2)

    def test_reopen_keeps_state(self) -> None:
        """Reopening does not re-seed: committed buys and the epoch stay."""
        self.db.apply([Buy("Tux", 5, "k1", 3)])
        self.db.close()
        again = CatalogDB(self.path, initial_stock=50)
        self.addCleanup(again.close)
        self.assertEqual(again.toys()["Tux"].quantity, 95)
        self.assertEqual(again.toys()["Fox"].quantity, 100)
        self.assertEqual(again.epoch(), 3)
        [outcome] = again.apply([Buy("Tux", 5, "k1", 3)])
        self.assertTrue(outcome.replayed)


class BuyTests(SynchronousTestCase):
    """A buy checks, decrements and records, in one transaction."""

    def setUp(self) -> None:
        self.db = open_db(self, initial_stock=10)

    def buy(self, *args: object) -> Outcome:
        [outcome] = self.db.apply([Buy(*args)])  # type: ignore[arg-type]
        return outcome

    def test_buy(self) -> None:
        """A buy decrements the stock and replies with what was sold."""
        outcome = self.buy("Tux", 3, "k1", 1)
        self.assertEqual(
            outcome.value,
            {"name": "Tux", "quantity": 3, "price": 15.99, "remaining": 7, "key": "k1", "epoch": 1, "seq": 1},
        )
        self.assertEqual(outcome.changed, {"Tux": 7})
        self.assertFalse(outcome.replayed)
        self.assertEqual(self.db.toys()["Tux"].quantity, 7)

    def test_repeated_key(self) -> None:
        """The same key again returns the recorded reply and changes nothing."""
        first = self.buy("Tux", 3, "k1", 1)
        self.buy("Tux", 1, "k2", 1)
        again = self.buy("Tux", 3, "k1", 2)
        self.assertEqual(again.value, first.value)
        self.assertTrue(again.replayed)
        self.assertEqual(again.changed, {})
        self.assertEqual(self.db.toys()["Tux"].quantity, 6)

    def test_key_reused_for_another_buy(self) -> None:
        """A key recorded for one buy cannot name a different one (422)."""
        self.buy("Tux", 3, "k1", 1)
        for other in (("Tux", 4, "k1", 1), ("Fox", 3, "k1", 1)):
            self.assertIsInstance(self.buy(*other).value, Unprocessable)
        self.assertEqual(self.db.toys()["Tux"].quantity, 7)

    def test_insufficient_stock(self) -> None:
        """Asking for more than is left is a 409 and changes nothing; another key may still buy."""
        outcome = self.buy("Tux", 11, "k1", 1)
        self.assertIsInstance(outcome.value, Conflict)
        self.assertIn("10 Tux left, 11 wanted", outcome.value.message)
        self.assertFalse(outcome.replayed)
        self.assertEqual(self.db.toys()["Tux"].quantity, 10)
        self.assertEqual(self.buy("Tux", 10, "k2", 1).value["remaining"], 0)

    def test_refusal_is_final(self) -> None:
        """
        A key refused for want of stock stays refused after a restock, whatever the epoch: an
        attempt of the same buy arriving late cannot sell what its retry was told is refused.
        """
        first = self.buy("Tux", 11, "k1", 2)
        self.db.apply([Buy("Tux", 10, "k2", 2), Restock(100)])
        for epoch in (1, 2, 3):
            with self.subTest(epoch=epoch):
                again = self.buy("Tux", 11, "k1", epoch)
                self.assertIsInstance(again.value, Conflict)
                self.assertEqual(again.value.message, first.value.message)
                self.assertTrue(again.replayed)
                self.assertEqual(again.changed, {})
        self.assertEqual(self.db.toys()["Tux"].quantity, 100)
        self.assertEqual([b["key"] for b in self.db.buys()], ["k2"])
        self.assertEqual(self.db.epoch(), 3)

    def test_refused_key_reused_for_another_buy(self) -> None:
        """A refused key cannot name a different buy either (422), even one that stock would allow."""
        self.buy("Tux", 11, "k1", 1)
        for other in (("Tux", 1, "k1", 1), ("Fox", 11, "k1", 1)):
            self.assertIsInstance(self.buy(*other).value, Unprocessable)
        self.assertEqual(self.db.toys()["Tux"].quantity, 10)

    def test_fenced_and_unknown_are_not_recorded(self) -> None:
        """A 412 or a 404 says nothing final about the key: a newer leader may buy it."""
        self.buy("Tux", 1, "k0", 5)
        self.assertIsInstance(self.buy("Tux", 1, "k1", 4).value, StaleEpoch)
        self.assertIsInstance(self.buy("Unicorn", 1, "k2", 5).value, NotFound)
        self.assertEqual(self.buy("Tux", 1, "k1", 5).value["remaining"], 8)
        self.assertEqual(self.buy("Tux", 1, "k2", 5).value["remaining"], 7)

    def test_unknown_toy(self) -> None:
        """A toy the catalog does not sell is a 404."""
        self.assertIsInstance(self.buy("Unicorn", 1, "k1", 1).value, NotFound)

    def test_stale_epoch(self) -> None:
        """A new buy from an older epoch than the newest seen is refused; a known key is replayed first."""
        first = self.buy("Tux", 1, "k1", 5)
        outcome = self.buy("Tux", 1, "k2", 4)
        self.assertIsInstance(outcome.value, StaleEpoch)
        self.assertEqual(outcome.value.code, 412)
        again = self.buy("Tux", 1, "k1", 4)
        self.assertTrue(again.replayed)
        self.assertEqual(again.value, first.value)
        self.assertEqual(self.db.toys()["Tux"].quantity, 9)
        self.assertEqual(self.db.epoch(), 5)

    def test_replay_still_raises_epoch(self) -> None:
        """A known key from a newer epoch is replayed, and the epoch becomes the newest, as for any buy."""
        self.buy("Tux", 1, "k1", 2)
        again = self.buy("Tux", 1, "k1", 6)
        self.assertTrue(again.replayed)
        self.assertEqual(again.value["epoch"], 2)
        self.assertEqual(self.db.epoch(), 6)
        self.assertIsInstance(self.buy("Tux", 1, "k2", 5).value, StaleEpoch)

    def test_refused_buy_still_raises_epoch(self) -> None:
        """The catalog learns a newer epoch even from a buy it refuses."""
        self.buy("Tux", 99, "k1", 7)
        self.assertEqual(self.db.epoch(), 7)

    def test_batch_outcomes_are_independent(self) -> None:
        """In one batch, a refused buy does not undo the others, and order counts."""
        outcomes = self.db.apply([Buy("Tux", 6, "a", 1), Buy("Tux", 6, "b", 1), Buy("Tux", 4, "c", 1)])
        self.assertEqual(outcomes[0].value["remaining"], 4)
        self.assertIsInstance(outcomes[1].value, Conflict)
        self.assertEqual(outcomes[2].value["remaining"], 0)
        self.assertEqual([o.value["seq"] for o in (outcomes[0], outcomes[2])], [1, 2])

    def test_database_error_rolls_back_the_batch(self) -> None:
        """If the database fails mid-batch, nothing of the batch is committed."""
        self.db._db.execute(
            "CREATE TRIGGER boom BEFORE UPDATE ON toys WHEN NEW.name = 'Fox' BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        self.assertRaises(sqlite3.IntegrityError, self.db.apply, [Buy("Tux", 1, "a", 1), Buy("Fox", 1, "b", 1)])
        self.assertEqual(self.db.toys()["Tux"].quantity, 10)
        self.assertEqual(self.db.ledger()["Tux"]["sold"], 0)


class ReconcileTests(SynchronousTestCase):
    """A new leader fences out older epochs and lists the buys it must find in its log."""

    def setUp(self) -> None:
        self.db = open_db(self, initial_stock=10)
        self.db.apply([Buy("Tux", 1, "a", 1), Buy("Fox", 2, "b", 1), Buy("Tux", 3, "c", 1)])

    def test_lists_buys_after_a_seq(self) -> None:
        """Buys come in seq order, after the given one, paged by limit."""
        [first] = self.db.apply([Reconcile(epoch=2, after=0, limit=2)])
        self.assertEqual(
            first.value["buys"],
            [
                {"seq": 1, "key": "a", "name": "Tux", "quantity": 1},
                {"seq": 2, "key": "b", "name": "Fox", "quantity": 2},
            ],
        )
        self.assertTrue(first.value["more"])
        [rest] = self.db.apply([Reconcile(epoch=2, after=2, limit=2)])
        self.assertEqual([b["key"] for b in rest.value["buys"]], ["c"])
        self.assertFalse(rest.value["more"])
        self.assertEqual(rest.changed, {})

    def test_fences_older_epochs(self) -> None:
        """After reconcile(2), a buy of epoch 1 is refused and changes nothing; epoch 2 buys go on."""
        self.db.apply([Reconcile(epoch=2, after=3)])
        self.assertEqual(self.db.epoch(), 2)
        [stale, fresh] = self.db.apply([Buy("Tux", 1, "d", 1), Buy("Tux", 1, "e", 2)])
        self.assertIsInstance(stale.value, StaleEpoch)
        self.assertEqual(fresh.value["seq"], 4)
        self.assertEqual(self.db.toys()["Tux"].quantity, 5)

    def test_stale_reconcile(self) -> None:
        """A reconcile from an epoch older than one seen is refused."""
        self.db.apply([Reconcile(epoch=3, after=0)])
        [outcome] = self.db.apply([Reconcile(epoch=2, after=0)])
        self.assertIsInstance(outcome.value, StaleEpoch)


class RestockTests(SynchronousTestCase):
    """Restock sets every sold-out toy back to the restock quantity."""

    def setUp(self) -> None:
        self.db = open_db(self, initial_stock=5)

    def test_only_sold_out_toys(self) -> None:
        """Toys at 0 go to the quantity; others are untouched."""
        self.db.apply([Buy("Tux", 5, "a", 1), Buy("Fox", 5, "b", 1), Buy("Whale", 4, "c", 1)])
        [outcome] = self.db.apply([Restock(100)])
        self.assertEqual(outcome.value, {"restocked": ["Fox", "Tux"]})
        self.assertEqual(outcome.changed, {"Fox": 100, "Tux": 100})
        toys = self.db.toys()
        self.assertEqual((toys["Tux"].quantity, toys["Fox"].quantity, toys["Whale"].quantity), (100, 100, 1))

    def test_nothing_to_restock(self) -> None:
        """With nothing sold out, a restock changes nothing."""
        [outcome] = self.db.apply([Restock(100)])
        self.assertEqual((outcome.value, outcome.changed), ({"restocked": []}, {}))


class LedgerProperty(SynchronousTestCase):
    """Whatever happens, initial + restocked - sold = stock, and stock is never negative."""

    @settings(max_examples=40, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.tuples(st.sampled_from(["Tux", "Fox", "Kite"]), st.integers(1, 7), st.integers(0, 12)),
                st.just("restock"),
            ),
            max_size=30,
        )
    )
    def test_conservation(self, script: list) -> None:
        """Random buys (some repeating keys) and restocks keep the ledger balanced."""
        db = open_db(self, initial_stock=8)
        try:
            for step in script:
                if step == "restock":
                    db.apply([Restock(8)])
                else:
                    name, quantity, key = step
                    db.apply([Buy(name, quantity, f"{name}-{quantity}-{key % 4}", 1)])
            for name, row in db.ledger().items():
                self.assertGreaterEqual(row["quantity"], 0)
                self.assertEqual(row["initial"] + row["restocked"] - row["sold"], row["quantity"], name)
        finally:
            db.close()  # now, not at the end of all the examples
