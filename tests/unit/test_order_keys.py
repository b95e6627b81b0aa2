"""
Tests for what the order log keeps of each order, and where (no reactor):
the idempotency keys on disk (:mod:`toystore.order.keystore`), the Bloom
filter in front of them (:mod:`toystore.order.bloom`), the narrow integer
columns (:mod:`toystore.order.columns`), and a key's lookup through all of
them (:meth:`toystore.order.reads.LogReads.find_order`).
"""

from __future__ import annotations

import sqlite3
from hashlib import blake2b
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.trial.unittest import SynchronousTestCase

from toystore.order import keystore
from toystore.order.bloom import Bloom
from toystore.order.columns import Column
from toystore.order.journal import Log, open_journal
from toystore.order.keystore import KeyStore, open_keystore
from toystore.order.reads import LogReads


def one_hash(key: str) -> int:
    """A hash under which every key looks the same to a Bloom filter: every lookup goes on to the store."""
    return 0


def stable_hash(key: str) -> int:
    """A 64-bit hash that is the same in every run (Python's ``hash`` of a string is not)."""
    return int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "big")


def orders(count: int, epoch: int = 1, prefix: str = "k") -> Log:
    """A log of one leader record and ``count`` orders, all in ``epoch``."""
    log = Log()
    log.append_leader(epoch, 3)
    for n in range(count):
        log.append_order(epoch, "Tux", 1 + n % 4, f"{prefix}{n}", seq=n + 1)
    return log


class ColumnTests(SynchronousTestCase):
    """Integers in the narrowest array item that holds them all."""

    def test_widens_once_per_size(self) -> None:
        """Values that fit keep one byte each; a larger one widens the column and keeps every value."""
        column = Column()
        for value in range(200):
            column.append(value)
        self.assertEqual((column.nbytes, column[199]), (200, 199))
        column.append(70_000)
        self.assertEqual((column.items.typecode, column.nbytes), ("I", 201 * 4))
        column.append(1 << 40)
        self.assertEqual(list(column[198:]), [198, 199, 70_000, 1 << 40])
        del column[100:]
        self.assertEqual((len(column), column[99]), (100, 99))

    def test_signed(self) -> None:
        """A signed column holds negative values; an unsigned one refuses them."""
        signed = Column(signed=True)
        for value in (-1, 127, -129, 1 << 62):
            signed.append(value)
        self.assertEqual(list(signed[:]), [-1, 127, -129, 1 << 62])
        self.assertRaises(OverflowError, Column().append, -1)
        self.assertRaises(OverflowError, signed.append, 1 << 63)


class BloomTests(SynchronousTestCase):
    """No key added is ever missed; few that were not say "maybe"."""

    def test_no_false_negatives_and_few_false_positives(self) -> None:
        """
        Every added key is found; at 12 bits a key about 0.3 % of other keys
        are maybes, and more as keys outgrow the fixed size, which never grows.
        """
        bloom = Bloom(stable_hash, nbytes=15_000)
        for n in range(10_000):
            bloom.add(f"key-{n}")
        self.assertTrue(all(f"key-{n}" in bloom for n in range(10_000)))
        maybes = sum(f"other-{n}" in bloom for n in range(20_000))
        self.assertLess(maybes, 120)
        for n in range(10_000, 40_000):
            bloom.add(f"key-{n}")
        self.assertEqual((bloom.count, bloom.nbytes), (40_000, 15_000))
        self.assertTrue(all(f"key-{n}" in bloom for n in range(40_000)))
        self.assertGreater(sum(f"other-{n}" in bloom for n in range(20_000)), 10 * maybes)

    def test_empty_and_colliding(self) -> None:
        """An empty filter holds nothing; under one hash for all, every key is a maybe once one is added."""
        bloom = Bloom(one_hash)
        self.assertNotIn("a", bloom)
        bloom.add("a")
        self.assertIn("b", bloom)


class KeyStoreTests(SynchronousTestCase):
    """The keys on disk, and how they are brought in line with the journal at start."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir(parents=True)
        self.store = KeyStore(self.dir / "keys.sqlite")
        self.addCleanup(lambda: self.store.close())

    def rows(self) -> list[tuple[str, int, int]]:
        with sqlite3.connect(self.store.path) as db:
            return list(db.execute("SELECT key, number, epoch FROM orders ORDER BY number"))

    def test_write_find_truncate(self) -> None:
        """Appends and truncations apply in order, in one transaction; a row of a cut order is replaced."""
        self.store.write([("append", [("a", 0, 1), ("b", 1, 1), ("c", 2, 1)]), ("truncate", 2)])
        self.assertEqual((self.store.find("b"), self.store.find("c"), self.store.count()), ((1, 1), None, 2))
        self.store.write([("append", [("c", 2, 2)])])
        # The truncation of order 1 was lost (as after a crash): the journal's new order 1 wins.
        self.store.write([("append", [("d", 1, 3)])])
        self.assertEqual(self.rows(), [("a", 0, 1), ("d", 1, 3), ("c", 2, 2)])
        self.assertIsNone(self.store.find("b"))

    def test_failed_batch_changes_nothing(self) -> None:
        """A batch that fails halfway (here a bad row) is rolled back whole."""
        self.store.write([("append", [("a", 0, 1)])])
        self.assertRaises(sqlite3.Error, self.store.write, [("truncate", 0), ("append", [("b", 1, 1), (None, 2, 1)])])
        self.assertEqual(self.rows(), [("a", 0, 1)])

    def opened(self, log: Log, **options: Any) -> Any:
        path = self.dir / "orders.log"
        path.write_bytes(b"".join(log.lines))
        opened = open_journal(path, keys=self.store, **options)
        opened.file.close()
        return opened

    def test_opening_fills_an_empty_store(self) -> None:
        """Opened with a store, the journal's keys go to disk, not memory; the Bloom filter has them all."""
        self.patch(keystore, "CHECK_BATCH", 7)
        opened = self.opened(orders(30))
        self.assertEqual(opened.keys_rewritten_from, 0)
        self.assertEqual(self.rows(), [(f"k{n}", n, 1) for n in range(30)])
        self.assertEqual([opened.order_log.unindexed_order(f"k{n}") for n in (0, 29)], [None, None])
        self.assertTrue(all(opened.order_log.may_hold(f"k{n}") for n in range(30)))

    def test_opening_checks_the_store_against_the_journal(self) -> None:
        """Behind, ahead, or differing midway: the store is rewritten from the first difference on."""
        journal = orders(20)
        want = [(f"k{n}", n, 1) for n in range(20)]
        self.assertEqual(self.opened(journal).keys_rewritten_from, 0)
        self.assertIsNone(self.opened(journal).keys_rewritten_from)  # agrees: nothing written
        cases = [
            ("behind", [("truncate", 15)], 15),
            ("ahead", [("append", [("x", 20, 1), ("y", 21, 2)])], 20),
            ("another key", [("append", [("other", 5, 1)])], 5),
            ("another epoch", [("append", [("k9", 9, 2)])], 9),
        ]
        for name, writes, rewritten in cases:
            with self.subTest(name):
                self.store.write(writes)
                self.assertEqual(self.opened(journal).keys_rewritten_from, rewritten)
                self.assertEqual(self.rows(), want)

    def test_torn_tail_keys_are_dropped(self) -> None:
        """Keys of records cut off as torn at start leave the store too."""
        journal = orders(10)
        self.opened(journal)
        path = self.dir / "orders.log"
        path.write_bytes(b"".join(journal.lines)[:-5])  # the last order is torn
        opened = open_journal(path, keys=self.store)
        opened.file.close()
        self.assertEqual(
            (opened.torn_bytes, opened.keys_rewritten_from, self.store.count()), (len(journal.lines[-1]) - 5, 9, 9)
        )

    def test_unreadable_file_is_made_anew(self) -> None:
        """A file SQLite cannot read is replaced by an empty store (the journal has every key)."""
        path = self.dir / "bad.sqlite"
        path.write_bytes(b"not a database " * 100)
        store, remade = open_keystore(path)
        self.addCleanup(store.close)
        self.assertEqual((remade, store.count()), (True, 0))
        again, remade = open_keystore(path)
        again.close()
        self.assertFalse(remade)


class FindOrderTests(SynchronousTestCase):
    """A key's lookup: in memory, then the Bloom filter, then the store, checked against the log."""

    def setUp(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        self.store = KeyStore(directory / "keys.sqlite")
        self.addCleanup(self.store.close)
        path = directory / "orders.log"
        path.write_bytes(b"".join(orders(40).lines))
        opened = open_journal(path, keys=self.store, key_hash=one_hash)
        opened.file.close()
        self.log = opened.order_log
        self.asked: list[str] = []
        self.queued: list[tuple[Deferred[Any], str]] = []
        self.reads = LogReads(self.log, maybeDeferred, self.find_key)

    def find_key(self, key: str) -> Deferred[Any]:
        """The store's answer, held back until :meth:`answer` (as the disk thread would)."""
        self.asked.append(key)
        d: Deferred[Any] = Deferred()
        self.queued.append((d, key))
        return d

    def answer(self) -> None:
        queued, self.queued = self.queued, []
        for d, key in queued:
            d.callback(self.store.find(key))

    def find(self, key: str) -> int | None:
        finding = Deferred.fromCoroutine(self.reads.find_order(key))
        self.answer()
        return self.successResultOf(finding)

    def test_found_in_the_store(self) -> None:
        """Keys on disk are found there; a key never placed is not (every key is a maybe under one hash)."""
        self.assertEqual([self.find("k0"), self.find("k39"), self.find("never")], [0, 39, None])
        self.assertEqual(self.asked, ["k0", "k39", "never"])

    def test_new_keys_stay_in_memory_until_indexed(self) -> None:
        """An order's key is answered from memory, without the store, until marked indexed."""
        self.log.append_order(1, "Tux", 1, "new")
        self.assertEqual((self.find("new"), self.asked), (40, []))
        self.assertEqual(self.log.unindexed(0, 41), [("new", 40, 1)])
        self.store.write([("append", self.log.unindexed(0, 41))])
        self.log.mark_indexed(41)
        self.assertEqual((self.find("new"), self.asked), (40, ["new"]))

    def test_bloom_filter_spares_the_store(self) -> None:
        """With a real hash, a key never placed is answered at once, without asking the store."""
        log = Log(orders(5).lines)
        reads = LogReads(log, maybeDeferred, self.find_key)
        self.assertIsNone(self.successResultOf(Deferred.fromCoroutine(reads.find_order("never"))))
        self.assertEqual(self.asked, [])

    def test_placed_while_the_store_looks(self) -> None:
        """An order placed with the key while the store is asked is found (its key is still in memory)."""
        finding = Deferred.fromCoroutine(self.reads.find_order("late"))
        self.log.append_order(1, "Tux", 1, "late")
        self.answer()
        self.assertEqual(self.successResultOf(finding), 40)

    def test_rows_of_cut_orders_are_no_answer(self) -> None:
        """
        A row whose order was cut from the log, its delete not yet run, is
        not believed: not once the number is gone, nor when another order of
        another epoch has the number now.
        """
        self.log.truncate(31)  # the leader record and orders 0 .. 29 stay
        self.assertEqual((self.find("k29"), self.find("k30")), (29, None))
        self.log.append_leader(2, 1)
        self.log.append_order(2, "Fox", 1, "other")
        self.assertEqual(self.log.order_epoch(30), 2)
        self.assertEqual((self.find("k30"), self.find("other")), (None, 30))
        self.log.append_order(2, "Fox", 1, "k30")  # the key placed again, under a new number
        self.assertEqual(self.find("k30"), 31)
