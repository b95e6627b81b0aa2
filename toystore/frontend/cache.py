"""
The front-end's LRU cache of product replies (reactor-free).

An entry leaves on LRU eviction, or when told to (a successful order of that
toy, a push from the catalog, a cleared cache after the feed reconnects).
Every name also has a version that any invalidation raises, so that a query
that was in flight while its toy changed does not put the old reply back:
:meth:`LRUCache.version` before the query, :meth:`LRUCache.put` with it after.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass
class CacheStats:
    """What happened to the cache since start."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    invalidations: int = 0
    clears: int = 0


class LRUCache:
    """
    At most ``size`` entries; the least recently used goes first.  A size of
    0 turns the cache off (nothing is kept, every lookup is a miss).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.stats = CacheStats()
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._versions: dict[str, int] = {}
        self._epoch = 0  # raised by clear(), which invalidates every name at once

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        """The cached names, least recently used first."""
        return list(self._entries)

    def get(self, name: str) -> Any | None:
        """The cached reply for ``name`` (now the most recently used), or None."""
        if name in self._entries:
            self._entries.move_to_end(name)
            self.stats.hits += 1
            return self._entries[name]
        self.stats.misses += 1
        return None

    def version(self, name: str) -> tuple[int, int]:
        """A token that changes whenever ``name`` is invalidated."""
        return (self._epoch, self._versions.get(name, 0))

    def put(self, name: str, value: Any, version: tuple[int, int]) -> str | None:
        """
        Cache ``value`` unless ``name`` was invalidated since ``version`` was
        taken.  Returns the name evicted to make room, if any.
        """
        if self.size <= 0 or version != self.version(name):
            return None
        self._entries[name] = value
        self._entries.move_to_end(name)
        if len(self._entries) > self.size:
            evicted, _ = self._entries.popitem(last=False)
            self.stats.evictions += 1
            return evicted
        return None

    def invalidate(self, name: str) -> bool:
        """Drop ``name``; returns whether it was cached."""
        self._versions[name] = self._versions.get(name, 0) + 1
        if self._entries.pop(name, None) is not None:
            self.stats.invalidations += 1
            return True
        return False

    def clear(self) -> None:
        """Drop everything (the push link reconnected: pushes may have been missed)."""
        self._epoch += 1
        self._versions.clear()
        self._entries.clear()
        self.stats.clears += 1
