"""
The shell around the protocol core: it turns sockets, timers and the disk
into the core's events, and carries out the effects the core returns.

This is etcd's "Ready" loop, with Twisted's means.  Every event (a message
pushed by a peer, the one timer, a write made durable, a lost connection
to the leader) goes to the :class:`~toystore.order.core.Node`; the
:class:`~toystore.order.core.Ready` it returns is carried out at once, in
this order:

1. **writes**: the vote state to ``epoch.json``, cuts and records to the
   log, in memory at once and to disk through the replica's one write
   queue (:mod:`toystore.order.writes`), which makes them durable in
   order; when each is, the core hears ``persisted`` with its ticket;
2. **messages** to peers (:mod:`toystore.order.peering`); an append's
   records are taken from the log's lines in memory or, for a follower far
   behind, read back from the journal first (later messages to that peer
   wait, so that it hears them in order);
3. **the timer**, set for the core's next deadline (one ``DelayedCall``);
4. the rest (reads that may be answered, a role or commit point that
   changed) is the replica's: :meth:`Consensus.run` hands the ``Ready`` on.

The log in memory mirrors the core's: after every event they hold the same
records.  A leader's own records are added to the log as they are made
(their lines need their index), just before the core is told of them.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..envelope import dumps, loads
from .core import Append, EpochLog, Message, Node, ProtocolError, Ready, Role, State, Write
from .core.effects import NEVER
from .journal import CorruptJournal, Log
from .peering import READERS, PeerLinks
from .reads import LogChanged, LogReads
from .writes import LogWrites

#: The file of a replica's vote state, in its data directory.
STATE_FILE = "epoch.json"


def read_state(directory: Path, voter: bool) -> State:
    """
    The vote state on disk; a replica with none has voted nowhere yet, and
    votes only if ``voter`` (false for one that replaces a lost disk).
    """
    path = directory / STATE_FILE
    if not path.exists():
        return State(voter=voter)
    saved = loads(path.read_bytes())
    return State(saved["epoch"], saved.get("vote"), saved.get("voter", True))


def state_bytes(state: State) -> bytes:
    return dumps({"epoch": state.epoch, "vote": state.vote, "voter": state.voter})


def epochs_of(order_log: Log) -> EpochLog:
    """The core's view of a log: the epoch of every record."""
    epochs = EpochLog()
    runs = order_log.runs()
    for (first, epoch), end in zip(runs, [run[0] for run in runs[1:]] + [len(order_log)], strict=False):
        epochs.append(epoch, end - first)
    return epochs


class Consensus:
    """
    Runs one :class:`~toystore.order.core.Node` (see the module's docstring).

    :param on_ready: told every ``Ready`` once its writes, messages and timer are under way.
    :param fail_stop: called when the log and the protocol disagree (a bug, or a lying disk).
    """

    log = Logger()

    def __init__(
        self,
        node: Node,
        order_log: Log,
        writes: LogWrites,
        reads: LogReads,
        links: PeerLinks,
        clock: IReactorTime,
        state_path: Path,
        on_ready: Callable[[Ready], None],
        fail_stop: Callable[[str], None],
    ) -> None:
        self.node = node
        self.order_log = order_log
        self.writes = writes
        self.reads = reads
        self.links = links
        self.clock = clock
        self.state_path = state_path
        self._on_ready = on_ready
        self._fail_stop = fail_stop
        self._timer: IDelayedCall | None = None
        self._timer_at = NEVER
        #: messages to a peer that wait for records read back from disk, in order
        self._waiting: dict[int, deque[Message]] = {}
        self._senders: dict[Any, int] = {}  # connection -> the peer whose messages it brings
        #: the connection each peer last spoke to us on: where a message to it goes while ours is down
        self._incoming: dict[int, Any] = {}
        self.stopped = False

    # -- events --------------------------------------------------------------------------

    def run(self, ready: Ready) -> None:
        """Carry out one ``Ready`` (see the module's docstring)."""
        if self.stopped:
            return
        for write in ready.writes:
            self._write(write)
        for to, message in ready.messages:
            self._send(to, message)
        for note in ready.notes:
            self.log.info("{note}", note=note)
        self._set_timer(ready.deadline)
        self._on_ready(ready)

    def start(self) -> None:
        self.run(self.node.tick(self.clock.seconds()))

    def stop(self) -> None:
        """No more events: the replica is stopping."""
        self.stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def receive(self, type: str, fields: dict[str, Any], connection: Any) -> None:
        """A peer's message (the wire push ``type``); a malformed one raises BadRequest."""
        message = READERS[type](fields)
        self._senders[connection] = message.sender
        self._incoming[message.sender] = connection
        node = self.node
        try:
            ready = node.receive(message, self.clock.seconds())
        except ProtocolError as e:
            self._broken(str(e))
            return
        self.run(ready)

    def connection_lost(self, connection: Any) -> None:
        """A peer's connection to us ended: if it was the leader's, it may be gone."""
        sender = self._senders.pop(connection, None)
        if sender is not None and self._incoming.get(sender) is connection:
            del self._incoming[sender]
        if sender is not None and sender == self.node.leader:
            self.run(self.node.leader_lost(self.clock.seconds()))

    def _tick(self) -> None:
        self._timer = None
        self._timer_at = NEVER
        self.run(self.node.tick(self.clock.seconds()))

    def _set_timer(self, deadline: float) -> None:
        """One timer, at the earliest deadline asked for; one that fires early just ticks, and is set again."""
        if deadline >= self._timer_at:
            return
        delay = max(0.0, deadline - self.clock.seconds())
        if self._timer is not None and self._timer.active():
            self._timer.reset(delay)
        else:
            self._timer = self.clock.callLater(delay, self._tick)
        self._timer_at = deadline

    # -- writes ---------------------------------------------------------------------------

    def _write(self, write: Write) -> None:
        order_log = self.order_log
        done: Deferred[Any] | None = None
        if write.state is not None:
            done = self.writes.save_state(self.state_path, state_bytes(write.state))
        if write.truncate is not None and write.truncate < len(order_log):
            self.log.warn("cutting the log from {old} to {new} records", old=len(order_log), new=write.truncate)
            size = order_log.truncate(write.truncate)
            done = self.writes.truncate(write.truncate, size)
        if write.payloads:
            end = write.start + len(write.payloads)
            if write.start == len(order_log):  # a leader's records: (line, record) pairs checked on arrival
                try:
                    lines = [order_log.append_record(line, record) for line, record in write.payloads]
                except ValueError as e:
                    self._broken(f"a record from the leader does not continue this log: {e}")
                    return
            elif end == len(order_log):  # this leader's own, added as they were made
                lines = list(write.payloads)
            else:
                self._broken(f"records {write.start}..{end - 1} do not fit a log of {len(order_log)}")
                return
            done = self.writes.append(lines, end)
        if done is not None:
            done.addCallbacks(self._persisted, self._not_written, callbackArgs=(write.ticket,))

    def _persisted(self, _: object, ticket: int) -> None:
        if not self.stopped:
            self.run(self.node.persisted(ticket, self.clock.seconds()))

    def _not_written(self, failure: Failure) -> None:
        # LogWrites has told the replica (fail-stop); nothing is acknowledged from here on.
        self.log.debug("a log write failed: {error}", error=failure.getErrorMessage())

    def _broken(self, why: str) -> None:
        self.log.critical("{why}: stopping", why=why)
        self.stop()
        self._fail_stop(why)

    # -- messages ---------------------------------------------------------------------------

    def _send(self, to: int, message: Message) -> None:
        waiting = self._waiting.get(to)
        if waiting is not None:
            waiting.append(message)
            return
        if isinstance(message, Append) and message.payloads is None and message.epochs:
            lines = self.order_log.lines_in_memory(message.start, message.end)
            if lines is None:
                if not self.links.reachable(to, self._incoming.get(to)):  # it would be dropped: no read for it
                    self.links.dropped += 1
                    return
                self._waiting[to] = deque([message])
                Deferred.fromCoroutine(self._send_from_disk(to))
                return
            message = message.with_payloads(tuple(lines))
        self.links.send(to, message, self._incoming.get(to))

    async def _send_from_disk(self, to: int) -> None:
        """Send the messages waiting for ``to``, reading back the records of each append that needs them."""
        waiting = self._waiting[to]
        try:
            while waiting and not self.stopped:
                message = waiting[0]
                if isinstance(message, Append) and message.payloads is None and message.epochs:
                    lines = self.order_log.lines_in_memory(message.start, message.end)
                    if lines is None:
                        lines = await self.reads.lines(message.start, message.end)
                    message = message.with_payloads(tuple(lines))
                waiting.popleft()
                self.links.send(to, message, self._incoming.get(to))
        except (LogChanged, CorruptJournal, OSError, ValueError) as e:
            # The log was cut meanwhile (it no longer leads), or the file failed: the protocol repeats itself.
            self.log.warn("cannot read records for replica {peer}: {error}", peer=to, error=e)
        finally:
            self._waiting.pop(to, None)

    # -- what it reports ----------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self.node.role
