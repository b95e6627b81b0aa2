"""Tests for the idempotency-key index of the order log, :mod:`toystore.order.keyindex` (no reactor)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from toystore.order.keyindex import KeyIndex, key_digest


def first_letter(key: str) -> int:
    """A digest that collides on purpose: every key with the same first letter has the same digest."""
    return ord(key[0]) << 56


class KeyIndexTests(SynchronousTestCase):
    """Digests of keys to order numbers, several numbers per digest when keys collide."""

    def test_digest(self) -> None:
        """The default digest is BLAKE2b of the UTF-8 key, 64 bits, stable across runs."""
        self.assertEqual(key_digest("k0"), 0xA59C811A6CD19397)  # no per-process seed, unlike hash()
        self.assertNotEqual(key_digest("k0"), key_digest("k1"))
        self.assertLess(key_digest("ключ"), 1 << 64)

    def test_add_and_find(self) -> None:
        """Each key finds its own number; an unknown key finds none."""
        index = KeyIndex()
        for n in range(5000):
            index.add(f"key-{n}", n)
        self.assertEqual(len(index), 5000)
        self.assertEqual([index.candidates(f"key-{n}") for n in (0, 1234, 4999)], [[0], [1234], [4999]])
        self.assertEqual(index.candidates("key-5000"), [])
        self.assertEqual(index.nbytes, 16 * 5000)

    def test_collisions_give_every_candidate(self) -> None:
        """Keys sharing a digest all come back, ascending: the caller tells them apart by the record."""
        index = KeyIndex(first_letter)
        for n, key in enumerate(["apple", "banana", "avocado", "blueberry", "apricot"]):
            index.add(key, n)
        self.assertEqual(index.candidates("almond"), [0, 2, 4])
        self.assertEqual(index.candidates("banana"), [1, 3])
        self.assertEqual(index.candidates("cherry"), [])

    def test_out_of_order_numbers_stay_sorted(self) -> None:
        """A smaller number added later (a log rebuilt after a truncation) still comes back in order."""
        index = KeyIndex(first_letter)
        index.add("a1", 5)
        index.add("a2", 2)
        index.add("a3", 9)
        self.assertEqual(index.candidates("a"), [2, 5, 9])

    def test_truncate_with_the_removed_keys(self) -> None:
        """Numbers at or beyond the cut leave; the others, sharing their digest, stay."""
        index = KeyIndex(first_letter)
        for n, key in enumerate(["apple", "banana", "avocado", "blueberry", "apricot"]):
            index.add(key, n)
        index.truncate(3, removed=["blueberry", "apricot"])
        self.assertEqual((index.candidates("a"), index.candidates("b"), len(index)), ([0, 2], [1], 3))

    def test_truncate_without_the_keys(self) -> None:
        """Without the keys (their records are only on disk), every bucket is checked."""
        index = KeyIndex()
        for n in range(3000):
            index.add(f"key-{n}", n)
        index.truncate(1000)
        self.assertEqual(len(index), 1000)
        self.assertEqual(index.candidates("key-999"), [999])
        self.assertEqual(index.candidates("key-1000"), [])
        index.add("key-1000", 1000)
        self.assertEqual(index.candidates("key-1000"), [1000])
