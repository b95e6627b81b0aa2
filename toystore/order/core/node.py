"""
One replica's part in the protocol: Raft's election and commit rules, with
no I/O.

A :class:`Node` is driven by events: a message arrived (:meth:`receive`),
time passed (:meth:`tick`), a write became durable (:meth:`persisted`), the
leader was asked to log records (:meth:`propose`) or to confirm it still
leads before a read (:meth:`read`), the stream to the leader was reset
(:meth:`leader_lost`), a newer leader showed itself elsewhere
(:meth:`deposed`).  Each returns a :class:`Ready`: writes to make
durable, messages to send, reads that may now be answered, and the time of
the next :meth:`tick`.  Given the same events it returns the same effects
(its randomness is the ``rng`` it is given), so a simulator can run many
nodes in one process and replay any run from its seed.

A message that depends on a write (a vote, a raised epoch, an accepted
record) is held until the shell reports that write durable; only a leader's
records go out at once, before its own fsync (its own copy counts toward a
commit once durable, like any other).

The rules, each enforced in one place (docs/architecture.rst lists them):

- epochs only grow; a message from an older epoch is refused
  (:meth:`receive`), one from a newer epoch makes this replica a follower
  of it first;
- one vote per epoch, on disk before it is announced, and only for a
  candidate whose durable log is at least as up to date (:meth:`_vote`,
  :meth:`_up_to_date`);
- a replica that heard from a leader within the minimum election timeout
  refuses votes and pre-votes, unless the leader itself asked for the
  election (a handover) (:meth:`_in_lease`);
- a replica asks for a pre-vote before raising its epoch (:meth:`_campaign`);
- a majority of the replicas in the cluster file elects, and commits;
  the commit point moves only over a record of the leader's own epoch
  (:meth:`_advance_commit`);
- a follower takes records only after the record before them matches, and
  truncates only what conflicts, never below its commit point
  (:meth:`_accept`);
- a new leader serves nothing until its leader record is committed
  (:attr:`serving`), and answers a read only after a majority has answered
  a round it sent after the read arrived (:meth:`read`);
- a leader that has not heard from a majority for an election timeout steps
  down (:meth:`_check_quorum`);
- a replica that lost its disk does not vote, campaign or count toward a
  commit until it holds the leader's commit point (:attr:`State.voter`).
"""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .effects import NEVER, Ready, State, Timing, Write
from .epochs import EpochLog
from .messages import Append, AppendReply, Handover, Message, VoteReply, VoteRequest
from .progress import Progress, majority, quorum_value

#: the protocol's clock when the shell gives none
DEFAULT_TIMING = Timing()


class Role(enum.Enum):
    """The four roles of a replica, switched only by ``Node._become``."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class NotServing(Exception):
    """This replica cannot take orders or answer reads now; ``leader`` is the one it knows, if any."""

    def __init__(self, reason: str, leader: int | None) -> None:
        super().__init__(reason)
        self.leader = leader


class ProtocolError(Exception):
    """A rule that must never break did: a bug, or a disk that lied."""


@dataclass(slots=True)
class Counters:
    """What a replica has done, for ``/metrics`` and ``/health``."""

    elections: int = 0
    won: int = 0
    prevotes_refused: int = 0
    votes_refused: int = 0
    handovers: int = 0
    handovers_refused: int = 0
    stepped_down: int = 0
    digest_refused: int = 0


class Node:
    """
    One replica's protocol state.

    :param id: this replica's id.
    :param ids: every replica's id, from the cluster file (this one's included).
    :param digest: the digest of that list, carried by every message.
    :param state: the epoch, vote and voter flag read from disk.
    :param log: the epochs of the records on disk (all of them durable).
    :param leader_record: makes the payload of the record that opens a
        leader's epoch: ``leader_record(epoch, id)``.
    :param rng: the only source of randomness (election timeouts).
    :param now: the time of the start.
    """

    def __init__(
        self,
        id: int,
        ids: Iterable[int],
        digest: str,
        state: State,
        log: EpochLog,
        leader_record: Callable[[int, int], Any],
        rng: random.Random,
        now: float,
        timing: Timing = DEFAULT_TIMING,
    ) -> None:
        self.id = id
        self.ids = tuple(sorted(set(ids)))
        if id not in self.ids:
            raise ValueError(f"replica {id} is not in the replica list {list(self.ids)}")
        self.peers = tuple(i for i in self.ids if i != id)
        self.quorum = majority(len(self.ids))
        self.digest = digest
        self.timing = timing
        self.rng = rng
        self._leader_record = leader_record

        self.epoch = state.epoch
        self.vote = state.vote
        self.voter = state.voter
        self.log = log
        self.durable = len(log)
        self.commit = 0
        self.role = Role.FOLLOWER
        self.leader: int | None = None
        self.counters = Counters()

        # follower
        self._heard_leader = -NEVER
        self._election_deadline = NEVER
        self._leader_lost_at = -NEVER
        self._catch_up_to: int | None = None  # a non-voter becomes one once it holds this
        # candidates
        self._votes: dict[int, bool] = {}
        self._handover_campaign = False
        # leader
        self.progress: dict[int, Progress] = {}
        self.leader_index = -1
        self._leader_since = NEVER
        self._heartbeat_due = NEVER
        self.round = 0
        self._reads: deque[tuple[int, Any, int]] = deque()  # (round, context, commit point)
        self.handover_to: int | None = None
        #: peers the shell says cannot lead well now (they cannot reach the catalog): the seed's rule passes them by
        self.unfit: frozenset[int] = frozenset()
        self._handover_deadline = NEVER
        self._handover_sent = False
        self._auto_handover_after = -NEVER
        self._auto_handover_aborts = 0
        # handovers this replica refuses after losing leaderships that never committed
        self._losses = 0
        self._refuse_handover_until = -NEVER

        # writes under way, and messages that wait for them
        self._ticket = 0
        self._unwritten: deque[tuple[int, int]] = deque()  # (ticket, log length it makes durable)
        self._held: deque[tuple[int, int, Message]] = deque()  # (ticket, to, message)
        self._ready = Ready()
        self._reset_election(now)

    # -- what the shell asks ----------------------------------------------------------

    @property
    def serving(self) -> bool:
        """
        Whether this replica may take orders and answer reads: it leads, its
        leader record is committed, and it is not handing over.
        """
        return self.role is Role.LEADER and self.commit > self.leader_index and self.handover_to is None

    def status(self) -> dict[str, Any]:
        """The protocol's state, for ``/health`` and ``status``."""
        return {
            "role": self.role.value,
            "epoch": self.epoch,
            "vote": self.vote,
            "leader": self.leader,
            "length": len(self.log),
            "durable": self.durable,
            "commit": self.commit,
            "voter": self.voter,
            "serving": self.serving,
            "elections": self.counters.elections,
            "prevotes_refused": self.counters.prevotes_refused,
            "handovers": self.counters.handovers,
        }

    def lag(self) -> dict[int, int]:
        """A leader's view of how many records each follower lacks."""
        return {peer: len(self.log) - progress.match for peer, progress in self.progress.items()}

    # -- events ------------------------------------------------------------------------

    def tick(self, now: float) -> Ready:
        """Time has reached ``now``: campaign, heartbeat, step down or give up a handover, as due."""
        if self.role is Role.LEADER:
            if now >= self._handover_deadline:
                self._abort_handover(now)
            if self._check_quorum(now) and now >= self._heartbeat_due:
                self._broadcast(now)
            if self.role is Role.LEADER:
                self._maybe_hand_over(now)
        elif now >= self._election_deadline:
            self._campaign(now, pre=True)
        return self._flush()

    def receive(self, message: Message, now: float) -> Ready:
        """A message from another replica arrived."""
        self._receive(message, now)
        return self._flush()

    def persisted(self, ticket: int, now: float) -> Ready:
        """Every write up to ``ticket`` is durable."""
        while self._unwritten and self._unwritten[0][0] <= ticket:
            _, length = self._unwritten.popleft()
            self.durable = max(self.durable, min(length, len(self.log)))
        while self._held and self._held[0][0] <= ticket:
            _, to, message = self._held.popleft()
            self._ready.messages.append((to, message))
        if self.role is Role.LEADER:
            self._advance_commit(now)
        elif self._catch_up_to is not None and self.durable >= self._catch_up_to:
            self._become_voter()
        return self._flush()

    def propose(self, payloads: list[Any], now: float) -> tuple[Ready, int]:
        """
        Log records (a leader that serves only): returns the effects and the
        index of the first record.  The records are committed once the
        commit point passes them.
        """
        if not self.serving:
            raise NotServing(self._not_serving_reason(), self._known_leader())
        start = len(self.log)
        self._append_own(payloads)
        self._send_records(now)
        return self._flush(), start

    def read(self, context: Any, now: float) -> Ready:
        """
        A read arrived: the returned or a later :class:`Ready` lists
        ``(context, commit point)`` once a majority has answered a round sent
        after now (this replica still led then), or ``context`` among the
        failed reads if it stops leading first.
        """
        if not self.serving:
            raise NotServing(self._not_serving_reason(), self._known_leader())
        self._reads.append((self.round + 1, context, self.commit))
        if self._confirmed_round() >= self.round:  # no round under way: start one now
            self.round += 1
            self._broadcast(now)
        self._release_reads()
        return self._flush()

    def leader_lost(self, now: float) -> Ready:
        """
        The connection to the leader was reset (its process is gone, most
        likely): stop counting on it and campaign soon, the highest id first.
        """
        if self.role is Role.FOLLOWER and self.leader is not None:
            rank = sum(1 for peer in self.peers if peer > self.id and peer != self.leader)
            self.leader = None
            self._heard_leader = -NEVER
            self._leader_lost_at = now
            self._election_deadline = now + rank * self.timing.stagger
        return self._flush()

    def deposed(self, now: float) -> Ready:
        """
        The shell has seen that a newer leader exists (the catalog refused
        this leader's epoch): stop leading now rather than after an election
        timeout without a majority.  Stepping down is always safe.
        """
        if self.role is Role.LEADER:
            self._ready.notes.append(f"replica {self.id} learnt of a newer leader than epoch {self.epoch}")
            self.leader = None
            self._become(Role.FOLLOWER, now)
            self._reset_election(now)
        return self._flush()

    def hand_over(self, now: float, to: int | None = None) -> Ready:
        """
        Hand leadership to ``to`` (default: the most up-to-date voter, highest
        id first): stop taking orders, bring it up to date, tell it to run.
        Given up after an election timeout if it has not won.
        """
        if self.role is Role.LEADER and self.handover_to is None:
            target = to if to is not None else self._best_successor()
            if target is not None and target in self.progress:
                self._start_handover(target, now)
        return self._flush()

    # -- receiving -----------------------------------------------------------------------

    def _receive(self, message: Message, now: float) -> None:
        if message.digest != self.digest:
            self.counters.digest_refused += 1
            self._ready.notes.append(
                f"refused a message from replica {message.sender}: its list of replicas differs from ours "
                f"(digest {message.digest!r}, ours {self.digest!r})"
            )
            return
        if message.sender not in self.peers:
            return
        if isinstance(message, VoteRequest):
            self._vote(message, now)
            return
        if message.epoch > self.epoch and not (isinstance(message, VoteReply) and message.pre):
            self._become_follower(message.epoch, now, leader=None)
        if message.epoch < self.epoch:
            if isinstance(message, (Append, Handover)):
                # a leader from an older epoch: tell it, so that it steps down
                self._send(message.sender, self._reply(accepted=False, length=0, last_epoch=0, round=0))
            return
        if isinstance(message, VoteReply):
            self._tally(message, now)
        elif isinstance(message, Append):
            self._append(message, now)
        elif isinstance(message, AppendReply):
            if self.role is Role.LEADER:
                self._replied(message, now)
        elif isinstance(message, Handover):
            self._handover_asked(message, now)

    # -- votes -----------------------------------------------------------------------------

    def _in_lease(self, now: float) -> bool:
        """Whether this replica heard from a live leader within the minimum election timeout (a leader: it is one)."""
        if self.role is Role.LEADER:
            return True
        return self.leader is not None and now - self._heard_leader < self.timing.election

    def _up_to_date(self, last_epoch: int, length: int) -> bool:
        """Whether a candidate's durable log (its last record's epoch, its length) is at least as up to date as ours."""
        ours = self.log.last_epoch
        return last_epoch > ours or (last_epoch == ours and length >= len(self.log))

    def _vote(self, request: VoteRequest, now: float) -> None:
        reply_epoch = request.epoch if request.pre else max(self.epoch, request.epoch)
        if not self.voter or (self._in_lease(now) and not request.handover):
            if request.pre:
                self.counters.prevotes_refused += 1
            else:
                self.counters.votes_refused += 1
            self._send(request.sender, VoteReply(reply_epoch, self.id, self.digest, False, pre=request.pre))
            return
        if request.epoch < self.epoch:
            self._send(request.sender, VoteReply(self.epoch, self.id, self.digest, False, pre=request.pre))
            return
        if request.pre:
            granted = request.epoch > self.epoch and self._up_to_date(request.last_epoch, request.length)
            if not granted:
                self.counters.prevotes_refused += 1
            self._send(request.sender, VoteReply(request.epoch, self.id, self.digest, granted, pre=True))
            return
        if request.epoch > self.epoch:
            self._become_follower(request.epoch, now, leader=None)
        granted = self.vote in (None, request.sender) and self._up_to_date(request.last_epoch, request.length)
        if granted:
            if self.vote is None:
                self.vote = request.sender
                self._save_state()
            self._reset_election(now)
        else:
            self.counters.votes_refused += 1
        self._send(request.sender, VoteReply(self.epoch, self.id, self.digest, granted))

    def _campaign(self, now: float, pre: bool, handover: bool = False) -> None:
        """Ask for votes: a pre-vote at the next epoch first, then, with a majority of those, the vote itself."""
        self._reset_election(now)
        if not self.voter:
            return
        if now - self._leader_lost_at < self.timing.election:
            # the leader's connection was reset: its followers may not all know yet; ask again soon
            self._election_deadline = now + self.timing.heartbeat + self.rng.uniform(0, self.timing.heartbeat)
        self._votes = {self.id: True}
        self._handover_campaign = handover
        if pre:
            self._become(Role.PRE_CANDIDATE, now)
            epoch = self.epoch + 1
        else:
            self._become(Role.CANDIDATE, now)
            self.counters.elections += 1
            self.epoch += 1
            self.vote = self.id
            self.leader = None
            self._save_state()
            epoch = self.epoch
        last_epoch, length = self.log.epoch_at(self.durable), self.durable
        for peer in self.peers:
            self._send(peer, VoteRequest(epoch, self.id, self.digest, last_epoch, length, pre=pre, handover=handover))
        self._count_votes(now)

    def _tally(self, reply: VoteReply, now: float) -> None:
        if self.role is Role.PRE_CANDIDATE and reply.pre and reply.epoch == self.epoch + 1:
            self._votes[reply.sender] = reply.granted
        elif self.role is Role.CANDIDATE and not reply.pre and reply.epoch == self.epoch:
            self._votes[reply.sender] = reply.granted
        else:
            return
        self._count_votes(now)

    def _count_votes(self, now: float) -> None:
        granted = sum(1 for vote in self._votes.values() if vote)
        refused = len(self._votes) - granted
        if granted >= self.quorum:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(now, pre=False, handover=self._handover_campaign)
            else:
                self._become_leader(now)
        elif refused > len(self.ids) - self.quorum:
            self._become(Role.FOLLOWER, now)

    # -- roles -------------------------------------------------------------------------------

    def _become(self, role: Role, now: float) -> None:
        """The one place a role changes."""
        if role is self.role:
            return
        if self.role is Role.LEADER:
            self._stop_leading(now)
        self._ready.notes.append(f"replica {self.id}: {self.role.value} -> {role.value} in epoch {self.epoch}")
        self.role = role

    def _become_follower(self, epoch: int, now: float, leader: int | None) -> None:
        if epoch > self.epoch:
            self.epoch = epoch
            self.vote = None
            self._save_state()
        self.leader = leader
        self._become(Role.FOLLOWER, now)
        self._reset_election(now)

    def _become_leader(self, now: float) -> None:
        self._become(Role.LEADER, now)
        self.counters.won += 1
        self.leader = self.id
        self._leader_since = now
        self.progress = {peer: Progress(next=len(self.log), heard=now) for peer in self.peers}
        self.round = 0
        self._append_own([self._leader_record(self.epoch, self.id)])
        self.leader_index = len(self.log) - 1
        self._broadcast(now)

    def _stop_leading(self, now: float) -> None:
        self.counters.stepped_down += 1
        if self.commit <= self.leader_index:
            # lost before its leader record committed: refuse handovers for a while, longer each time
            self._losses += 1
            self._refuse_handover_until = now + (2**self._losses) * self.timing.election
        if self.handover_to is not None:
            self._auto_handover_aborts = 0
        self.progress = {}
        self.handover_to = None
        self._handover_deadline = NEVER
        self._heartbeat_due = NEVER
        self._ready.failed_reads.extend(context for _, context, _ in self._reads)
        self._reads.clear()

    def _check_quorum(self, now: float) -> bool:
        """A leader that has not heard from a majority for an election timeout steps down (false then)."""
        if now - self._leader_since < self.timing.election:
            return True
        heard = 1 + sum(1 for p in self.progress.values() if now - p.heard < self.timing.election)
        if heard >= self.quorum:
            return True
        self._ready.notes.append(f"replica {self.id} has not heard from a majority for {self.timing.election} s")
        self.leader = None
        self._become(Role.FOLLOWER, now)
        self._reset_election(now)
        return False

    def _reset_election(self, now: float) -> None:
        self._election_deadline = now + self.rng.uniform(self.timing.election, 2 * self.timing.election)

    def _known_leader(self) -> int | None:
        return self.leader if self.leader != self.id else None

    def _not_serving_reason(self) -> str:
        if self.role is not Role.LEADER:
            known = f"replica {self.leader} leads" if self.leader is not None else "no leader is known"
            return f"replica {self.id} is not the leader ({known})"
        if self.handover_to is not None:
            return f"replica {self.id} is handing over to replica {self.handover_to}"
        return f"replica {self.id} leads epoch {self.epoch} but its leader record is not committed yet"

    # -- the log: followers ------------------------------------------------------------------

    def _append(self, message: Append, now: float) -> None:
        if self.role is Role.LEADER:
            raise ProtocolError(f"two leaders in epoch {self.epoch}: {self.id} and {message.sender}")
        if self.role is not Role.FOLLOWER or self.leader != message.sender:
            self._become_follower(message.epoch, now, leader=message.sender)
        self._heard_leader = now
        self._leader_lost_at = -NEVER
        self._reset_election(now)
        if not self.log.matches(message.start, message.prev_epoch):
            hint = self.log.last_at_most(min(message.start, len(self.log)), message.prev_epoch)
            self._send(message.sender, self._reply(False, hint, self.log.epoch_at(hint), message.round))
            return
        self._accept(message)
        self.commit = max(self.commit, min(message.commit, message.end))
        if not self.voter and message.end >= message.commit > 0 and self.log.epoch_at(message.commit) == message.epoch:
            # only a commit point in the leader's own epoch covers every committed record (as for serving)
            self._catch_up_to = message.commit
            if self.durable >= message.commit and not self._unwritten:
                self._become_voter()
        self._send(message.sender, self._reply(True, message.end, message.prev_epoch, message.round))

    def _accept(self, message: Append) -> None:
        """Take the records of ``message`` that this log lacks, cutting off a tail that conflicts."""
        conflict = self.log.first_conflict(message.start, list(message.epochs))
        if conflict == message.end:
            return
        if conflict < self.commit:
            raise ProtocolError(
                f"replica {self.id} told to replace committed record {conflict} (commit point {self.commit})"
            )
        if message.payloads is None:
            raise ProtocolError(f"records {message.start}..{message.end - 1} arrived without their contents")
        truncate = conflict if conflict < len(self.log) else None
        if truncate is not None:
            self._truncate(truncate)
        for epoch in message.epochs[conflict - message.start :]:
            self.log.append(epoch)
        self._write(truncate=truncate, start=conflict, payloads=tuple(message.payloads[conflict - message.start :]))

    def _become_voter(self) -> None:
        self.voter = True
        self._catch_up_to = None
        self.vote = self.leader
        self._save_state()
        self._ready.notes.append(f"replica {self.id} has caught up and votes again")

    def _reply(self, accepted: bool, length: int, last_epoch: int, round: int) -> AppendReply:
        return AppendReply(self.epoch, self.id, self.digest, accepted, length, last_epoch, round, voter=self.voter)

    def _handover_asked(self, message: Handover, now: float) -> None:
        if self.role is not Role.FOLLOWER or message.sender != self.leader:
            return
        if now < self._refuse_handover_until:
            self.counters.handovers_refused += 1
            self._ready.notes.append(f"replica {self.id} refused a handover until {self._refuse_handover_until:.3f}")
            return
        self._campaign(now, pre=False, handover=True)

    # -- the log: leaders ---------------------------------------------------------------------

    def _append_own(self, payloads: list[Any]) -> None:
        start = len(self.log)
        self.log.append(self.epoch, len(payloads))
        self._write(truncate=None, start=start, payloads=tuple(payloads))

    def _send_records(self, now: float) -> None:
        """Send what each streamed follower lacks, within its window."""
        for peer, progress in self.progress.items():
            while (
                progress.streaming and progress.next < len(self.log) and progress.in_flight < self.timing.max_in_flight
            ):
                self._send_append(peer, progress)

    def _broadcast(self, now: float) -> None:
        """A heartbeat to every follower: the records it lacks, or none."""
        for peer, progress in self.progress.items():
            self._send_append(peer, progress)
        self._heartbeat_due = now + self.timing.heartbeat

    def _send_append(self, peer: int, progress: Progress) -> None:
        start = progress.next
        end = min(len(self.log), start + self.timing.max_batch)
        epochs: tuple[int, ...] = ()
        if end > start:
            epochs = tuple(self.log.epoch_at(i + 1) for i in range(start, end))
            progress.in_flight += 1
            if progress.streaming:
                progress.next = end
        message = Append(
            self.epoch, self.id, self.digest, start, self.log.epoch_at(start), epochs, self.commit, self.round
        )
        self._ready.messages.append((peer, message))

    def _replied(self, reply: AppendReply, now: float) -> None:
        progress = self.progress[reply.sender]
        progress.heard = now
        progress.round = max(progress.round, reply.round)
        progress.voter = reply.voter
        if reply.accepted:
            progress.accepted(reply.length)
            self._advance_commit(now)
            if self.handover_to == reply.sender:
                self._continue_handover(now)
        else:
            progress.refused(self.log.last_at_most(reply.length, reply.last_epoch))
            self._send_append(reply.sender, progress)
        self._release_reads()
        if self.role is Role.LEADER:
            self._send_records(now)

    def _advance_commit(self, now: float) -> None:
        """Raft's commit rule: the longest prefix durable on a majority of voters, ending in this leader's epoch."""
        copies = [self.durable] + [p.match for p in self.progress.values() if p.voter]
        point = quorum_value(copies, self.quorum)
        if point is None or point <= self.commit or self.log.epoch_at(point) != self.epoch:
            return
        first = self.commit <= self.leader_index < point
        self.commit = point
        if first:
            self._losses = 0
            self._refuse_handover_until = -NEVER
        self._release_reads()

    # -- reads -------------------------------------------------------------------------------------

    def _confirmed_round(self) -> int:
        """The newest round that a majority (this leader included) has answered."""
        rounds = [self.round] + [p.round for p in self.progress.values()]
        return quorum_value(rounds, self.quorum) or 0

    def _release_reads(self) -> None:
        if not self._reads:
            return
        confirmed = self._confirmed_round()
        while self._reads and self._reads[0][0] <= confirmed:
            _, context, point = self._reads.popleft()
            self._ready.reads.append((context, point))
        if self._reads and confirmed >= self.round:
            self.round += 1
            for peer, progress in self.progress.items():
                self._send_append(peer, progress)

    # -- handing over ------------------------------------------------------------------------------

    def _best_successor(self) -> int | None:
        """The voter most up to date, the highest id among equals."""
        candidates = [(p.match, peer) for peer, p in self.progress.items() if p.voter]
        return max(candidates)[1] if candidates else None

    def _maybe_hand_over(self, now: float) -> None:
        """The seed's rule: with the highest id up and in sync, it leads (of those the shell has not called unfit)."""
        highest = max(i for i in self.ids if i == self.id or i not in self.unfit)
        if highest == self.id or not self.serving or now < self._auto_handover_after:
            return
        progress = self.progress[highest]
        if progress.voter and progress.match == len(self.log) and now - progress.heard < self.timing.heartbeat * 3:
            self._start_handover(highest, now)

    def _start_handover(self, target: int, now: float) -> None:
        self.handover_to = target
        self._handover_deadline = now + self.timing.election
        self._handover_sent = False
        self.counters.handovers += 1
        self._ready.notes.append(f"replica {self.id} hands over to replica {target}")
        self._continue_handover(now)

    def _continue_handover(self, now: float) -> None:
        assert self.handover_to is not None
        progress = self.progress[self.handover_to]
        if self._handover_sent:
            return
        if progress.match == len(self.log):
            self._ready.messages.append((self.handover_to, Handover(self.epoch, self.id, self.digest)))
            self._handover_sent = True
        else:
            self._send_records(now)

    def _abort_handover(self, now: float) -> None:
        self._ready.notes.append(f"replica {self.id} gave up handing over to replica {self.handover_to}")
        self.handover_to = None
        self._handover_deadline = NEVER
        self._auto_handover_aborts += 1
        self._auto_handover_after = now + (2**self._auto_handover_aborts) * self.timing.election

    # -- writes and messages -------------------------------------------------------------------------

    def _save_state(self) -> None:
        self._write(truncate=None, start=len(self.log), payloads=(), state=True)

    def _truncate(self, length: int) -> None:
        self.log.truncate(length)
        self.durable = min(self.durable, length)
        self._unwritten = deque((ticket, min(end, length)) for ticket, end in self._unwritten)

    def _write(self, truncate: int | None, start: int, payloads: tuple[Any, ...], state: bool = False) -> None:
        self._ticket += 1
        saved = State(self.epoch, self.vote, self.voter) if state else None
        self._ready.writes.append(Write(self._ticket, saved, truncate, start, payloads))
        self._unwritten.append((self._ticket, start + len(payloads) if payloads or truncate is not None else 0))

    def _send(self, to: int, message: Message) -> None:
        """Send ``message`` once every write so far is durable (at once if none is under way)."""
        if self._unwritten:
            self._held.append((self._unwritten[-1][0], to, message))
        else:
            self._ready.messages.append((to, message))

    def _flush(self) -> Ready:
        ready, self._ready = self._ready, Ready()
        if self.role is Role.LEADER:
            ready.deadline = min(self._heartbeat_due, self._handover_deadline)
        else:
            ready.deadline = self._election_deadline
        return ready
