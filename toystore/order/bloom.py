"""
A Bloom filter of idempotency keys: "certainly not in the log", or "maybe".

The keys of a log's orders are on disk (:mod:`toystore.order.keystore`);
asking the disk for every new order's key would send each order through
the disk thread once more.  A Bloom filter answers "not placed yet" for a
new key at once, in memory, and says "maybe" for a key that is in the log
and for a small share of keys that are not (about 0.3 % here), which the
disk then settles.  It costs 12 bits a key, whatever the key's length.

A plain Bloom filter is sized for a count of keys fixed in advance; a log
grows without end.  So this one is a list of filters (a *scalable* Bloom
filter): when the newest is full, the next is made twice as large.  A key
is looked for in each, which stays cheap: a filter that does not hold a key
usually says so at its first or second bit.  Keys cannot be removed: a key
whose order was cut from the log (a follower's diverged tail) stays a
"maybe", which the disk answers with "no".

The bits of a key come from one 64-bit hash (Python's ``hash`` of the key
by default, which differs between processes but not within one: the
filter lives only in memory, made anew at every start), split into two
32-bit halves for double hashing.

This module is reactor-free and does no I/O.
"""

from __future__ import annotations

from typing import Callable

#: Keys the first filter holds; each next one holds twice as many.
FIRST_CAPACITY = 1 << 16
#: Bits per key and bits set per key: a false "maybe" for about 0.3 % of absent keys per full filter.
BITS_PER_KEY = 12
PROBES = 8

_MASK = (1 << 32) - 1


class _Filter:
    """One Bloom filter of ``capacity`` keys."""

    __slots__ = ("bits", "size", "capacity", "count")

    def __init__(self, capacity: int) -> None:
        self.size = capacity * BITS_PER_KEY
        self.bits = bytearray(self.size // 8 + 1)
        self.capacity = capacity
        self.count = 0

    def add(self, low: int, high: int) -> None:
        bits, size = self.bits, self.size
        for i in range(PROBES):
            bit = (low + i * high) % size
            bits[bit >> 3] |= 1 << (bit & 7)
        self.count += 1

    def __contains__(self, halves: tuple[int, int]) -> bool:
        low, high = halves
        bits, size = self.bits, self.size
        for i in range(PROBES):
            bit = (low + i * high) % size
            if not bits[bit >> 3] & (1 << (bit & 7)):
                return False
        return True


class Bloom:
    """
    The keys added so far, as a scalable Bloom filter.

    :param key_hash: a function from a key to an integer (tests give one
        under which every key looks the same, so that every lookup goes on
        to the disk).
    :param first_capacity: how many keys the first filter holds.
    """

    def __init__(self, key_hash: Callable[[str], int] = hash, first_capacity: int = FIRST_CAPACITY) -> None:
        self._hash = key_hash
        self._filters = [_Filter(first_capacity)]

    def _halves(self, key: str) -> tuple[int, int]:
        h = self._hash(key)
        return h & _MASK, (h >> 32 & _MASK) | 1  # an odd step reaches every bit

    def add(self, key: str) -> None:
        """Add ``key``."""
        newest = self._filters[-1]
        if newest.count >= newest.capacity:
            newest = _Filter(newest.capacity * 2)
            self._filters.append(newest)
        newest.add(*self._halves(key))

    def __contains__(self, key: str) -> bool:
        """False if ``key`` was certainly never added; True if it may have been."""
        halves = self._halves(key)
        return any(halves in f for f in self._filters)

    def __len__(self) -> int:
        return sum(f.count for f in self._filters)

    @property
    def nbytes(self) -> int:
        """Bytes of bits held."""
        return sum(len(f.bits) for f in self._filters)
