"""
Order replicas whose logs are far larger than the part they keep in memory:
orders, keys, catch-up and promotion all work from the journal files
(:mod:`toystore.order.reads`, ``replication``), with disk work done inline
and a Clock for time, as in ``test_order_replication``.
"""

from __future__ import annotations

from typing import Any

from toystore.envelope import ApiError
from toystore.order import replication
from toystore.order.journal import Log

from .replicas import ReplicaCase

#: Each replica keeps about ten record lines in memory.
TINY = 1500


def first_letter(key: str) -> int:
    """A digest under which every key with the same first letter collides."""
    return ord(key[0]) << 56


def orders_log(count: int, prefix: str = "k") -> Log:
    """A log of epoch 1 led by replica 3: its leader record and ``count`` orders."""
    log = Log()
    log.append_leader(1, 3)
    for n in range(count):
        log.append_order(1, "Tux", 1, f"{prefix}{n}", seq=n + 1)
    return log


class DiskCase(ReplicaCase):
    """Three replicas with tiny windows."""

    window_bytes = TINY

    def place_many(self, leader: int, count: int, prefix: str = "k") -> None:
        for n in range(count):
            self.successResultOf(self.order(leader, f"{prefix}{n}"))

    def find(self, replica: int, key: str) -> Any:
        return self.successResultOf(self.drive(self.replicas[replica].reads.find_order(key)))


class OldOrdersTests(DiskCase):
    """Orders and keys older than the window are read back from the file."""

    def test_order_query_from_disk(self) -> None:
        """An order long out of memory is answered, on the leader and on a follower, and remembered a while."""
        self.make()
        self.elect(1, 3)
        self.place_many(3, 60)
        leader = self.replicas[3]
        self.assertGreater(leader.log_.first_in_memory, 40)
        for replica in (3, 1):
            answer = self.successResultOf(self.drive(self.replicas[replica].order(2)))
            self.assertEqual(answer, {"number": 2, "name": "Tux", "quantity": 1})
        self.assertIsNotNone(leader.log_.line(leader.log_.order_index(2)))
        self.assertEqual(self.failureResultOf(self.drive(leader.order(60)), ApiError).value.code, 404)

    def test_repeated_key_far_back(self) -> None:
        """A retry of an order out of memory gets its number, buys nothing; another body under it is a 422."""
        self.make()
        self.elect(1, 3)
        self.place_many(3, 60)
        self.assertEqual(self.successResultOf(self.order(3, "k0")), {"order_number": 0})
        self.assertEqual(len(self.catalog.bought), 60)
        self.assertEqual(self.failureResultOf(self.order(3, "k0", name="Fox"), ApiError).value.code, 422)
        self.assertEqual(self.successResultOf(self.order(3, "k60")), {"order_number": 60})

    def test_keys_survive_restart_and_leader_change(self) -> None:
        """After every replica restarts, and under another leader, old keys still find their orders."""
        self.make()
        self.elect(1, 3)
        self.place_many(3, 40)
        self.restart()
        self.elect(2, 1)
        self.assertEqual(self.find(1, "k3"), (3, {"key": "k3", "name": "Tux", "number": 3, "quantity": 1, "seq": 4}))
        self.assertEqual(self.successResultOf(self.order(1, "k3")), {"order_number": 3})
        self.assertEqual(self.successResultOf(self.order(1, "new")), {"order_number": 40})
        self.assertEqual(len(self.catalog.bought), 41)
        self.assertEqual(self.file(1), self.file(3))


class CollisionTests(DiskCase):
    """Every key's digest collides: the records tell the keys apart."""

    digest = staticmethod(first_letter)

    def test_colliding_keys_are_different_orders(self) -> None:
        """Keys sharing a digest get orders of their own; retries find their own, also across a leader change."""
        self.make()
        self.elect(1, 3)
        self.place_many(3, 30)
        self.assertEqual(len(self.replicas[3].log_.key_candidates("k")), 30)
        self.assertEqual(self.successResultOf(self.order(3, "k7")), {"order_number": 7})
        self.assertEqual(self.failureResultOf(self.order(3, "k8", name="Fox"), ApiError).value.code, 422)
        self.elect(2, 2)
        self.assertEqual(self.successResultOf(self.order(2, "k29")), {"order_number": 29})
        self.assertEqual(self.successResultOf(self.order(2, "k30")), {"order_number": 30})
        self.assertEqual(len(self.catalog.bought), 31)


class CatchUpTests(DiskCase):
    """A follower far behind gets the records from the leader's file, a chunk at a time."""

    def test_follower_catches_up_from_disk(self) -> None:
        """The backlog comes from disk, never more than AHEAD records past the follower's acks; logs end identical."""
        self.patch(replication, "CHUNK", 20)
        self.patch(replication, "AHEAD", 40)
        self.make()
        self.elect(1, 3, others=(2,))
        self.place_many(3, 200)
        leader = self.replicas[3]
        ahead = []
        reads = leader.reads.lines

        async def watched(start: int, end: int) -> list[bytes]:
            ahead.extend(f.sent - f.acked for f in leader.streams.followers.values() if f.id == 1)
            return await reads(start, end)

        leader.reads.lines = watched  # type: ignore[method-assign]
        self.successResultOf(self.drive(self.replicas[1].lead(1, 3)))
        self.network.flush()
        self.assertEqual(self.file(1), self.file(3))
        self.assertGreater(len(ahead), 5)
        self.assertLessEqual(max(ahead), 40)
        self.assertEqual(leader.status()["in_sync"], [1, 2])

    def test_promotion_pulls_from_disk(self) -> None:
        """A new leader far behind copies the log of a peer that holds most of it only on disk."""
        self.patch(replication, "CHUNK", 30)
        log = orders_log(100)
        self.make({1: (log.lines, 1), 2: (log.lines[:2], 1), 3: (log.lines, 1)})
        self.assertGreater(self.replicas[1].log_.first_in_memory, 80)
        self.network.cut(3)
        promoting = self.drive(self.replicas[2].lead(2, 2))
        self.clock.advance(1.0)
        self.network.flush()
        self.assertTrue(self.successResultOf(promoting)["ready"])
        self.successResultOf(self.drive(self.replicas[1].lead(2, 2)))
        self.network.flush()
        self.assertEqual(self.file(1), self.file(2))
        self.assertEqual(self.successResultOf(self.order(2, "k5")), {"order_number": 5})
        self.assertEqual(self.catalog.bought, [])

    def test_divergent_tail_cut_below_the_window(self) -> None:
        """A follower's tail, longer than its window, that the new leader lacks is cut off, keys and all."""
        common = orders_log(5)
        old = Log(common.lines)
        for n in range(50):
            old.append_order(1, "Tux", 1, f"never-committed-{n}")
        new = Log(common.lines)
        new.append_leader(2, 2)
        new.append_order(2, "Fox", 1, "k5")
        self.make({3: (old.lines, 1), 2: (new.lines, 2), 1: (new.lines, 2)})
        self.assertGreater(self.replicas[3].log_.first_in_memory, 6)
        self.elect(3, 2)
        self.assertEqual(self.file(3), self.file(2))
        self.assertIsNone(self.find(3, "never-committed-0"))
        self.assertEqual(self.find(3, "k0")[0], 0)
        self.assertEqual(self.find(3, "k5")[0], 5)
