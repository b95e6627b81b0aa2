"""
A Bloom filter of idempotency keys: "certainly not in the log", or "maybe".

The keys of a log's orders are on disk (:mod:`toystore.order.keystore`);
asking the disk for every new order's key would send each order through
the disk thread once more.  A Bloom filter answers "not placed yet" for a
new key at once, in memory, and says "maybe" for a key that is in the log
and for a small share of keys that are not, which the disk then settles.
Keys cannot be removed: a key whose order was cut from the log (a
follower's diverged tail) stays a "maybe", which the disk answers with "no".

Its size is fixed, so the memory it takes does not grow with the log: 4 MiB
by default, 33.5 million bits.  What grows is the share of false "maybe"s,
each of which costs one lookup on disk: with 8 bits set per key, about one
absent key in 240,000 is a "maybe" once a million keys are in, one in 200
at three million, one in 2 at ten million (where a larger filter, or one
per epoch, would be the next step).

The bits of a key come from one 64-bit hash (Python's ``hash`` of the key
by default, which differs between processes but not within one: the
filter lives only in memory, made anew at every start), split into two
32-bit halves for double hashing.

This module is reactor-free and does no I/O.
"""

from __future__ import annotations

from typing import Callable

#: Bytes of bits.
BLOOM_BYTES = 4 << 20
#: Bits set per key.
PROBES = 8

_MASK = (1 << 32) - 1


class Bloom:
    """
    The keys added so far, as a Bloom filter of fixed size.

    :param key_hash: a function from a key to an integer (tests give one
        under which every key looks the same, so that every lookup goes on
        to the disk).
    :param nbytes: the size of the filter.
    """

    def __init__(self, key_hash: Callable[[str], int] = hash, nbytes: int = BLOOM_BYTES) -> None:
        self._hash = key_hash
        self._bits = bytearray(nbytes)  # zeros: the pages are the kernel's until a bit is set in them
        self._size = nbytes * 8
        self.count = 0

    def _halves(self, key: str) -> tuple[int, int]:
        h = self._hash(key)
        return h & _MASK, (h >> 32 & _MASK) | 1  # an odd step

    def add(self, key: str) -> None:
        """Add ``key``."""
        low, high = self._halves(key)
        bits, size = self._bits, self._size
        for i in range(PROBES):
            bit = (low + i * high) % size
            bits[bit >> 3] |= 1 << (bit & 7)
        self.count += 1

    def __contains__(self, key: str) -> bool:
        """False if ``key`` was certainly never added; True if it may have been."""
        low, high = self._halves(key)
        bits, size = self._bits, self._size
        for i in range(PROBES):
            bit = (low + i * high) % size
            if not bits[bit >> 3] & (1 << (bit & 7)):
                return False  # most absent keys stop at the first or second bit
        return True

    @property
    def nbytes(self) -> int:
        """Bytes of bits held."""
        return len(self._bits)
