"""
Tests for promotion (:mod:`toystore.order.replica`, ``replication``,
``reconcile``): catching up from peers, fencing the old leader, and adopting
the catalog's buys that no log holds.
"""

from __future__ import annotations

from twisted.internet.defer import maybeDeferred

from toystore.envelope import Conflict, StaleEpoch, Unavailable
from toystore.order import replication
from toystore.order.journal import Log
from toystore.order.replica import NotLeader

from .replicas import ReplicaCase


class PromotionTests(ReplicaCase):
    """A new leader catches up from its peers before it serves, and epochs fence the old one."""

    def test_promotion_copies_the_newest_log(self) -> None:
        """The new leader copies records only a peer has, then opens its epoch after them."""
        log = Log()
        log.append_leader(1, 3)
        for n in range(3):
            log.append_order(1, "Tux", 1, f"k{n}")
        self.make({1: (log.lines, 1), 2: (log.lines[:2], 1), 3: (log.lines, 1)})
        self.replicas[2].peers[3].hold()  # replica 3 does not answer its status call in time
        promoting = self.drive(self.replicas[2].lead(2, 2))
        self.assertNoResult(promoting)
        self.clock.advance(replication.PEER_TIMEOUT)
        self.network.flush()
        self.assertTrue(self.successResultOf(promoting)["ready"])
        self.successResultOf(self.drive(self.replicas[1].lead(2, 2)))
        self.network.flush()
        replica = self.replicas[2]
        self.assertEqual(replica.order_log.keys, {"k0": 0, "k1": 1, "k2": 2})
        self.assertEqual(replica.order_log.records[-1], {"index": 4, "epoch": 2, "leader": 2, "reconciled": 0})
        self.assertEqual(self.successResultOf(self.order(2, "k3")), {"order_number": 3})

    def test_read_after_promotion_waits_for_commitment(self) -> None:
        """A new leader answers for an old order only once its epoch is committed on a majority."""
        self.make()
        self.elect(1, 3)
        self.successResultOf(self.order(3, "k"))
        self.network.cut(3)  # down: refused at once
        promoting = self.drive(self.replicas[2].lead(2, 2))
        self.network.flush()
        self.successResultOf(promoting)
        read = self.drive(maybeDeferred(self.replicas[2].order, 0))
        self.assertNoResult(read)
        self.successResultOf(self.drive(self.replicas[1].lead(2, 2)))
        self.network.flush()
        self.assertEqual(self.successResultOf(read), {"number": 0, "name": "Tux", "quantity": 1})

    def test_promotion_needs_a_majority(self) -> None:
        """With no peer reachable, a replica refuses to lead (it might lack committed orders)."""
        self.make()
        self.network.cut(1)
        self.network.cut(2)
        d = self.drive(self.replicas[3].lead(1, 3))
        self.network.flush()
        self.failureResultOf(d, Unavailable)
        self.assertEqual(self.replicas[3].role, "follower")

    def test_epoch_rules(self) -> None:
        """Older notices are refused; an epoch is led once; a second leader for one epoch is a conflict."""
        self.make()
        self.elect(2, 3)
        self.failureResultOf(self.drive(self.replicas[1].lead(1, 3)), StaleEpoch)
        self.failureResultOf(self.drive(self.replicas[1].lead(2, 1)), StaleEpoch)
        self.failureResultOf(self.drive(self.replicas[1].lead(2, 2)), Conflict)
        self.assertEqual(self.successResultOf(self.drive(self.replicas[3].lead(2, 3)))["ready"], True)
        self.assertEqual((self.base / "order-1" / "epoch.json").read_text(), '{"epoch":2}')

    def test_fenced_leader_steps_down(self) -> None:
        """When the catalog refuses the leader's epoch (a newer leader reconciled), it steps down and answers 421."""
        self.make()
        self.elect(1, 3)
        self.successResultOf(self.to_catalog("reconcile", epoch=2, after=0))
        self.failureResultOf(self.order(3, "k"), NotLeader)
        self.assertEqual(self.replicas[3].role, "follower")
        self.assertEqual(self.replicas[3].streams.by_connection, {})


class ReconcileTests(ReplicaCase):
    """A new leader adopts the buys a dead leader made but never logged, before it serves."""

    def test_buy_without_order_is_adopted(self) -> None:
        """The catalog sold for key 'lost' under epoch 1; no log has it: the next leader logs it, once."""
        self.make()
        self.elect(1, 3)
        self.successResultOf(self.order(3, "k0"))
        self.successResultOf(self.to_catalog("buy", name="Fox", quantity=2, key="lost", epoch=1))  # then 3 died
        self.network.cut(3)  # down: refused at once
        promoting = self.drive(self.replicas[2].lead(2, 2))
        self.network.flush()
        self.successResultOf(promoting)
        self.successResultOf(self.drive(self.replicas[1].lead(2, 2)))
        self.network.flush()
        log = self.replicas[2].order_log
        self.assertEqual(log.order(1), {"number": 1, "name": "Fox", "quantity": 2, "key": "lost", "seq": 2})
        self.assertEqual(log.records[-1], {"index": 3, "epoch": 2, "leader": 2, "reconciled": 2})
        self.assertEqual(log.reconciled(), 2)
        # The client's retry finds its order; nothing is bought twice.
        self.assertEqual(
            self.successResultOf(self.drive(self.replicas[2].place("Fox", 2, "lost"))), {"order_number": 1}
        )
        self.assertEqual(self.successResultOf(self.order(2, "k1")), {"order_number": 2})
        self.assertEqual(len(self.buys()), 3)
        self.assertEqual(self.file(1), self.file(2))

    def test_reconcile_fences_the_old_leader(self) -> None:
        """Once a new leader reconciled, the old leader's buys are refused and it steps down."""
        self.make()
        self.elect(1, 3)
        self.successResultOf(self.drive(self.replicas[2].lead(2, 2)))
        self.network.flush()
        self.failureResultOf(self.order(3, "late"), NotLeader)
        self.assertEqual(self.replicas[3].role, "follower")
        self.assertEqual([b["key"] for b in self.buys()], [])

    def test_no_catalog_no_leading(self) -> None:
        """A replica that cannot reach the catalog cannot reconcile, so it does not lead (503)."""
        self.make()
        self.replicas[3].catalog.cut()
        self.failureResultOf(self.drive(self.replicas[3].lead(1, 3)), Unavailable)
        self.assertEqual(self.replicas[3].role, "follower")


class FenceTests(ReplicaCase):
    """A promoting peer fences each replica it asks, so an older leader can commit nothing more."""

    def test_fenced_followers_stop_counting_for_the_old_leader(self) -> None:
        """With both followers fenced at epoch 2, leader 3 of epoch 1 cannot commit: no majority."""
        self.make()
        self.elect(1, 3)
        for i in (1, 2):
            self.assertEqual(self.successResultOf(self.drive(self.replicas[i].fence(2)))["epoch"], 2)
        self.assertEqual((self.base / "order-1" / "epoch.json").read_text(), '{"epoch":2}')
        d = self.order(3, "k")
        self.clock.advance(self.replicas[3].config.commit_timeout)
        self.network.flush()
        self.assertIn("no majority", self.failureResultOf(d, Unavailable).value.message)

    def test_new_epoch_and_leading_never_overlap(self) -> None:
        """The turn a leader accepts a newer epoch, it no longer leads: it never reports (or writes) both."""
        self.make()
        self.elect(1, 3)
        self.replicas[3].accept_epoch(2)
        status = self.replicas[3].status()
        self.assertEqual((status["role"], status["epoch"], status["leader"]), ("follower", 2, None))

    def test_fenced_leader_steps_down(self) -> None:
        """A leader asked by a peer promoting to a newer epoch stops leading."""
        self.make()
        self.elect(1, 3)
        status = self.successResultOf(self.drive(self.replicas[3].fence(2)))
        self.assertEqual((status["role"], status["epoch"], status["leader"]), ("follower", 2, None))
        self.failureResultOf(self.order(3, "k"), NotLeader)
