"""
The idempotency-key index of the order log: key to order number, in about
16 bytes an order.

A dict of the full keys grows by a key string, its hash entry and an int per
order, a few hundred bytes each, for as long as the log grows.  This index
keeps a 64-bit digest of each key instead (BLAKE2b, 8 bytes) and the order's
number, in sorted ``array`` pairs: digests (``"Q"``) and numbers (``"q"``).
The pairs are split into buckets by the digest's top bits, so that a bucket
stays short: an insertion is a ``bisect`` and two ``array.insert`` calls
(moving a few kilobytes in C), a lookup a ``bisect`` and a slice, and no
insertion ever waits for a merge or a rehash of the whole index.

A digest is not the key.  :meth:`KeyIndex.candidates` gives the numbers of
every order whose key has the same digest, and the caller confirms each one
against the order's record (its ``key`` field) before it believes it.  Two
different keys with one digest are astronomically rare (one chance in
2\\ :sup:`64` per pair of keys: about 3 in 10\\ :sup:`8` that any two of a
million orders collide), and harmless when they happen: both orders are in
the index under that digest, and the confirmation tells them apart.

This module is reactor-free and does no I/O.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from hashlib import blake2b
from typing import Callable, Iterable

#: A function from an idempotency key to an unsigned 64-bit integer.
Digest = Callable[[str], int]

#: Buckets are chosen by this many top bits of the digest.
BUCKET_BITS = 10


def key_digest(key: str) -> int:
    """The 64-bit BLAKE2b digest of ``key`` (UTF-8), as an integer."""
    return int.from_bytes(blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


class KeyIndex:
    """
    Digest of an idempotency key -> order number, for every order of a log.

    :param digest: the digest function (tests inject one that collides).
    :param bucket_bits: how many top bits of the digest choose the bucket.
    """

    def __init__(self, digest: Digest = key_digest, bucket_bits: int = BUCKET_BITS) -> None:
        self._digest = digest
        self._shift = 64 - bucket_bits
        self._digests = [array("Q") for _ in range(1 << bucket_bits)]
        self._numbers = [array("q") for _ in range(1 << bucket_bits)]
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays' items (not counting their spare room or headers)."""
        return sum(a.itemsize * len(a) for a in self._digests) + sum(a.itemsize * len(a) for a in self._numbers)

    def _bucket(self, digest: int) -> tuple[array[int], array[int]]:
        b = digest >> self._shift
        return self._digests[b], self._numbers[b]

    def add(self, key: str, number: int) -> None:
        """Index order ``number`` under ``key`` (numbers sharing a digest stay in ascending order)."""
        digest = self._digest(key)
        digests, numbers = self._bucket(digest)
        i = bisect_right(digests, digest)
        # Orders are added in number order, so a later number goes after its digest's others.
        while i > 0 and digests[i - 1] == digest and numbers[i - 1] > number:
            i -= 1
        digests.insert(i, digest)
        numbers.insert(i, number)
        self._count += 1

    def candidates(self, key: str) -> list[int]:
        """
        The numbers of the orders whose key has the digest of ``key``,
        ascending: usually none or one.  Each must be confirmed against its
        record: a different key may share the digest.
        """
        digest = self._digest(key)
        digests, numbers = self._bucket(digest)
        lo = bisect_left(digests, digest)
        if lo == len(digests) or digests[lo] != digest:
            return []
        return numbers[lo : bisect_right(digests, digest, lo)].tolist()

    def truncate(self, count: int, removed: Iterable[str] | None = None) -> None:
        """
        Forget every order numbered ``count`` or more.

        :param removed: the keys of those orders, when the caller has them:
            then only their buckets are touched.  Without them, every bucket
            is checked (a truncation that reaches records no longer in
            memory, which is rare).
        """
        if removed is not None:
            for key in removed:
                self._remove(self._digest(key), count)
            return
        for b, numbers in enumerate(self._numbers):
            if numbers and max(numbers) >= count:
                keep = [i for i, n in enumerate(numbers) if n < count]
                digests = self._digests[b]
                self._count -= len(numbers) - len(keep)
                self._digests[b] = array("Q", [digests[i] for i in keep])
                self._numbers[b] = array("q", [numbers[i] for i in keep])

    def _remove(self, digest: int, count: int) -> None:
        digests, numbers = self._bucket(digest)
        i = bisect_left(digests, digest)
        while i < len(digests) and digests[i] == digest:
            if numbers[i] >= count:
                del digests[i]
                del numbers[i]
                self._count -= 1
            else:
                i += 1
