"""Tests for the front-end's LRU cache, :mod:`toystore.frontend.cache` (no reactor)."""

from twisted.trial.unittest import SynchronousTestCase

from toystore.frontend.cache import LRUCache


class LRUTests(SynchronousTestCase):
    """Least recently used goes first; invalidations and clears are remembered."""

    def fill(self, cache: LRUCache, *names: str) -> None:
        for name in names:
            cache.put(name, {"name": name}, cache.version(name))

    def test_hit_and_miss(self) -> None:
        """A cached name is a hit; an unknown one a miss."""
        cache = LRUCache(2)
        self.fill(cache, "Tux")
        self.assertEqual(cache.get("Tux"), {"name": "Tux"})
        self.assertIsNone(cache.get("Fox"))
        self.assertEqual((cache.stats.hits, cache.stats.misses), (1, 1))

    def test_eviction_order(self) -> None:
        """The least recently used entry is evicted; a get makes an entry recent."""
        cache = LRUCache(2)
        self.fill(cache, "Tux", "Fox")
        cache.get("Tux")
        self.assertEqual(cache.put("Whale", {}, cache.version("Whale")), "Fox")
        self.assertEqual(cache.keys(), ["Tux", "Whale"])
        self.assertEqual(cache.stats.evictions, 1)

    def test_invalidate(self) -> None:
        """An invalidated entry is gone, and counted only if it was there."""
        cache = LRUCache(2)
        self.fill(cache, "Tux")
        self.assertTrue(cache.invalidate("Tux"))
        self.assertFalse(cache.invalidate("Fox"))
        self.assertEqual((cache.keys(), cache.stats.invalidations), ([], 1))

    def test_stale_reply_not_cached(self) -> None:
        """A reply fetched before its toy was invalidated (or the cache cleared) is not cached."""
        cache = LRUCache(2)
        before = cache.version("Tux")
        cache.invalidate("Tux")
        cache.put("Tux", {"quantity": 5}, before)
        self.assertEqual(cache.keys(), [])
        before = cache.version("Tux")
        cache.clear()
        cache.put("Tux", {"quantity": 5}, before)
        self.assertEqual(cache.keys(), [])
        self.fill(cache, "Tux")
        self.assertEqual(cache.keys(), ["Tux"])

    def test_clear(self) -> None:
        """clear drops everything and is counted."""
        cache = LRUCache(3)
        self.fill(cache, "Tux", "Fox")
        cache.clear()
        self.assertEqual((len(cache), cache.stats.clears), (0, 1))

    def test_off(self) -> None:
        """Size 0 keeps nothing."""
        cache = LRUCache(0)
        self.fill(cache, "Tux")
        self.assertIsNone(cache.get("Tux"))
        self.assertEqual(len(cache), 0)
