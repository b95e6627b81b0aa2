"""
Tests for the front-end: how it finds the leader the replicas elected (against
scripted replica statuses, and against real replicas), and the public API
through StubTreq, against a real catalog service and three real order
replicas on an in-memory network (:mod:`toystore.wire.testing`).  No sockets.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from toystore.envelope import BadRequest, Unavailable
from toystore.frontend.discovery import REFRESH, LeaderTracker
from toystore.frontend.resources import frontend_root
from toystore.frontend.service import RETRY_PAUSE
from toystore.wire import CallTimeout, NotConnected

from .replicas import STOCK, ReplicaCase

#: A replica's status that never comes: the call times out.
HUNG = "hung"


def status(id: int, role: str = "follower", epoch: int = 1, leader: int | None = None, **more: Any) -> dict[str, Any]:
    """A replica's ``status`` reply, every field of a real one (a test checks the shape against a real replica)."""
    reply: dict[str, Any] = {
        "id": id,
        "role": role,
        "epoch": epoch,
        "vote": leader,
        "leader": leader,
        "serving": False,
        "reconciled": False,
        "voter": True,
        "length": 0,
        "durable": 0,
        "commit": 0,
        "last_epoch": 0,
        "last_order": -1,
        "committed_order": -1,
        "in_sync": [],
        "lag": {},
        "elections": 0,
        "prevotes_refused": 0,
        "handovers": 0,
        "links": {},
    }
    return {**reply, **more}


def leading(id: int, epoch: int, serving: bool = True) -> dict[str, Any]:
    """The status of the leader of ``epoch`` (whose leader record is committed, if ``serving``)."""
    return status(id, "leader", epoch, leader=id, serving=serving)


def following(id: int, epoch: int, leader: int | None) -> dict[str, Any]:
    """The status of a follower in ``epoch`` that knows ``leader`` (None: none yet)."""
    return status(id, "follower", epoch, leader=leader)


class ScriptedReplica:
    """
    A replica's wire client as the tracker uses it: ``status`` answers what
    the test has set, at once; None: the replica cannot be reached;
    :data:`HUNG`: the call times out.
    """

    def __init__(self, clock: Clock, answer: Any) -> None:
        self.clock = clock
        self.answer = answer
        self.asked = 0

    def call(self, type: str, fields: Any = None, timeout: float | None = None, encoded: bool = False) -> Deferred[Any]:
        assert type == "status", type
        self.asked += 1
        if self.answer is None:
            return fail(NotConnected("cannot connect"))
        if self.answer == HUNG:
            d: Deferred[Any] = Deferred()
            assert timeout is not None
            self.clock.callLater(timeout, d.errback, CallTimeout(f"no answer within {timeout} s"))
            return d
        return succeed(dict(self.answer))


class DiscoveryTests(SynchronousTestCase):
    """The tracker finds the replica that serves, or one that relays to it, and waits for one otherwise."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.found: list[tuple[int, int]] = []

    def tracker(self, *answers: Any) -> LeaderTracker:
        """A tracker of replicas 1, 2, 3 ... whose statuses are ``answers`` (see :class:`ScriptedReplica`)."""
        self.replicas = {i: ScriptedReplica(self.clock, answer) for i, answer in enumerate(answers, 1)}
        tracker = LeaderTracker(
            self.replicas,
            self.clock,
            status_timeout=0.5,
            on_found=lambda target, epoch: self.found.append((target, epoch)),
        )
        self.addCleanup(tracker.stop)
        return tracker

    def pump(self, seconds: float, step: float = 0.01) -> None:
        """Let ``seconds`` pass in small steps, so that each delay is counted from when it was due."""
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def asked(self) -> list[int]:
        """How often each replica was asked for its status."""
        return [replica.asked for replica in self.replicas.values()]

    def assertFound(self, tracker: LeaderTracker, target: int, known: int, epoch: int) -> None:
        self.assertEqual((tracker.leader, tracker.known, tracker.epoch), (target, known, epoch))

    def test_serving_replica_newest_epoch(self) -> None:
        """The replica that serves leads; of two that say so, the newer epoch (a deposed one may not know yet)."""
        tracker = self.tracker(following(1, 7, leader=2), leading(2, 7), leading(3, 6))
        self.assertEqual(self.successResultOf(tracker.elect()), 2)
        self.assertFound(tracker, 2, 2, 7)
        self.assertEqual((self.found, tracker.discoveries), ([(2, 7)], 1))

    def test_a_leader_that_does_not_serve_yet_is_passed_over(self) -> None:
        """A leader whose leader record is not committed is no target, even with the highest id and epoch."""
        tracker = self.tracker(leading(1, 4), following(2, 4, leader=1), leading(3, 5, serving=False))
        self.assertEqual(self.successResultOf(tracker.elect()), 1)
        self.assertFound(tracker, 1, 1, 4)

    def test_relay_when_the_leader_cannot_be_reached(self) -> None:
        """
        Nothing that answers serves, but a replica knows the leader: calls
        go to that one, which relays them; the newest epoch's view wins.
        """
        tracker = self.tracker(following(1, 5, leader=3), following(2, 4, leader=1), None)
        self.assertEqual(self.successResultOf(tracker.elect()), 1)
        self.assertFound(tracker, 1, 3, 5)
        self.assertEqual(self.found, [(1, 5)])

    def test_relay_through_a_hung_leader_waits_for_the_status_timeout(self) -> None:
        """A leader that does not answer is given ``status_timeout``; then the call goes through a follower."""
        tracker = self.tracker(following(1, 5, leader=3), following(2, 5, leader=3), HUNG)
        d = tracker.elect()
        self.clock.advance(0.49)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertFound(tracker, 1, 3, 5)

    def test_no_relay_through_a_stopping_replica(self) -> None:
        """A replica that is stopping relays nothing: another one that knows the leader is used."""
        tracker = self.tracker(status(1, "stopping", 5, leader=3), following(2, 5, leader=3), None)
        self.assertEqual(self.successResultOf(tracker.elect()), 2)
        self.assertFound(tracker, 2, 3, 5)

    def test_no_relay_to_a_leader_that_does_not_serve(self) -> None:
        """
        The leader answers that it does not serve yet (its leader record
        not committed, or handing over): relaying to it would only get a
        421, so the discovery waits for a replica that serves.
        """
        tracker = self.tracker(following(1, 5, leader=3), following(2, 5, leader=3), leading(3, 5, serving=False))
        d = tracker.elect()
        self.assertNoResult(d)
        self.replicas[3].answer = leading(3, 5)
        self.clock.advance(0.5)
        self.assertEqual(self.successResultOf(d), 3)
        self.assertFound(tracker, 3, 3, 5)

    def test_no_relay_to_a_leader_that_answered_it_no_longer_leads(self) -> None:
        """
        The old leader, cut from its followers, has stepped down (it heard no
        majority) while they still name it, not having timed out yet:
        relaying through them would wait on a dead link, so the discovery
        waits for the election instead.
        """
        tracker = self.tracker(following(1, 5, leader=3), following(2, 5, leader=3), following(3, 5, leader=None))
        d = tracker.elect()
        self.assertNoResult(d)
        self.replicas[2].answer = leading(2, 6)
        self.clock.advance(0.5)
        self.assertEqual(self.successResultOf(d), 2)
        self.assertFound(tracker, 2, 2, 6)

    def test_retries_with_backoff_until_a_leader_is_known(self) -> None:
        """
        An election under way (no replica serves or knows a leader), or no
        replica reachable: the discovery asks again after a growing delay
        (0.05 s x 1.5 per try, at most 0.5 s), until one is known.
        """
        tracker = self.tracker(status(1, "pre-candidate", 4), status(2, "candidate", 5, vote=2), None)
        d = tracker.elect()
        self.assertEqual(self.asked(), [1, 1, 1])
        for rounds, delay in enumerate((0.075, 0.1125, 0.16875, 0.253125, 0.3796875, 0.5, 0.5), 1):
            self.clock.advance(delay * 0.99)
            self.assertEqual(self.asked(), [rounds] * 3, f"not before {delay} s")
            self.clock.advance(delay * 0.02)
            self.assertEqual(self.asked(), [rounds + 1] * 3, f"after {delay} s")
        self.assertNoResult(d)
        self.replicas[1].answer = following(1, 5, leader=3)  # replica 3, out of reach, leads: through replica 1
        self.clock.advance(0.5)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertFound(tracker, 1, 3, 5)
        self.assertEqual(tracker.discoveries, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_single_flight(self) -> None:
        """Callers that need the leader while a discovery runs share it: one status call to each replica."""
        tracker = self.tracker(leading(1, 3), following(2, 3, leader=1), HUNG)
        waiting = [tracker.elect() for _ in range(3)]
        waiting.append(Deferred.fromCoroutine(tracker.current()))
        self.clock.advance(0.25)
        waiting.append(tracker.elect())
        self.assertEqual(self.asked(), [1, 1, 1])
        for d in waiting:
            self.assertNoResult(d)
        self.clock.advance(0.25)
        self.assertEqual([self.successResultOf(d) for d in waiting], [1] * 5)
        self.assertEqual((tracker.discoveries, self.found), (1, [(1, 3)]))
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(tracker.current())), 1)
        self.assertEqual(self.asked(), [1, 1, 1], "a known leader is not looked for")
        tracker.elect()
        self.assertEqual(self.asked(), [2, 2, 2], "a caller after it has ended starts another")

    def test_failed_forgets(self) -> None:
        """failed() forgets where calls go only if it is that replica that failed; the next caller looks again."""
        tracker = self.tracker(leading(1, 5), following(2, 5, leader=1), following(3, 5, leader=1))
        self.successResultOf(tracker.elect())
        tracker.failed(2, "not ours")
        self.assertEqual(tracker.leader, 1)
        tracker.failed(1, "timed out")
        self.assertIsNone(tracker.leader)
        self.replicas[1].answer = None  # gone: replica 3 takes over
        self.replicas[2].answer = following(2, 6, leader=3)
        self.replicas[3].answer = leading(3, 6)
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(tracker.current())), 3)
        self.assertFound(tracker, 3, 3, 6)
        self.assertEqual(self.asked(), [2, 2, 2])

    def test_refresh_sees_a_leader_change_without_a_failure(self) -> None:
        """
        Started, the tracker looks at once and again every REFRESH seconds:
        a handover, or a leader reachable again after calls went through a
        relay, is seen with no call failing.
        """
        tracker = self.tracker(following(1, 5, leader=3), following(2, 5, leader=3), None)
        tracker.start()
        self.assertFound(tracker, 1, 3, 5)  # replica 3 out of reach: through replica 1
        self.replicas[3].answer = leading(3, 5)
        self.clock.advance(REFRESH * 0.99)
        self.assertEqual((self.asked(), tracker.leader), ([1, 1, 1], 1))
        self.clock.advance(REFRESH * 0.02)
        self.assertFound(tracker, 3, 3, 5)  # reachable again: straight to it
        self.replicas[2].answer = leading(2, 6)  # replica 3 handed over to replica 2
        self.replicas[3].answer = following(3, 6, leader=2)
        self.clock.advance(REFRESH)
        self.assertFound(tracker, 2, 2, 6)
        self.assertEqual((self.asked(), self.found), ([3, 3, 3], [(1, 5), (3, 5), (2, 6)]))
        tracker.stop()
        self.clock.advance(REFRESH * 3)
        self.assertEqual((self.asked(), self.clock.getDelayedCalls()), ([3, 3, 3], []))

    def test_refresh_adds_no_round_to_a_discovery_under_way(self) -> None:
        """While a discovery is still looking (an election under way), a refresh adds no round of its own."""
        tracker = self.tracker(*(status(i, "candidate", 3) for i in (1, 2, 3)))
        tracker.start()
        self.pump(2.1)  # rounds at 0, 0.075, 0.1875, 0.356, 0.609, 0.989, 1.489, 1.989 s
        self.assertEqual(self.asked(), [8, 8, 8])
        self.replicas[1].answer = leading(1, 3)
        self.pump(0.5)  # the next retry, at 2.489 s, finds it
        self.assertEqual((self.asked(), tracker.leader, tracker.discoveries), ([9, 9, 9], 1, 1))
        self.pump(0.6)  # and the refreshes go on, at 3 s
        self.assertEqual((self.asked(), tracker.discoveries), ([10, 10, 10], 2))

    def test_stop_abandons_the_discovery(self) -> None:
        """stop() ends a discovery under way: its callers get CancelledError, and no timer is left."""
        tracker = self.tracker(None, None, None)
        d = tracker.elect()
        self.clock.advance(0.2)
        tracker.stop()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(tracker.leader)


class DiscoveryWithReplicasTests(ReplicaCase):
    """Against real replicas, which elect their leader themselves."""

    def test_finds_the_leader_the_replicas_elect(self) -> None:
        """A tracker that starts before any election finds the replica that serves once there is one."""
        self.make()
        links = {i: self.network.client(i, label=f"replica {i}") for i in self.replicas}
        tracker = LeaderTracker(links, self.clock, status_timeout=0.5)
        self.addCleanup(tracker.stop)
        d = tracker.elect()
        self.network.flush()
        self.assertNoResult(d)
        leader = self.result(d, within=5.0)
        self.assertTrue(self.replicas[leader].serving_in(tracker.epoch))
        self.assertEqual((tracker.known, tracker.epoch), (leader, self.replicas[leader].epoch))
        for i, replica in self.replicas.items():
            real = replica.status()
            self.assertLessEqual(set(status(i)), set(real), "the scripted statuses have the real shape")
            self.assertEqual([type(real[k]) for k in ("id", "role", "epoch", "serving")], [int, str, int, bool])
            self.assertEqual(real["leader"], leader)


#: The reply of :class:`OddlyEncodingCatalog` to every query.
ODD_REPLY = b'{"data":{"name":"Tux","price":15.990,"quantity":100}}'


class OddlyEncodingCatalog(LineOnlyReceiver):
    """
    A catalog that writes its query reply as toystore's encoder never would
    (``15.990``).  No real service can be made to; only bytes that differ
    from a re-encoding show that the front-end passes a reply on as it came.
    """

    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(ODD_REPLY[:-1] + b',"id":%d}' % json.loads(line)["id"])


class APITests(ReplicaCase):
    """
    The public API through StubTreq, with the catalog and three replicas
    behind it; the replicas have elected their leader (replica 3, which the
    first leader hands over to as the highest id) before the front-end
    starts.  The front-end holds a link per replica (``self.links``) and the
    catalog's feed (``self.feed``), as its tap wires them.
    """

    def setUp(self) -> None:
        super().setUp()
        self.make()
        self.serving(3)
        config = dataclasses.replace(self.cluster, frontend=dataclasses.replace(self.cluster.frontend, max_body=1024))
        self.frontend = self.start_frontend(config)
        self.treq = StubTreq(frontend_root(self.frontend))
        self.network.flush()
        self.epoch = self.replicas[3].epoch
        tracker = self.frontend.tracker
        self.assertEqual((tracker.leader, tracker.known, tracker.epoch), (3, 3, self.epoch))

    def settle(self) -> None:
        """Deliver every HTTP request and response, and every wire message, under way."""
        while True:
            self.treq.flush()
            if not self.network.flush():
                return

    def elapse(self, seconds: float, step: float = 0.05) -> None:
        """
        Let ``seconds`` pass in steps, delivering everything after each: the
        replicas hear each other's heartbeats in time, as they would in a
        running store (one long jump would look like a partition to them).
        """
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.settle()

    def answered(self, d: Deferred[Any], within: float = 10.0, step: float = 0.05) -> Any:
        """Let time pass (in steps) until ``d`` has a result: that result."""
        outcome: list[Any] = []
        d.addBoth(outcome.append)  # (``d.called`` is true already while it waits on another Deferred)
        self.settle()
        for _ in range(round(within / step)):
            if outcome:
                break
            self.clock.advance(step)
            self.settle()
        self.assertTrue(outcome, f"no answer within {within} s")
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]

    def request(self, method: str, path: str, body: Any = None, headers: dict | None = None) -> tuple[int, Any, Any]:
        """Make a request and let time pass until it is answered (at once, unless it fails over)."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        response = self.answered(self.treq.request(method, "http://store" + path, data=data, headers=headers))
        content = self.successResultOf(response.content())
        return response.code, json.loads(content), response.headers

    def raw(self, path: str) -> bytes:
        d = self.treq.get("http://store" + path)
        self.settle()
        return self.successResultOf(self.successResultOf(d).content())

    def post_order(self, headers: dict | None = None) -> Deferred[Any]:
        """POST an order for one Tux, left under way."""
        d = self.treq.post("http://store/orders", json.dumps({"name": "Tux", "quantity": 1}).encode(), headers=headers)
        self.settle()
        return d

    def queries(self) -> int:
        """Product queries the front-end sent the catalog."""
        return sum(1 for type, _ in self.feed.calls if type == "query")

    def sent(self, replica: int, *types: str) -> list[dict[str, Any]]:
        """The fields of the front-end's calls of ``types`` to ``replica``."""
        return [fields for type, fields in self.links[replica].calls if type in types]

    def test_product_forms_and_cache(self) -> None:
        """The three URL forms answer alike; the second query is served from the cache."""
        for path in ("/products/Tux", "/products/product_name=Tux", "/products?product_name=Tux"):
            code, body, _ = self.request("GET", path)
            self.assertEqual((code, body["data"]["name"]), (200, "Tux"))
        self.assertEqual(self.queries(), 1)
        self.assertEqual(self.frontend.cache.stats.hits, 2)

    def test_cache_keeps_the_encoded_reply(self) -> None:
        """A hit writes the very bytes the miss wrote, without asking the catalog, until the feed says it changed."""
        first = self.raw("/products/Tux")
        self.assertEqual(json.loads(first), {"data": {"name": "Tux", "price": 15.99, "quantity": STOCK}})
        self.feed.hold()  # the catalog's push of the next change waits
        self.successResultOf(self.to_catalog("buy", name="Tux", quantity=1, key="elsewhere", epoch=self.epoch))
        self.assertEqual(self.raw("/products/Tux"), first)
        self.assertEqual(self.queries(), 1)
        self.feed.release()
        self.network.flush()
        self.assertEqual(json.loads(self.raw("/products/Tux"))["data"]["quantity"], STOCK - 1)
        self.assertEqual(self.queries(), 2)

    def test_peer_bytes_passed_through(self) -> None:
        """
        A product query the catalog answers, and an order query the leader
        answers, are written as the bytes of the peer's reply: nothing is
        decoded and encoded again on the way.
        """
        self.assertEqual(self.request("POST", "/orders", {"name": "Tux", "quantity": 2})[0], 200)
        self.assertEqual(self.raw("/orders/0"), b'{"data":{"name":"Tux","number":0,"quantity":2}}')
        self.assertIn({"number": 0}, self.sent(3, "get"))
        self.network.listen("odd catalog", Factory.forProtocol(OddlyEncodingCatalog))
        self.frontend.catalog = self.network.client("odd catalog")
        self.assertEqual(self.raw("/products/Tux"), ODD_REPLY)

    def test_refused_queries_are_not_cached(self) -> None:
        """A 404 from the catalog is not kept: the next query asks again."""
        for _ in range(2):
            self.assertEqual(self.request("GET", "/products/Unicorn")[0], 404)
        self.assertEqual(self.queries(), 2)
        self.assertEqual(self.frontend.cache.keys(), [])

    def test_push_and_order_invalidate(self) -> None:
        """The catalog's push of a change, and a successful order, each make the next query go to the catalog."""
        self.request("GET", "/products/Tux")
        self.successResultOf(self.to_catalog("buy", name="Tux", quantity=1, key="elsewhere", epoch=self.epoch))
        self.assertEqual(self.frontend.cache.keys(), [])
        self.request("GET", "/products/Tux")
        self.assertEqual(self.queries(), 2)
        self.feed.hold()  # the order's own invalidation, before the catalog's push of its buy
        self.assertEqual(self.request("POST", "/orders", {"name": "Tux", "quantity": 1})[0], 200)
        self.assertEqual(self.frontend.cache.keys(), [])
        self.feed.release()
        self.request("GET", "/products/Tux")
        self.assertEqual(self.queries(), 3)

    def test_malformed_push_changes_nothing(self) -> None:
        """A push whose names are not a list of strings is refused by the contract; the cache keeps its entry."""
        self.request("GET", "/products/Tux")
        for bad in ({"names": "Tux", "reason": "buy"}, {"names": ["Tux", 3], "reason": "buy"}, {"names": ["Tux"]}):
            with self.subTest(push=bad):
                self.assertRaises(BadRequest, self.frontend.push_invalidate, bad, None)
        self.assertEqual(self.frontend.cache.keys(), ["Tux"])

    def test_order_and_query(self) -> None:
        """An order placed is readable in all three forms."""
        code, body, _ = self.request("POST", "/orders", {"name": "Tux", "quantity": 2})
        self.assertEqual((code, body), (200, {"data": {"order_number": 0}}))
        for path in ("/orders/0", "/orders/order_num=0", "/orders?order_number=0"):
            code, body, _ = self.request("GET", path)
            self.assertEqual((code, body), (200, {"data": {"number": 0, "name": "Tux", "quantity": 2}}))

    def test_idempotency_key(self) -> None:
        """The client's key is passed through (a retry places nothing new); without one, the front-end makes one."""
        headers = {"Idempotency-Key": ["abc"]}
        first = self.request("POST", "/orders", {"name": "Tux", "quantity": 1}, headers)[1]
        again = self.request("POST", "/orders", {"name": "Tux", "quantity": 1}, headers)[1]
        self.assertEqual(first, again)
        self.request("POST", "/orders", {"name": "Tux", "quantity": 1})
        keys = [fields["key"] for fields in self.sent(3, "order")]
        self.assertEqual(keys[:2], ["abc", "abc"])
        self.assertTrue(keys[2].startswith("fe-"))
        self.assertEqual(len(self.buys()), 2)

    def relay(self) -> int:
        """The replica the front-end's calls go through, asserting that it relays to replica 3, the leader."""
        tracker = self.frontend.tracker
        self.assertEqual((tracker.known, tracker.epoch), (3, self.epoch))
        self.assertIn(tracker.leader, (1, 2))
        assert tracker.leader is not None
        return tracker.leader

    def test_same_key_while_under_way(self) -> None:
        """While a key's first order is under way: 409 for the same body, 422 for another; then the same reply."""
        self.links[3].hold()  # the leader stops answering the front-end: the first order is under way until failover
        headers = {"Idempotency-Key": ["k"]}
        first = self.post_order(headers)
        code, body, _ = self.request("POST", "/orders", {"name": "Tux", "quantity": 1}, headers)
        self.assertEqual(code, 409)
        self.assertIn("still being placed", body["error"]["message"])
        self.assertEqual(self.request("POST", "/orders", {"name": "Fox", "quantity": 1}, headers)[0], 422)
        self.elapse(4.0)  # the held try times out; the order goes through a follower, which relays it to the leader
        response = self.successResultOf(first)
        placed = json.loads(self.successResultOf(response.content()))
        self.assertEqual((response.code, placed), (200, {"data": {"order_number": 0}}))
        self.assertEqual(self.request("POST", "/orders", {"name": "Tux", "quantity": 1}, headers)[1], placed)
        self.assertEqual([fields["key"] for fields in self.sent(self.relay(), "order")], ["k", "k"])
        self.assertEqual([buy["key"] for buy in self.buys()], ["k"])

    def test_failover_keeps_the_key(self) -> None:
        """The leader dies: the order is retried on the new leader with the same key, and the client sees success."""
        self.request("POST", "/orders", {"name": "Tux", "quantity": 1})
        self.network.cut(3)  # the followers see their connections to it reset, and elect one of them
        code, body, _ = self.request("POST", "/orders", {"name": "Tux", "quantity": 1}, {"Idempotency-Key": ["k"]})
        self.assertEqual((code, body), (200, {"data": {"order_number": 1}}))
        tracker = self.frontend.tracker
        new = tracker.leader
        self.assertIn(new, (1, 2))
        assert new is not None
        epoch = self.replicas[new].epoch
        self.assertGreater(epoch, self.epoch)
        self.assertTrue(self.replicas[new].serving_in(epoch))
        self.assertEqual((tracker.known, tracker.epoch), (new, epoch))
        self.assertEqual([fields["key"] for fields in self.sent(new, "order")], ["k"])
        self.assertEqual(self.request("GET", "/leader")[1], {"data": {"leader": new, "epoch": epoch, "via": new}})
        self.assertEqual([buy["key"] for buy in self.buys()][1:], ["k"])

    def test_leader_not_reachable_from_the_front_end(self) -> None:
        """
        The front-end alone is cut from the leader (which its followers
        still hear, so no election): calls go through a follower, which
        relays them, and /leader says so.
        """
        self.links[3].cut()
        code, body, _ = self.request("POST", "/orders", {"name": "Tux", "quantity": 2}, {"Idempotency-Key": ["k"]})
        self.assertEqual((code, body), (200, {"data": {"order_number": 0}}))
        via = self.relay()
        self.assertEqual(self.request("GET", "/leader")[1], {"data": {"leader": 3, "epoch": self.epoch, "via": via}})
        self.assertEqual(self.request("GET", "/orders/0")[1], {"data": {"number": 0, "name": "Tux", "quantity": 2}})
        self.assertEqual(self.sent(via, "order", "get"), [{"name": "Tux", "quantity": 2, "key": "k"}, {"number": 0}])
        self.assertEqual(self.replicas[3].local_order(0), {"number": 0, "name": "Tux", "quantity": 2})
        self.assertEqual(self.replicas[3].epoch, self.epoch, "no election")

    def test_handover_seen_without_a_failure(self) -> None:
        """
        The leader is stopped (it hands over first): the front-end's next
        look finds the new leader before any call fails, and orders go
        straight to it.
        """
        self.stop((3,))
        new = self.serving().id
        self.elapse(REFRESH + 0.1)
        epoch = self.replicas[new].epoch
        self.assertEqual(self.request("GET", "/leader")[1], {"data": {"leader": new, "epoch": epoch, "via": new}})
        self.assertEqual(self.request("POST", "/orders", {"name": "Tux", "quantity": 1})[0], 200)
        self.assertEqual((len(self.sent(new, "order")), self.sent(3, "order")), (1, []))
        self.assertEqual(self.frontend.metrics.failovers._value.get(), 0)

    def test_busy_leader_is_asked_again(self) -> None:
        """
        A leader that answers 503 (an order's record not committed within
        order.commit_timeout) keeps leading: it is asked again after
        RETRY_PAUSE, and the front-end does not look for another.
        """
        leader = self.replicas[3]
        place, busy = leader.place, [2]

        async def busy_place(*args: Any) -> dict[str, int]:
            if busy[0]:
                busy[0] -= 1
                raise Unavailable("no majority within 3.0 s: the order is not acknowledged")
            return await place(*args)

        self.patch(leader, "place", busy_place)
        d = self.post_order()
        self.assertEqual(len(self.sent(3, "order")), 1)
        self.clock.advance(RETRY_PAUSE * 0.9)
        self.settle()
        self.assertEqual(len(self.sent(3, "order")), 1)  # not before the pause
        self.clock.advance(RETRY_PAUSE * 0.2)
        self.settle()
        self.assertEqual(len(self.sent(3, "order")), 2)  # 503 again: twice if need be
        self.clock.advance(RETRY_PAUSE)
        self.settle()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(len(self.sent(3, "order")), 3)
        self.assertEqual((self.frontend.tracker.leader, self.frontend.tracker.discoveries), (3, 1))
        self.assertEqual(self.sent(1, "order", "get", "status")[1:], [])  # the status of the first discovery only
        self.assertEqual(self.sent(2, "order", "get", "status")[1:], [])
        self.assertEqual(self.frontend.metrics.failovers._value.get(), 2)

    def test_hung_leader(self) -> None:
        """A leader that stops answering (paused) is given half the deadline, then the order goes another way."""
        self.links[3].hold()
        d = self.post_order()
        self.elapse(2.4)
        self.assertNoResult(d)
        self.elapse(1.0)  # the try times out at 2.5 s; the leader's status is waited for 0.5 s; then a follower relays
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(len(self.sent(self.relay(), "order")), 1)
        self.assertEqual(self.replicas[3].local_order(0)["name"], "Tux")

    def test_no_replica_in_time(self) -> None:
        """No replica can serve within the deadline: 503 with Retry-After."""
        for link in self.links.values():
            link.cut()
        d = self.post_order()
        self.elapse(4.9, step=0.1)
        self.assertNoResult(d)
        self.elapse(0.2, step=0.1)
        response = self.successResultOf(d)
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"1"])
        self.assertIn(
            "no order replica could serve", json.loads(self.successResultOf(response.content()))["error"]["message"]
        )
        self.assertIsNone(self.frontend.tracker.leader)

    def test_errors_pass_through(self) -> None:
        """Business errors from the replicas and the catalog reach the client as they are."""
        self.assertEqual(self.request("POST", "/orders", {"name": "Unicorn", "quantity": 1})[0], 404)
        self.assertEqual(self.request("GET", "/products/Unicorn")[0], 404)
        self.assertEqual(self.request("GET", "/orders/7")[0], 404)

    def test_bad_requests(self) -> None:
        """Every malformed request is a 4xx JSON error and reaches no replica."""
        cases = [
            ("POST", "/orders", b"{", 400),
            ("POST", "/orders", b"[1]", 400),
            ("POST", "/orders", b'{"name": "Tux", "quantity": NaN}', 400),
            ("POST", "/orders", b'{"name": "Tux", "quantity": 1, "quantity": 2}', 400),
            ("POST", "/orders", {"name": "Tux", "quantity": True}, 400),
            ("POST", "/orders", {"name": "Tux", "quantity": 1.0}, 400),
            ("POST", "/orders", {"name": "Tux", "quantity": "1"}, 400),
            ("POST", "/orders", {"name": "Tux", "quantity": 0}, 400),
            ("POST", "/orders", {"name": "Tux", "quantity": 101}, 400),
            ("POST", "/orders", {"name": "Tux", "quantity": 1, "extra": 1}, 400),
            ("POST", "/orders", {"name": "", "quantity": 1}, 400),
            ("POST", "/orders", b'{"name": "\xff", "quantity": 1}', 400),
            ("DELETE", "/orders", None, 405),
            ("PUT", "/products/Tux", None, 405),
            ("GET", "/orders/-1", None, 400),
            ("GET", "/orders/1.5", None, 400),
            ("GET", "/orders", None, 400),
            ("GET", "/products/", None, 400),
            ("GET", "/products/%00", None, 400),
            ("GET", "/products/%ff", None, 400),
            ("GET", "/nowhere", None, 404),
            ("GET", "/products/Tux/more", None, 404),
        ]
        for method, path, body, code in cases:
            with self.subTest(method=method, path=path, body=body):
                got, envelope, _ = self.request(method, path, body)
                self.assertEqual((got, envelope["error"]["code"]), (code, code))
        self.assertEqual(self.sent(3, "order", "get"), [])

    def test_orders_methods_and_kinds(self) -> None:
        """/orders allows GET, HEAD and POST; /orders/<n> GET and HEAD; each request counts under its kind."""
        self.assertEqual(self.request("POST", "/orders", {"name": "Tux", "quantity": 1})[0], 200)
        code, _, headers = self.request("POST", "/orders/0", {"name": "Tux", "quantity": 1})
        self.assertEqual((code, headers.getRawHeaders("allow")), (405, ["GET, HEAD"]))
        code, _, headers = self.request("PUT", "/orders")
        self.assertEqual((code, headers.getRawHeaders("allow")), (405, ["GET, HEAD, POST"]))
        self.assertEqual(self.request("POST", "/orders/%FF")[0], 400)
        for path in ("/orders/0", "/orders/order_num=0", "/orders?order_number=0"):
            self.assertEqual(self.request("GET", path)[1]["data"]["number"], 0)
        self.assertEqual(self.request("GET", "/orders/0/more")[0], 404)
        requests = self.frontend.metrics.requests
        self.assertEqual(
            [requests.count(*key) for key in [("order", "200"), ("order", "405"), ("order", "400")]], [1, 1, 1]
        )
        self.assertEqual([requests.count("order_query", code) for code in ("200", "404")], [3, 1])
        self.assertEqual(requests.count("other", "405"), 1)

    def test_operator_endpoints(self) -> None:
        """/health, /cache and /metrics report the front-end's state."""
        self.request("GET", "/products/Tux")
        self.request("GET", "/products/Tux")
        self.assertEqual(self.request("GET", "/health")[1]["data"]["leader"], 3)
        self.assertEqual(self.request("GET", "/cache")[1]["data"]["keys"], ["Tux"])
        response = self.successResultOf(self.treq.get("http://store/metrics"))
        text = self.successResultOf(response.text())
        self.assertIn("toystore_frontend_cache_hits 1.0", text)
        self.assertIn('toystore_frontend_requests_total{code="200",kind="product"} 2.0', text)
        self.assertIn('toystore_frontend_request_seconds_count{kind="product"} 2.0', text)
        self.request("GET", "/products/x/y")
        self.request("PUT", "/orders")
        text = self.successResultOf(self.successResultOf(self.treq.get("http://store/metrics")).text())
        self.assertIn('toystore_frontend_requests_total{code="404",kind="product"} 1.0', text)
        self.assertIn('toystore_frontend_requests_total{code="405",kind="other"} 1.0', text)

    def test_subscribe_clears(self) -> None:
        """Every (re)subscription to the feed clears the cache: after the catalog connection drops and comes back."""
        self.request("GET", "/products/Tux")
        self.assertEqual(self.frontend.cache.keys(), ["Tux"])
        self.feed.cut()
        self.feed.restore()
        self.network.flush()
        self.assertEqual(self.frontend.cache.keys(), [])
        self.assertEqual(self.frontend.cache.stats.clears, 2)  # at start, and again
