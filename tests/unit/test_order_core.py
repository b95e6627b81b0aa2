"""
Tests for one replica's protocol core (:mod:`toystore.order.core.node`),
driven by hand through :mod:`.core_driver`: no reactor, no clock, no
transport.  Each test breaks if the rule it names is broken.
"""

from __future__ import annotations

from typing import Any

import pytest

from toystore.order.core import (
    Append,
    AppendReply,
    Handover,
    Message,
    NotServing,
    ProtocolError,
    Role,
    State,
    Timing,
    VoteReply,
    VoteRequest,
)

from .core_driver import DIGEST, Cluster, epoch_log, leader_record

ELECTION = Timing().election


def answer(c: Cluster, i: int, message: Message) -> list[Message]:
    """Deliver ``message`` to replica ``i``, make its writes durable, and take what it sends back."""
    c.take(i, c.nodes[i].receive(message, c.now))
    c.persist(i)
    return [m for _, m in c.drop(frm=i)]


def round_trip(c: Cluster, leader: int, follower: int) -> list[AppendReply]:
    """The leader's messages reach the follower, which writes them and answers."""
    c.deliver(frm=leader, to=follower)
    c.persist(follower)
    replies = [m for _, m in c.pending(frm=follower, to=leader)]
    c.deliver(frm=follower, to=leader)
    return replies  # type: ignore[return-value]


def catch_up(c: Cluster, leader: int, follower: int, limit: int = 10) -> list[AppendReply]:
    """Round trips until the leader has nothing more for the follower; fails after ``limit``."""
    replies: list[AppendReply] = []
    for _ in range(limit):
        if not c.pending(frm=leader, to=follower, kind=Append):
            return replies
        replies += round_trip(c, leader, follower)
    raise AssertionError(f"{follower} not caught up by {leader} in {limit} round trips: {replies[-3:]}")


def propose(c: Cluster, i: int, *payloads: Any) -> int:
    ready, index = c.nodes[i].propose(list(payloads), c.now)
    c.take(i, ready)
    return index


# -- elections ----------------------------------------------------------------------------------


def test_prevote_then_vote_asked_once_the_vote_is_on_disk() -> None:
    """A timed-out follower asks for pre-votes at its epoch + 1 without raising it; with a majority it runs for real."""
    c = Cluster()
    one = c.nodes[1]
    c.now = c.last[1].deadline
    c.tick(1)
    assert one.role is Role.PRE_CANDIDATE
    assert one.epoch == 0 and one.vote is None and c.unsynced[1] == [], "a pre-vote raises and writes nothing"
    asks = c.pending(frm=1, kind=VoteRequest)
    assert sorted(to for to, _ in asks) == [2, 3]
    assert all(m.pre and m.epoch == 1 and not m.handover for _, m in asks)

    c.deliver(frm=1, to=2)
    assert c.nodes[2].epoch == 0 and c.unsynced[2] == [], "granting a pre-vote raises and writes nothing"
    c.deliver(frm=2, to=1)  # with its own, a majority
    assert one.role is Role.CANDIDATE and one.epoch == 1 and one.vote == 1
    assert [w.state for w in c.last[1].writes] == [State(1, 1, True)]
    assert not any(isinstance(m, VoteRequest) for _, m in c.last[1].messages), "asked before its vote is on disk"
    assert c.pending(frm=1, kind=VoteRequest, where=lambda m: not m.pre) == []

    c.drop(frm=1)  # the pre-vote request to 3, late
    c.persist(1)
    votes = c.pending(frm=1, kind=VoteRequest)
    assert sorted(to for to, _ in votes) == [2, 3]
    assert all(not m.pre and m.epoch == 1 and (m.last_epoch, m.length) == (0, 0) for _, m in votes)
    assert one.counters.elections == 1

    c.deliver(frm=1, to=2)
    c.persist(2)
    c.deliver(frm=2, to=1)
    assert one.role is Role.LEADER and one.leader == 1 and one.counters.won == 1
    assert c.state[2] == State(1, 1, True)


def test_a_prevote_refused_by_a_majority_leaves_the_epoch_as_it_was() -> None:
    """Pre-votes refused (the others' logs are newer): back to follower, same epoch, nothing written."""
    c = Cluster(states={i: State(3) for i in (1, 2, 3)}, logs={1: [1], 2: [1, 2], 3: [1, 2]})
    one = c.nodes[1]
    c.campaign(1)
    assert one.role is Role.FOLLOWER and one.epoch == 3 and one.counters.elections == 0
    assert c.state[1] == State(3) and c.nodes[2].counters.prevotes_refused == 1
    assert c.nodes[2].epoch == 3 and c.nodes[3].epoch == 3


def test_one_vote_per_epoch_written_before_it_is_granted() -> None:
    """The vote goes to disk first, then out; a second candidate in the same epoch is refused, even after a restart."""
    c = Cluster()
    three = c.nodes[3]
    ready = c.take(3, three.receive(VoteRequest(1, 1, DIGEST, 0, 0), c.now))
    assert ready.writes[-1].state == State(1, 1, True)
    assert ready.messages == [], "granted before the vote is durable"
    c.persist(3)
    assert c.drop(frm=3) == [(1, VoteReply(1, 3, DIGEST, True))]

    assert answer(c, 3, VoteRequest(1, 2, DIGEST, 0, 0)) == [VoteReply(1, 3, DIGEST, False)]
    assert three.vote == 1 and three.counters.votes_refused == 1
    ready = c.take(3, three.receive(VoteRequest(1, 1, DIGEST, 0, 0), c.now))  # the same candidate asking again
    assert ready.writes == [] and ready.messages == [(1, VoteReply(1, 3, DIGEST, True))]

    restarted = Cluster(states={3: c.state[3]})
    assert answer(restarted, 3, VoteRequest(1, 2, DIGEST, 0, 0)) == [VoteReply(1, 3, DIGEST, False)]


@pytest.mark.parametrize(
    "last_epoch, length, granted",
    [
        (1, 5, False),  # a longer log, but its last record is older
        (2, 2, False),  # same last epoch, shorter
        (2, 3, True),
        (2, 4, True),
        (3, 1, True),  # a newer last record, shorter
    ],
)
def test_votes_only_for_a_log_at_least_as_up_to_date(last_epoch: int, length: int, granted: bool) -> None:
    """Pre-vote and vote both compare the candidate's durable log (last epoch, then length) with ours."""
    c = Cluster(states={3: State(2)}, logs={3: [1, 1, 2]})
    three = c.nodes[3]
    assert answer(c, 3, VoteRequest(3, 1, DIGEST, last_epoch, length, pre=True)) == [
        VoteReply(3, 3, DIGEST, granted, pre=True)
    ]
    assert three.epoch == 2
    assert answer(c, 3, VoteRequest(3, 1, DIGEST, last_epoch, length)) == [VoteReply(3, 3, DIGEST, granted)]
    assert three.epoch == 3 and c.state[3] == State(3, 1 if granted else None)
    assert three.counters.prevotes_refused == three.counters.votes_refused == (0 if granted else 1)


def test_lease_refuses_prevotes_and_votes_but_grants_a_handover() -> None:
    """A follower that heard its leader within an election timeout refuses to help depose it, unless asked to."""
    c = Cluster()
    c.elect(3)
    two = c.nodes[2]
    epoch, heard = two.epoch, c.now
    log = (two.log.last_epoch, len(two.log))

    c.now = heard + 0.5
    assert answer(c, 2, VoteRequest(epoch + 1, 1, DIGEST, *log, pre=True)) == [
        VoteReply(epoch + 1, 2, DIGEST, False, pre=True)
    ]
    assert two.counters.prevotes_refused == 1
    replies = answer(c, 2, VoteRequest(epoch + 1, 1, DIGEST, *log))
    assert [r.granted for r in replies] == [False]
    assert two.counters.votes_refused == 1
    assert (two.epoch, two.vote, two.leader, two.role) == (epoch, 3, 3, Role.FOLLOWER), "nothing changed"

    replies = answer(c, 2, VoteRequest(epoch + 1, 1, DIGEST, *log, handover=True))
    assert replies == [VoteReply(epoch + 1, 2, DIGEST, True)]
    assert c.state[2] == State(epoch + 1, 1)


def test_lease_ends_an_election_timeout_after_the_leader_was_last_heard() -> None:
    c = Cluster()
    c.elect(3)
    two = c.nodes[2]
    epoch, heard = two.epoch, c.now
    log = (two.log.last_epoch, len(two.log))
    c.now = heard + ELECTION * 0.99
    assert [r.granted for r in answer(c, 2, VoteRequest(epoch + 1, 1, DIGEST, *log, pre=True))] == [False]
    c.now = heard + ELECTION * 1.01
    assert [r.granted for r in answer(c, 2, VoteRequest(epoch + 1, 1, DIGEST, *log, pre=True))] == [True]


def test_a_replica_cut_off_cannot_depose_a_healthy_leader() -> None:
    """
    Cut off, it keeps asking for pre-votes at the same epoch; back, with a
    log as good as anyone's, it is refused (the leader's lease) and follows.
    """
    c = Cluster()
    c.elect(3)
    one, three = c.nodes[1], c.nodes[3]
    epoch = three.epoch
    c.run(5 * ELECTION, cut=[1])
    assert one.epoch == epoch and one.counters.elections == 0 and one.role is Role.PRE_CANDIDATE
    assert c.records[1] == c.records[3]
    for _ in range(100):
        if c.last[1].deadline <= c.now + 0.05:
            break
        c.run(0.05, cut=[1])
    c.run(0.05)  # 1's timer fires as it comes back: its pre-votes reach 2 and 3
    assert c.nodes[2].counters.prevotes_refused == 1 and three.counters.prevotes_refused == 1
    assert three.role is Role.LEADER and three.epoch == epoch and three.counters.stepped_down == 0
    assert one.epoch == epoch and one.role is Role.FOLLOWER and one.leader == 3
    propose(c, 3, "after 1 came back")
    c.run(0.5)
    assert c.records[1] == c.records[3] and "after 1 came back" in c.records[1]
    assert three.counters.handovers == 0, "the highest id leading hands over to no one"


# -- the log and the commit point ----------------------------------------------------------------


def test_a_new_leader_serves_only_once_its_leader_record_is_committed() -> None:
    """
    The leader record goes first; no orders and no reads until it is durable
    on a majority, the leader's own copy counting only once it is durable.
    """
    c = Cluster()
    three = c.nodes[3]
    c.campaign(3)
    assert three.role is Role.LEADER and three.epoch == 1
    assert [(w.state, w.truncate, w.start, w.payloads) for w in c.unsynced[3]] == [
        (None, None, 0, (leader_record(1, 3),))
    ]
    assert not three.serving
    with pytest.raises(NotServing):
        three.propose(["too soon"], c.now)
    with pytest.raises(NotServing):
        three.read("too soon", c.now)
    appends = c.pending(frm=3, kind=Append)
    assert sorted(to for to, _ in appends) == [1, 2]
    assert all(m.epochs == (1,) and m.payloads == (leader_record(1, 3),) for _, m in appends)

    c.deliver(frm=3, to=1)
    assert c.pending(frm=1) == [], "acked before it is durable"
    c.persist(1)
    c.deliver(frm=1, to=3)
    assert three.commit == 0 and not three.serving, "its own copy is not durable yet: one copy of three"
    c.persist(3)
    assert three.commit == 1 and three.serving
    assert propose(c, 3, "order") == 1

    with pytest.raises(NotServing) as refused:
        c.nodes[1].propose(["x"], c.now)
    assert refused.value.leader == 3


def test_a_leader_commits_an_older_epochs_record_only_with_one_of_its_own() -> None:
    """
    Raft's figure 8: a record of epoch 2 on a majority is not committed by
    the leader of epoch 3 by counting copies, only with a record of epoch 3.
    """
    c = Cluster(
        timing=Timing(max_batch=1),
        states={1: State(2, 1), 2: State(2), 3: State(2)},
        logs={1: [1, 2], 2: [1], 3: [1]},
    )
    one = c.nodes[1]
    c.now = c.last[1].deadline
    c.tick(1)
    for _ in range(10):
        c.drop(to=3)
        c.deliver(kind=(VoteRequest, VoteReply))
        c.persist_all()
    assert one.role is Role.LEADER and one.epoch == 3 and one.log == epoch_log([1, 2, 3])
    c.persist(1)
    c.drop(to=3)
    trips = 0
    while one.progress[2].match < 2 and trips < 5:
        round_trip(c, 1, 2)
        trips += 1
    assert one.progress[2].match == 2 and one.progress[2].voter, "record 1, of epoch 2, is on 1 and 2"
    assert one.commit == 0
    round_trip(c, 1, 2)
    assert one.progress[2].match == 3
    assert one.commit == 3 and one.serving


def test_a_follower_acks_only_durable_records_and_replaces_a_conflicting_tail() -> None:
    c = Cluster(states={1: State(2)}, logs={1: [1, 1, 2, 2]})
    one = c.nodes[1]
    old = list(c.records[1])
    append = Append(3, 3, DIGEST, 2, 1, (3, 3), 2, 0).with_payloads(("a", "b"))
    ready = c.take(1, one.receive(append, c.now))
    assert ready.messages == []
    state, records = ready.writes
    assert state.state == State(3, None, True)
    assert (records.truncate, records.start, records.payloads) == (2, 2, ("a", "b"))
    assert c.records[1] == old[:2] + ["a", "b"]
    assert one.log == epoch_log([1, 1, 3, 3]) and one.commit == 2

    c.persist(1, state.ticket)
    assert c.pending(frm=1) == [], "the records are not durable yet"
    c.persist(1)
    (to, reply), = c.drop(frm=1)
    assert to == 3 and reply.accepted and reply.length == 4 and reply.epoch == 3

    # the same records again: nothing to write, acked at once
    ready = c.take(1, one.receive(append, c.now))
    assert ready.writes == [] and [m.accepted for _, m in ready.messages] == [True]
    c.drop(frm=1)

    # records that do not follow ours: refused, nothing written
    ready = c.take(1, one.receive(Append(3, 3, DIGEST, 6, 3, (3,), 2, 0).with_payloads(("c",)), c.now))
    assert ready.writes == [] and [(m.accepted, m.length) for _, m in ready.messages] == [(False, 4)]


def test_a_follower_never_replaces_a_committed_record() -> None:
    c = Cluster(states={1: State(1)}, logs={1: [1, 1, 1]})
    one = c.nodes[1]
    answer(c, 1, Append(1, 2, DIGEST, 3, 1, (), 3, 0))
    assert one.commit == 3
    with pytest.raises(ProtocolError):
        one.receive(Append(2, 3, DIGEST, 1, 1, (2, 2), 3, 0).with_payloads(("x", "y")), c.now)


def test_records_without_their_contents_are_an_error() -> None:
    c = Cluster()
    with pytest.raises(ProtocolError):
        c.nodes[1].receive(Append(1, 3, DIGEST, 0, 0, (1,), 0, 0), c.now)


def test_the_leader_probes_back_over_a_divergent_tail_in_few_round_trips() -> None:
    """A follower with 100 records of a lost epoch: its hint skips whole epochs, not one record at a time."""
    c = Cluster(
        states={i: State(4) for i in (1, 2, 3)},
        logs={1: [1, 1] + [3] * 100, 2: [1, 1], 3: [1, 1, 2, 2, 2]},
    )
    c.elect(3, cut=[1])  # 1 would refuse: its last record's epoch, 3, is newer than 3's
    one, three = c.nodes[1], c.nodes[3]
    assert three.epoch == 5 and three.commit == 6
    c.now += Timing().heartbeat
    c.tick(3)
    c.drop(to=2)
    replies = catch_up(c, 3, 1, limit=3)
    assert not replies[0].accepted and replies[0].length == 2, "the hint: where its epochs are at most the leader's"
    assert [w.truncate for w in c.writes[1] if w.truncate is not None] == [2]
    assert one.log == three.log == epoch_log([1, 1, 2, 2, 2, 5])
    assert c.records[1] == c.records[3] and three.progress[1].match == 6


def test_a_leader_that_hears_from_no_majority_steps_down() -> None:
    """Check-quorum: one follower answering is enough; none for an election timeout, and the leader steps down."""
    c = Cluster()
    c.elect(3)
    three = c.nodes[3]
    epoch = three.epoch
    c.run(3 * ELECTION, cut=[1])
    assert three.role is Role.LEADER, "2 still answers"
    last = three.progress[2].heard
    c.now = last + ELECTION * 0.95
    c.tick(3)
    c.drop(frm=3)
    assert three.role is Role.LEADER
    c.now = last + ELECTION * 1.01
    c.tick(3)
    assert three.role is Role.FOLLOWER and three.leader is None and three.epoch == epoch
    assert three.counters.stepped_down == 1 and not three.serving
    assert any("majority" in note for note in c.last[3].notes)
    with pytest.raises(NotServing):
        three.propose(["x"], c.now)


def test_a_stale_leader_is_refused_and_steps_down_on_the_answer() -> None:
    c = Cluster()
    c.elect(3)
    three = c.nodes[3]
    old = three.epoch
    c.elect(2, cut=[3])  # 3 hears nothing of it
    assert c.nodes[2].epoch == old + 1
    assert three.role is Role.LEADER and three.serving, "it does not know yet"
    propose(c, 3, "late")
    c.drop(frm=3, to=2)
    c.deliver(frm=3, to=1)
    (to, reply), = c.pending(frm=1)
    assert to == 3 and not reply.accepted and reply.epoch == old + 1
    assert "late" not in c.records[1] and c.nodes[1].leader == 2 and c.nodes[1].epoch == old + 1
    c.deliver(frm=1, to=3)
    assert three.role is Role.FOLLOWER and three.epoch == old + 1 and not three.serving
    c.persist(3)
    assert c.state[3].epoch == old + 1


def test_a_message_from_a_differently_configured_replica_is_dropped() -> None:
    c = Cluster()
    two = c.nodes[2]
    for message in (
        Append(7, 1, "other", 0, 0, (7,), 0, 0).with_payloads(("x",)),
        VoteRequest(7, 1, "other", 7, 9),
        Handover(7, 1, "other"),
    ):
        ready = c.take(2, two.receive(message, c.now))
        assert ready.writes == [] and ready.messages == []
        assert any("differs" in note for note in ready.notes)
    assert (two.epoch, two.vote, two.leader, len(two.log)) == (0, None, None, 0)
    assert two.counters.digest_refused == 3


# -- reads ---------------------------------------------------------------------------------------


def test_a_read_waits_for_a_majority_to_answer_a_round_sent_after_it() -> None:
    c = Cluster()
    c.elect(3)
    three = c.nodes[3]
    commit = three.commit
    c.take(3, three.read("r1", c.now))
    assert c.reads[3] == []
    first = c.pending(frm=3, kind=Append)
    assert sorted(to for to, _ in first) == [1, 2] and all(m.round == 1 for _, m in first)

    c.take(3, three.read("r2", c.now))
    assert c.pending(frm=3) == first, "a round is under way: r2 waits for the next"
    round_trip(c, 3, 1)
    assert c.reads[3] == [("r1", commit)], "3 and 1 answered round 1"
    assert sorted(to for to, m in c.pending(frm=3) if m.round == 2) == [1, 2]

    c.deliver(frm=3, to=2, where=lambda m: m.round == 1)
    c.deliver(frm=2, to=3)
    assert c.reads[3] == [("r1", commit)], "an answer to a round sent before r2 does not confirm r2"
    round_trip(c, 3, 2)
    assert c.reads[3] == [("r1", commit), ("r2", commit)]

    with pytest.raises(NotServing) as refused:
        c.nodes[1].read("r3", c.now)
    assert refused.value.leader == 3


def test_a_leader_that_steps_down_fails_its_pending_reads() -> None:
    c = Cluster()
    c.elect(3)
    three = c.nodes[3]
    c.take(3, three.read("r", c.now))
    c.drop(frm=3)
    c.now += ELECTION * 1.01
    c.tick(3)
    assert three.role is Role.FOLLOWER
    assert c.failed_reads[3] == ["r"] and c.reads[3] == []


# -- a lost leader, and handing over ------------------------------------------------------------


@pytest.mark.parametrize("leader, first, second", [(1, 3, 2), (3, 2, 1)])
def test_when_the_leader_is_lost_the_highest_id_campaigns_first(leader: int, first: int, second: int) -> None:
    stagger = Timing().stagger
    c = Cluster()
    c.elect(leader)
    epoch = c.nodes[leader].epoch
    lost = c.now
    c.take(first, c.nodes[first].leader_lost(lost))
    c.take(second, c.nodes[second].leader_lost(lost))
    assert c.last[first].deadline == lost
    assert c.last[second].deadline == pytest.approx(lost + stagger)
    c.tick(second)
    assert c.nodes[second].role is Role.FOLLOWER
    c.tick(first)
    assert c.nodes[first].role is Role.PRE_CANDIDATE
    c.settle(cut=[leader])
    assert c.nodes[first].role is Role.LEADER and c.nodes[first].epoch == epoch + 1
    assert c.nodes[second].leader == first


def test_a_follower_that_saw_the_reset_alone_asks_again_soon() -> None:
    """The other follower still in its lease refuses; the campaigner tries again within a couple of heartbeats."""
    heartbeat = Timing().heartbeat
    c = Cluster()
    c.elect(1)
    lost = c.now
    c.take(3, c.nodes[3].leader_lost(lost))
    c.tick(3)
    c.deliver(frm=3)
    c.deliver(to=3)
    assert c.nodes[3].role is Role.FOLLOWER and c.nodes[3].epoch == c.nodes[1].epoch
    assert c.last[3].deadline <= lost + 2 * heartbeat


def test_hand_over_stops_serving_catches_up_the_target_which_wins_through_the_lease() -> None:
    c = Cluster()
    c.elect(1)
    one, two, three = c.nodes[1], c.nodes[2], c.nodes[3]
    epoch = one.epoch
    propose(c, 1, "a")
    propose(c, 1, "b")
    c.persist(1)
    round_trip(c, 1, 2)  # 3 has not had them yet
    assert one.commit == len(one.log) and one.progress[3].match < len(one.log)

    c.take(1, one.hand_over(c.now, to=3))
    assert not one.serving and one.handover_to == 3
    with pytest.raises(NotServing):
        one.propose(["c"], c.now)
    assert c.pending(kind=Handover) == [], "3 is not caught up"
    catch_up(c, 1, 3)
    assert c.records[3] == c.records[1]
    (to, handover), = c.pending(kind=Handover)
    assert to == 3 and handover.epoch == epoch

    c.deliver(kind=Handover)
    assert three.role is Role.CANDIDATE and three.epoch == epoch + 1, "no pre-vote"
    assert c.pending(frm=3) == []
    c.persist(3)
    asks = c.pending(frm=3, kind=VoteRequest)
    assert sorted(to for to, _ in asks) == [1, 2] and all(m.handover and not m.pre for _, m in asks)
    c.deliver(frm=3, to=2)  # 2 heard from 1 just now
    c.persist(2)
    assert two.counters.votes_refused == 0
    c.deliver(frm=2, to=3)
    assert three.role is Role.LEADER and three.epoch == epoch + 1
    c.settle()
    assert one.role is Role.FOLLOWER and one.leader == 3 and three.serving
    assert one.counters.handovers == 1


def test_a_handover_that_does_not_win_is_given_up_after_an_election_timeout() -> None:
    c = Cluster()
    c.elect(1)
    one = c.nodes[1]
    epoch = one.epoch
    c.take(1, one.hand_over(c.now, to=3))
    assert c.drop(kind=Handover), "3 was in sync: told at once"
    c.run(ELECTION * 0.95)
    assert not one.serving and one.handover_to == 3
    c.run(ELECTION * 0.1)
    assert one.role is Role.LEADER and one.epoch == epoch and one.handover_to is None and one.serving
    assert any("gave up" in note for note in c.notes)
    propose(c, 1, "after")
    c.run(ELECTION * 1.5)
    assert one.serving and not c.pending(kind=Handover), "the seed's rule waits before trying again"


def test_a_replica_that_lost_an_uncommitted_leadership_refuses_handovers_for_two_to_the_k_timeouts() -> None:
    c = Cluster()
    three = c.nodes[3]

    def win() -> None:
        if three.role is not Role.CANDIDATE:
            c.now = max(c.now, c.last[3].deadline)
            c.tick(3)
            c.take(3, three.receive(VoteReply(three.epoch + 1, 1, DIGEST, True, pre=True), c.now))
        c.persist(3)
        c.take(3, three.receive(VoteReply(three.epoch, 1, DIGEST, True), c.now))
        c.persist(3)
        c.drop(frm=3)
        assert three.role is Role.LEADER

    def lose() -> float:
        c.take(3, three.receive(AppendReply(three.epoch + 1, 1, DIGEST, False, 0, 0, 0), c.now))
        c.persist(3)
        assert three.role is Role.FOLLOWER
        return c.now

    def asked_to_run() -> bool:
        """Replica 2 leads the current epoch and hands over to 3."""
        c.take(3, three.receive(Append(three.epoch, 2, DIGEST, len(three.log), three.log.last_epoch, (), 0, 0), c.now))
        c.take(3, three.receive(Handover(three.epoch, 2, DIGEST), c.now))
        c.drop(frm=3)
        return three.role is Role.CANDIDATE

    win()
    lost = lose()  # its leader record never committed: k = 1
    c.now = lost + 1.9 * ELECTION
    assert not asked_to_run() and three.counters.handovers_refused == 1
    c.now = lost + 2.1 * ELECTION
    assert asked_to_run()
    win()
    lost = lose()  # k = 2
    c.now = lost + 3.9 * ELECTION
    assert not asked_to_run() and three.counters.handovers_refused == 2
    c.now = lost + 4.1 * ELECTION
    assert asked_to_run()
    win()
    c.take(3, three.receive(AppendReply(three.epoch, 1, DIGEST, True, len(three.log), three.epoch, 0), c.now))
    assert three.serving
    lose()  # its leader record was committed: no penalty, and the count starts again
    assert asked_to_run() and three.counters.handovers_refused == 2
    win()
    lost = lose()  # k = 1 again
    c.now = lost + 2.1 * ELECTION
    assert asked_to_run() and three.counters.handovers_refused == 2


def test_seed_rule_a_lower_id_leader_hands_over_to_the_highest_once_it_is_in_sync() -> None:
    heartbeat = Timing().heartbeat
    c = Cluster()
    c.elect(1)
    one, three = c.nodes[1], c.nodes[3]
    propose(c, 1, "a")
    c.persist(1)
    round_trip(c, 1, 2)
    c.now += heartbeat
    c.tick(1)
    assert c.pending(kind=Handover) == [], "3 lacks a record"
    assert one.serving
    catch_up(c, 1, 3)
    c.settle()
    c.now += heartbeat
    c.tick(1)
    assert [to for to, _ in c.pending(kind=Handover)] == [3]
    assert not one.serving and one.counters.handovers == 1
    c.settle()
    assert three.role is Role.LEADER and one.leader == 3 and three.epoch == one.epoch


def test_a_deposed_leader_steps_down_at_once_and_fails_its_reads() -> None:
    """Told a newer leader exists, a leader becomes a follower with no known leader; its queued reads fail."""
    c = Cluster()
    c.elect(3)
    three = c.nodes[3]
    epoch = three.epoch
    c.take(3, three.read("r", c.now))
    ready = c.take(3, three.deposed(c.now))
    assert three.role is Role.FOLLOWER and three.leader is None and three.epoch == epoch and not three.serving
    assert ready.failed_reads == ["r"] and three.counters.stepped_down == 1
    assert c.take(1, c.nodes[1].deposed(c.now)).notes == [], "a follower has nothing to give up"


def test_seed_rule_passes_by_a_replica_the_shell_calls_unfit() -> None:
    """With 3 unfit (it cannot reach the catalog), 1 hands over to 2, the highest fit id; with none fit, to no one."""
    heartbeat = Timing().heartbeat
    c = Cluster()
    c.elect(1)
    one, two = c.nodes[1], c.nodes[2]
    one.unfit = frozenset({2, 3})
    propose(c, 1, "a")
    c.settle()
    c.now += heartbeat
    c.tick(1)
    assert c.pending(kind=Handover) == [] and one.serving, "no fit replica above 1"
    one.unfit = frozenset({3})
    c.now += heartbeat
    c.tick(1)
    assert [to for to, _ in c.pending(kind=Handover)] == [2]
    c.settle()
    assert two.role is Role.LEADER and one.leader == 2


# -- a replica that lost its disk -----------------------------------------------------------------


def test_a_replica_that_lost_its_disk_counts_for_nothing_until_it_holds_the_commit_point() -> None:
    """It neither campaigns nor votes; its copies do not count until it holds the leader's commit point."""
    c = Cluster(
        timing=Timing(max_batch=3),
        states={1: State(voter=False), 2: State(1), 3: State(1)},
        logs={2: [1, 1, 1], 3: [1, 1, 1]},
    )
    one, three = c.nodes[1], c.nodes[3]
    c.now = c.last[1].deadline + 5 * ELECTION
    c.tick(1)
    assert one.role is Role.FOLLOWER and c.pending(frm=1) == [] and one.counters.elections == 0, "no campaign"
    assert [r.granted for r in answer(c, 1, VoteRequest(2, 2, DIGEST, 1, 3))] == [False]
    assert [r.granted for r in answer(c, 1, VoteRequest(2, 2, DIGEST, 1, 3, pre=True))] == [False]

    c.elect(3, cut=[1])
    assert three.epoch == 2 and three.commit == 4
    propose(c, 3, "a")  # 2 is gone from here on: only 1 could make "a" committed
    c.persist(3)
    c.drop(to=2)
    c.now += Timing().heartbeat
    c.tick(3)
    c.drop(to=2)

    replies = round_trip(c, 3, 1)
    assert [(r.accepted, r.voter) for r in replies] == [(False, False)]
    replies = round_trip(c, 3, 1)  # records 0..2: short of the commit point
    assert [(r.accepted, r.length, r.voter) for r in replies] == [(True, 3, False)]
    assert not one.voter and not any(w.state and w.state.voter for w in c.writes[1])
    replies = round_trip(c, 3, 1)  # records 3..4: past it
    assert [(r.accepted, r.length, r.voter) for r in replies] == [(True, 5, False)]
    assert three.progress[1].match == 5 and three.commit == 4, "a non-voter's copy does not count"
    assert c.writes[1][-1].state == State(2, 3, True), "now it holds the commit point: a voter again"
    assert not c.state[1].voter
    c.persist(1)
    assert one.voter and c.state[1].voter
    c.now += Timing().heartbeat
    c.tick(3)
    c.drop(to=2)
    replies = round_trip(c, 3, 1)
    assert [r.voter for r in replies] == [True]
    assert three.commit == 5


def test_a_replica_that_lost_its_disk_votes_only_once_it_holds_every_committed_record() -> None:
    """
    Record 1 was committed in epoch 1 on replicas 1 and 2; then replica 1
    lost its disk.  Replica 2 wins epoch 2 (with 3's vote) but has committed
    nothing of its own epoch yet: its commit point, 0, says nothing about
    what was committed before.  Replica 1 holding that point (it has record
    0 only) must not make it a voter: with replica 3, which never had record
    1, it would elect a leader without a committed record (Leader
    Completeness, thesis 3.6).
    """
    c = Cluster(
        timing=Timing(max_batch=1),
        states={1: State(voter=False), 2: State(1, 2), 3: State(1, 2)},
        logs={2: [1, 1], 3: [1]},
    )
    one, two = c.nodes[1], c.nodes[2]
    committed = c.records[2][1]

    c.campaign(2)
    assert two.role is Role.LEADER and two.epoch == 2 and two.commit == 0
    c.drop(to=3)
    for _ in range(2):  # a refused probe, then record 0 alone
        c.deliver(frm=2, to=1)
        c.persist(1)
        c.deliver(frm=1, to=2)
    assert len(c.records[1]) == 1
    c.persist_all()
    c.network.clear()  # replica 2 stops here

    c.run(3 * ELECTION, cut=[2])
    for i in (1, 3):
        if c.nodes[i].role is Role.LEADER:
            assert c.records[i][1] == committed, f"replica {i} leads epoch {c.nodes[i].epoch} without record 1"
    c.run(3 * ELECTION)  # replica 2 is back
    assert all(len(c.records[i]) > 1 and c.records[i][1] == committed for i in (1, 2, 3)), c.records
    assert one.voter
