"""
The order replicas' own election (:mod:`toystore.order.replica`,
``consensus``, ``reconciling``), through the replicas' public calls and the
catalog: a new leader adopts the buys a dead leader never logged and fences
its epoch at the catalog; the vote state is on disk; a replica that lost its
disk votes only once it has caught up; a replica with another replica list is
refused; a replica coming back does not disrupt the leader, unless it is the
highest id, which takes over by handover.  Real replicas and catalog on an
in-memory network, in simulated time (:mod:`tests.unit.replicas`).
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from typing import Any

from twisted.internet.defer import Deferred

from toystore.envelope import ApiError, StaleEpoch
from toystore.order.reconciling import RETRY
from toystore.order.replica import NotLeader, Replica
from toystore.wire.testing import LoopbackClient

from .replicas import CATALOG, ReplicaCase, inline


class ElectionCase(ReplicaCase):
    """Three replicas, the same run every time."""

    def error(self, d: Deferred[Any], within: float = 5.0) -> ApiError:
        """Let time pass until ``d`` fails; its ApiError."""
        self.advance(within, until=lambda: d.called)
        return self.failureResultOf(d, ApiError).value

    def state(self, i: int) -> dict[str, Any]:
        """Replica ``i``'s vote state, as its ``epoch.json`` holds it."""
        return json.loads((self.base / f"order-{i}" / "epoch.json").read_bytes())

    def logged(self, i: int, key: str) -> int:
        """How many order records of replica ``i``'s journal file hold ``key``."""
        return self.file(i).count(b'"key":%s,' % json.dumps(key).encode())

    def epochs(self) -> dict[int, int]:
        return {i: r.epoch for i, r in self.replicas.items()}

    def serving_other_than(self, old: int, within: float = 10.0) -> Replica:
        """Let time pass until a replica other than ``old`` (which may still think it serves) serves; that one."""

        def others() -> list[Replica]:
            return [r for i, r in self.replicas.items() if i != old and r.node is not None and r.node.serving]

        self.advance(within, until=lambda: bool(others()))
        [new] = others()
        return new

    def reconciled(self, leader: Replica) -> bool:
        """Whether the catalog has been fenced at ``leader``'s epoch (its reconciliation has reached it)."""
        return self.catalog.epoch >= leader.epoch


class AdoptionTests(ElectionCase):
    """A new leader adopts the buys the catalog made for a leader that died before logging them."""

    def test_orphan_buy_is_adopted_once(self) -> None:
        """
        The catalog sold under key 'orphan' for leader 3, which died before
        logging it: the next leader logs it, once, in its own epoch; the
        client's retry there answers its number, buying nothing; and no
        later leader adopts it again.
        """
        self.make()
        leader = self.serving(expected=3)
        self.assertEqual(self.result(self.order(3, "k0")), {"order_number": 0})
        bought = self.successResultOf(self.to_catalog("buy", name="Fox", quantity=1, key="orphan", epoch=leader.epoch))
        self.kill(3)
        new = self.serving()
        self.advance(2.0, until=lambda: new.reconciliation.adopted == 1)
        self.assertEqual(new.reconciliation.adopted, 1)
        self.assertEqual(self.result(self.order(new.id, "orphan", name="Fox")), {"order_number": 1})
        record = new.order_log.order(1)
        assert record is not None
        self.assertEqual((record["key"], record["seq"]), ("orphan", bought["seq"]))
        self.assertEqual(new.order_log.order_epoch(1), new.epoch)
        self.assertEqual(self.result(self.order(new.id, "k1")), {"order_number": 2})
        # Replica 3 comes back and takes over: its reconciliation finds the buy logged.
        self.make(ids=(3,))
        back = self.serving(expected=3)
        self.advance(2.0, until=lambda: self.reconciled(back))
        self.assertTrue(self.reconciled(back))
        self.assertEqual(self.result(self.order(3, "orphan", name="Fox")), {"order_number": 1})
        self.assertEqual(self.error(self.order(3, "orphan")).code, 422)  # another body under the key
        self.advance(1.0)
        self.assertEqual(back.reconciliation.adopted, 0)
        for i in (1, 2, 3):
            self.assertEqual(self.logged(i, "orphan"), 1)
        self.assertEqual([b["key"] for b in self.buys()], ["k0", "orphan", "k1"])

    def test_retry_racing_the_adoption_is_one_order(self) -> None:
        """
        A retry that reaches the new leader while its reconciliation is under
        way (both calls to the catalog in flight together) is the same one
        order: logged once, bought once.
        """
        self.make()
        leader = self.serving(expected=3)
        self.successResultOf(self.to_catalog("buy", name="Fox", quantity=1, key="orphan", epoch=leader.epoch))
        for i in (1, 2):
            self.replicas[i].catalog.hold()  # the catalog answers late
        self.kill(3)
        new = self.serving()
        retry = self.order(new.id, "orphan", name="Fox")
        self.assertEqual([kind for kind, _ in new.catalog.calls[-2:]], ["reconcile", "buy"])
        self.advance(0.2)
        new.catalog.release()
        self.assertEqual(self.result(retry), {"order_number": 0})
        self.advance(2.0, until=lambda: self.reconciled(new))
        self.advance(1.0)
        self.assertEqual(new.order_log.order_count, 1)
        self.assertEqual(self.logged(new.id, "orphan"), 1)
        self.assertEqual(len(self.buys()), 1)


class FencingTests(ElectionCase):
    """A new leader's reconciliation fences the older epochs at the catalog."""

    def test_reconciliation_fences_the_old_epoch(self) -> None:
        """Once the next leader has reconciled, a buy under the dead leader's epoch and a new key is refused (412)."""
        self.make()
        old = self.serving(expected=3)
        old_epoch = old.epoch
        early = self.to_catalog("buy", name="Tux", quantity=1, key="early", epoch=old_epoch)
        self.assertEqual(self.successResultOf(early)["seq"], 1)
        self.kill(3)
        new = self.serving()
        self.assertGreater(new.epoch, old_epoch)
        self.advance(2.0, until=lambda: self.reconciled(new))
        self.assertEqual(self.catalog.epoch, new.epoch)
        late = self.to_catalog("buy", name="Tux", quantity=1, key="late", epoch=old_epoch)
        self.assertEqual(self.failureResultOf(late, StaleEpoch).value.code, 412)
        self.assertEqual([b["key"] for b in self.buys()], ["early"])

    def test_paused_leader_cannot_buy(self) -> None:
        """
        A leader paused through the next election (its timers stopped, so it
        still thinks it serves) and resuming with an order is refused by the
        catalog: the client gets a 421, nothing is bought or logged.
        """
        self.make()
        old = self.serving(expected=3)
        assert old.consensus is not None and old.node is not None
        length = len(old.order_log)
        self.network.cut(3)
        old.consensus.stop()  # paused: no timer runs, no message comes
        new = self.serving_other_than(3)
        self.advance(2.0, until=lambda: self.reconciled(new))
        self.assertTrue(old.node.serving)
        error = self.error(self.order(3, "late"))
        self.assertIsInstance(error, NotLeader)
        self.assertEqual(self.buys(), [])
        self.assertEqual(len(old.order_log), length)


class CatalogDownTests(ElectionCase):
    """A leader that cannot reach the catalog serves, and keeps trying to reconcile."""

    def test_reconciles_once_the_catalog_is_back(self) -> None:
        """
        With the catalog unreachable, the new leader asks again and again
        (its orders' buys wait, in doubt); once it is back, the dead leader's
        buy is adopted and the waiting order placed, each once.
        """
        self.make()
        leader = self.serving(expected=3)
        self.assertEqual(self.result(self.order(3, "k0")), {"order_number": 0})
        self.successResultOf(self.to_catalog("buy", name="Fox", quantity=1, key="orphan", epoch=leader.epoch))
        for i in (1, 2):
            self.replicas[i].catalog.cut()
        calls = {i: len(self.replicas[i].catalog.calls) for i in (1, 2)}
        self.kill(3)
        new = self.serving()
        waiting = self.order(new.id, "k1")
        self.advance(3.0)
        reconciles = [fields for kind, fields in new.catalog.calls[calls[new.id] :] if kind == "reconcile"]
        self.assertGreaterEqual(len(reconciles), 2.0 / RETRY)  # kept trying
        self.assertEqual({fields["epoch"] for fields in reconciles}, {new.epoch})
        self.assertEqual(new.reconciliation.adopted, 0)
        self.assertNoResult(waiting)
        assert new.node is not None
        self.assertTrue(new.node.serving)
        self.assertLess(self.catalog.epoch, new.epoch)
        new.catalog.restore()
        self.advance(3.0, until=lambda: new.reconciliation.adopted == 1 and waiting.called)
        self.assertEqual(new.reconciliation.adopted, 1)
        k1 = self.successResultOf(waiting)["order_number"]
        orphan = self.result(self.order(new.id, "orphan", name="Fox"))["order_number"]
        self.assertEqual({k1, orphan}, {1, 2})
        self.assertEqual(sorted(b["key"] for b in self.buys()), ["k0", "k1", "orphan"])
        self.assertEqual(self.logged(new.id, "orphan"), 1)
        self.assertEqual(self.logged(new.id, "k1"), 1)


class VoteStateTests(ElectionCase):
    """Each replica's epoch and vote are on disk, and read back at start."""

    def test_vote_state_survives_restarts(self) -> None:
        """
        After an election every ``epoch.json`` holds its replica's epoch and
        vote (a majority's, the leader's id in its epoch), and still does
        when the replica is killed; all three started again start from them,
        and the epoch only grows.
        """
        self.make()
        leader = self.serving(expected=3)
        elected = {i: self.state(i) for i in (1, 2, 3)}
        self.assertEqual(elected[3], {"epoch": leader.epoch, "vote": 3, "voter": True})
        self.assertGreaterEqual(sum(1 for s in elected.values() if s == elected[3]), 2)  # a majority voted for 3
        saved: dict[int, dict[str, Any]] = {}
        for i in (3, 2, 1):  # (the others campaign as each goes)
            node = self.replicas[i].node
            assert node is not None
            saved[i] = {"epoch": node.epoch, "vote": node.vote, "voter": True}
            self.kill(i)
            self.assertEqual(self.state(i), saved[i])
        self.assertGreaterEqual(saved[1]["epoch"], leader.epoch)
        self.make()
        for i, replica in self.replicas.items():
            assert replica.node is not None
            self.assertEqual((replica.epoch, replica.node.vote), (saved[i]["epoch"], saved[i]["vote"]))
        again = self.serving()
        self.assertGreater(again.epoch, leader.epoch)
        self.assertEqual(self.state(again.id)["vote"], again.id)
        for i in (1, 2, 3):
            self.assertEqual(self.state(i)["epoch"], self.replicas[i].epoch)
            self.assertGreaterEqual(self.replicas[i].epoch, saved[i]["epoch"])


class LostDiskTests(ElectionCase):
    """A replica that replaces a lost disk does not vote until it has caught up."""

    def test_replacing_replica_votes_once_caught_up(self) -> None:
        """
        Replica 1, started with ``replaces`` on an emptied data directory,
        reports ``voter: False`` and neither campaigns nor grants a vote: with
        the leader gone, replica 2 alone cannot be elected; once replica 3 is
        back, 2 and 3 elect, replica 1 catches up, votes, and counts toward
        a commit.
        """
        self.make()
        self.serving(expected=3)
        for n in range(3):
            self.assertEqual(self.result(self.order(3, f"k{n}")), {"order_number": n})
        self.kill(1)
        shutil.rmtree(self.base / "order-1")
        self.make(ids=(1,), replaces=(1,))
        replacing = self.replicas[1]
        self.network.cut(1)  # kept from its peers a while
        self.assertEqual((replacing.status()["voter"], replacing.status()["length"]), (False, 0))
        self.kill(3)
        epoch = self.replicas[2].epoch
        self.network.restore(1)
        self.advance(6.0)
        assert replacing.node is not None
        for replica in self.replicas.values():
            self.assertFalse(replica.status()["serving"])
        self.assertEqual(replacing.status()["voter"], False)
        self.assertEqual((replacing.epoch, replacing.node.counters.elections), (0, 0))  # never campaigned
        self.assertGreater(replacing.node.counters.prevotes_refused, 0)  # asked by 2, and refused
        self.assertEqual(self.replicas[2].epoch, epoch)  # 2 never got past its pre-vote
        self.make(ids=(3,))
        leader = self.serving()
        self.assertNotEqual(leader.id, 1)
        self.advance(3.0, until=lambda: replacing.status()["voter"])
        self.assertTrue(replacing.status()["voter"])
        self.assertEqual(self.state(1)["voter"], True)
        self.assertEqual(replacing.local_order(2), {"number": 2, "name": "Tux", "quantity": 1})
        # Replica 1 now counts: with 2 gone, 1 and 3 commit (and elect, if 2 led).
        self.kill(2)
        leader = self.serving()
        self.assertEqual(self.result(self.order(leader.id, "k3")), {"order_number": 3})
        self.assertEqual(self.result(self.order(leader.id, "k0")), {"order_number": 0})
        self.assertEqual(len(self.buys()), 4)


class DigestTests(ElectionCase):
    """A replica whose cluster file lists other replicas is refused by its peers."""

    def start_with_other_list(self, i: int) -> Replica:
        """Start replica ``i`` with a cluster file that lists a fourth replica too (another digest)."""
        cluster = dataclasses.replace(self.cluster, order=self.order_config())
        me = next(r for r in cluster.order.replicas if r.id == i)
        listed = (*cluster.order.replicas, dataclasses.replace(me, id=4))
        other = dataclasses.replace(cluster, order=dataclasses.replace(cluster.order, replicas=listed))
        replica = Replica(
            me,
            other,
            self.clock,
            inline,
            LoopbackClient(self.network, CATALOG),
            lambda target: self.network.endpoint(target, i),
            fail_stop=lambda why: self.fail_stops.append((i, why)),
            rng=random.Random(self.seed),
        )
        self.replicas[i] = replica
        self.network.restore(i)
        self.network.listen(i, replica)
        replica.catalog.startService()
        replica.startService()
        self.network.flush()
        return replica

    def test_other_replica_list_is_refused(self) -> None:
        """
        Replica 1 restarted with a list of four replicas campaigns in vain:
        its peers drop its messages (and it drops theirs); the leader serves
        on in its epoch, commits with replica 2, and replica 1's log stays as
        it was.
        """
        self.make()
        leader = self.serving(expected=3)
        assert leader.node is not None
        self.assertEqual(self.result(self.order(3, "k0")), {"order_number": 0})
        epoch = leader.epoch
        self.kill(1)
        stranger = self.start_with_other_list(1)
        length = len(stranger.order_log)
        assert stranger.node is not None
        self.assertNotEqual(stranger.digest, leader.digest)
        self.advance(6.0)
        self.assertGreater(leader.node.counters.digest_refused, 0)
        node2 = self.replicas[2].node
        assert node2 is not None
        self.assertGreater(node2.counters.digest_refused, 0)
        self.assertGreater(stranger.node.counters.digest_refused, 0)  # the leader's appends
        self.assertTrue(leader.node.serving)
        self.assertEqual((leader.epoch, self.replicas[2].epoch), (epoch, epoch))
        self.assertEqual(self.result(self.order(3, "k1")), {"order_number": 1})
        self.assertEqual(len(stranger.order_log), length)
        self.assertFalse(stranger.status()["serving"])


class RejoinTests(ElectionCase):
    """A replica that comes back does not disrupt the leader, unless it is the highest id, which takes over."""

    def test_restarted_follower_rejoins_without_an_election(self) -> None:
        """
        Replica 1, killed, then restarted and kept from its peers for several
        election timeouts (it asks for pre-votes, in vain), rejoins: the
        leader serves on in the same epoch, and replica 1 catches up.
        """
        self.make()
        leader = self.serving(expected=3)
        assert leader.node is not None
        self.assertEqual(self.result(self.order(3, "k0")), {"order_number": 0})
        epoch = leader.epoch
        self.kill(1)
        self.assertEqual(self.result(self.order(3, "k1")), {"order_number": 1})
        self.make(ids=(1,))
        back = self.replicas[1]
        self.network.cut(1)
        roles = set()
        for _ in range(50):
            self.advance(0.1)
            roles.add(back.role)
        self.assertIn("pre-candidate", roles)  # it did try
        self.assertEqual(back.epoch, epoch)
        self.network.restore(1)
        self.advance(5.0)
        self.assertEqual(self.epochs(), {1: epoch, 2: epoch, 3: epoch})
        self.assertTrue(leader.node.serving)
        self.assertEqual(back.leader, 3)
        self.assertEqual(back.local_order(1), {"number": 1, "name": "Tux", "quantity": 1})
        self.assertEqual(self.file(1), self.file(3))

    def test_highest_id_takes_over_by_handover(self) -> None:
        """
        Replica 3 (the highest id), back after a kill, is handed the lead:
        one election (the epoch grows by one), and no order is lost: those
        placed meanwhile are answered, or refused (421) and retried at the
        new leader, each a single order, bought once.
        """
        self.make()
        self.serving(expected=3)
        for n in range(3):
            self.assertEqual(self.result(self.order(3, f"k{n}")), {"order_number": n})
        self.kill(3)
        interim = self.serving()
        epoch = interim.epoch
        self.assertEqual(self.result(self.order(interim.id, "k3")), {"order_number": 3})
        self.make(ids=(3,))
        placed = {}
        for n in range(40):  # an order every 50 ms, to the interim leader, while replica 3 comes back
            placed[f"during-{n}"] = self.order(interim.id, f"during-{n}")
            self.advance(0.05)
        back = self.serving(expected=3)
        self.assertEqual(back.epoch, epoch + 1)
        self.advance(5.0, until=lambda: all(d.called for d in placed.values()))
        numbers, refused = {}, []
        for key, d in placed.items():
            if isinstance(d.result, dict):
                numbers[key] = self.successResultOf(d)["order_number"]
            else:
                self.assertIsInstance(self.failureResultOf(d, ApiError).value, NotLeader)
                refused.append(key)
        self.assertGreater(len(numbers), 0)
        for key in refused:  # the front-end's retry, same key, at the new leader
            numbers[key] = self.result(self.order(3, key))["order_number"]
        for key, number in list(numbers.items())[:5]:
            self.assertEqual(self.result(self.order(3, key)), {"order_number": number})
        self.assertEqual(sorted(numbers.values()), list(range(4, 44)))
        self.assertEqual(len(self.buys()), 44)
        self.assertEqual(back.order_log.order_count, 44)
        self.assertEqual(back.epoch, epoch + 1)
