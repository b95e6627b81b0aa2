"""
The protocol's messages on the wire between replicas, and the connections
that carry them.

Each replica keeps one connection to every peer's lines port and pushes its
protocol messages (:mod:`toystore.order.core.messages`) on it: votes and
their answers, appends and their answers, handovers.  So between two
replicas a message always travels on its sender's connection, one
connection each way: a cut in one direction stops what one side says and
nothing else, as a dropped packet would.  While a replica's own connection to
a peer is down, it answers that peer on the connection the peer last spoke to
it on (a port cut one way leaves the other side's connection working, and
TCP carries both directions).  A message that cannot go now (no connection)
is dropped; the protocol repeats what matters (a leader's next
heartbeat carries what a follower lacks, a candidate that hears too little
campaigns again).

On the wire an append's records are their log lines; their epochs travel
as runs (``[[first index, epoch], ...]``), as a log summary does.  Lines are
checked when they arrive (checksum, JSON, index and epoch), before the
protocol sees the message, so a record the protocol accepts can always be
added to the log.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from typing import Any, Callable, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..contract import APPEND, APPENDED, HANDOVER, MAX_KEY, MAX_NAME, VOTE, VOTED
from ..envelope import BadRequest
from ..wire import WireClient, WireProtocol
from .core import Append, AppendReply, Handover, Message, VoteReply, VoteRequest
from .records import decode

#: Seconds between two attempts to connect to a peer, at most.
RECONNECT_MAX = 0.5
#: Bytes of an append's wire line besides its records (its other fields), at most.
APPEND_OVERHEAD = 1024
#: Bytes of one record in an append's wire line, at most: its line quoted (each character of its
#: key and toy name 4 bytes at most, escaped or not; the rest, at most 256 bytes, twice), and its
#: run of epochs (``[index,epoch],``).
RECORD_BYTES = 2 * 256 + 4 * (MAX_KEY + MAX_NAME) + 42


def records_per_append(max_line: int, most: int) -> int:
    """How many records an append may carry (``most`` at most, one at least) to fit in a ``max_line`` line."""
    return max(1, min(most, (max_line - APPEND_OVERHEAD) // RECORD_BYTES))


def digest(ids: Iterable[int]) -> str:
    """The digest of a replica list: every message carries it, and a replica refuses one whose list differs."""
    listed = ",".join(str(i) for i in sorted(ids))
    return hashlib.sha256(f"toystore-replicas:{listed}".encode()).hexdigest()[:16]


# -- messages <-> wire fields ----------------------------------------------------------


def to_wire(message: Message) -> tuple[str, dict[str, Any]]:
    """The push type and fields of ``message`` (an ``Append`` carries its lines as payloads)."""
    common = {"epoch": message.epoch, "replica": message.sender, "digest": message.digest}
    if isinstance(message, Append):
        lines = [line.decode("utf-8") for line in (message.payloads or ())]
        runs: list[list[int]] = []
        for offset, epoch in enumerate(message.epochs):
            if not runs or runs[-1][1] != epoch:
                runs.append([message.start + offset, epoch])
        fields = {"start": message.start, "prev_epoch": message.prev_epoch, "runs": runs, "lines": lines}
        return "append", {**common, **fields, "commit": message.commit, "round": message.round}
    if isinstance(message, AppendReply):
        fields = {"accepted": message.accepted, "length": message.length, "last_epoch": message.last_epoch}
        return "appended", {**common, **fields, "round": message.round, "voter": message.voter}
    if isinstance(message, VoteRequest):
        fields = {"last_epoch": message.last_epoch, "length": message.length}
        return "vote", {**common, **fields, "pre": message.pre, "handover": message.handover}
    if isinstance(message, VoteReply):
        return "voted", {**common, "granted": message.granted, "pre": message.pre}
    if isinstance(message, Handover):
        return "handover", common
    raise TypeError(f"no wire form for {message!r}")


def vote_from_wire(fields: dict[str, Any]) -> VoteRequest:
    epoch, sender, digest, last_epoch, length, pre, handover = VOTE.parse(fields)
    return VoteRequest(epoch, sender, digest, last_epoch, length, pre=pre, handover=handover)


def voted_from_wire(fields: dict[str, Any]) -> VoteReply:
    epoch, sender, digest, granted, pre = VOTED.parse(fields)
    return VoteReply(epoch, sender, digest, granted, pre=pre)


def appended_from_wire(fields: dict[str, Any]) -> AppendReply:
    epoch, sender, digest, accepted, length, last_epoch, round, voter = APPENDED.parse(fields)
    return AppendReply(epoch, sender, digest, accepted, length, last_epoch, round, voter=voter)


def handover_from_wire(fields: dict[str, Any]) -> Handover:
    return Handover(*HANDOVER.parse(fields))


def append_from_wire(fields: dict[str, Any]) -> Append:
    """
    An ``Append`` whose payloads are ``(line, record)`` pairs, every line
    checked against the index and epoch the message gives it.

    :raises BadRequest: naming what is wrong.
    """
    epoch, sender, digest, start, prev_epoch, runs, lines, commit, round = APPEND.parse(fields)
    epochs = _expand(runs, start, len(lines))
    payloads = []
    for offset, text in enumerate(lines):
        line = text.encode("utf-8")
        try:
            record = decode(line)
        except ValueError as e:
            raise BadRequest(f"record {start + offset} of the append is bad: {e}") from None
        if record["index"] != start + offset or record["epoch"] != epochs[offset]:
            raise BadRequest(f"record {start + offset} of the append is not the one its runs describe")
        payloads.append((line if line.endswith(b"\n") else line + b"\n", record))
    return Append(epoch, sender, digest, start, prev_epoch, tuple(epochs), commit, round, payloads=tuple(payloads))


def _expand(runs: list[list[int]], start: int, count: int) -> list[int]:
    """The epoch of each of ``count`` records from ``start``, from their runs."""
    if count == 0:
        if runs:
            raise BadRequest("an append without records has no runs")
        return []
    if not runs or runs[0][0] != start or any(b[0] <= a[0] for a, b in zip(runs, runs[1:], strict=False)):
        raise BadRequest("an append's runs must start at its first record and rise")
    if runs[-1][0] >= start + count:
        raise BadRequest("an append's runs go past its records")
    epochs: list[int] = []
    for (first, epoch), following in zip(runs, [*runs[1:], [start + count, 0]], strict=True):
        epochs.extend([epoch] * (following[0] - first))
    return epochs


READERS: dict[str, Callable[[dict[str, Any]], Message]] = {
    "vote": vote_from_wire,
    "voted": voted_from_wire,
    "append": append_from_wire,
    "appended": appended_from_wire,
    "handover": handover_from_wire,
}


# -- the connections ----------------------------------------------------------------------


class PeerLinks:
    """
    This replica's connection to each peer's lines port: the protocol's
    messages go out on them, and so do orders and reads relayed to the
    leader.

    :param connect: the client endpoint of a replica id.
    :param handler: serves the protocol messages a peer sends back on our
        connection to it (the replica).
    :param rng: draws the reconnection delays (a test's seed makes them the same every run).
    :param on_link: told ``(peer, up)`` when a connection to a peer is ready
        for messages, and when it drops.
    """

    log = Logger()

    def __init__(
        self,
        peers: Iterable[int],
        connect: Callable[[int], Any],
        clock: IReactorTime,
        wire: Any,
        on_link: Callable[[int, bool], None],
        rng: random.Random | None = None,
        handler: Any = None,
    ) -> None:
        self._on_link = on_link
        rng = rng or random.Random()
        self.clients: dict[int, WireClient] = {}
        # A peer back from a restart is connected to again within half a second, whatever the backoff
        # of other connections: until then it hears nothing from the leader.
        quick = replace(wire, reconnect_max=min(wire.reconnect_max, RECONNECT_MAX))
        for peer in peers:
            self.clients[peer] = WireClient(
                connect(peer),
                clock,
                quick,
                handler=_Outgoing(peer, on_link, handler),
                prepare=lambda connection, peer=peer: on_link(peer, True),
                jitter=lambda: rng.uniform(0, wire.reconnect_initial),
                name=f"replica {peer}",
            )
        self.dropped = 0  # messages dropped: no connection, or one that reads nothing

    def start(self) -> None:
        for client in self.clients.values():
            client.startService()

    def stop(self) -> list[Any]:
        return [client.stopService() for client in self.clients.values()]

    def up(self, peer: int) -> bool:
        """Whether a connection to ``peer`` is ready for messages."""
        return self.clients[peer].connected

    def _route(self, peer: int, fallback: WireProtocol | None) -> WireProtocol | None:
        client = self.clients.get(peer)
        for connection in (client.current if client is not None else None, fallback):
            # (a full write buffer: the peer reads too slowly)
            if connection is not None and connection.connected and not connection.write_paused:
                return connection
        return None

    def reachable(self, peer: int, fallback: WireProtocol | None = None) -> bool:
        """Whether a message to ``peer`` would go now."""
        return self._route(peer, fallback) is not None

    def send(self, peer: int, message: Message, fallback: WireProtocol | None = None) -> None:
        """
        Push ``message`` to ``peer`` on our connection to it, or, while that
        is down, on ``fallback`` (the connection the peer last spoke to us
        on); else drop it (see the module's docstring).
        """
        connection = self._route(peer, fallback)
        if connection is None:
            self.dropped += 1
            return
        type, fields = to_wire(message)
        connection.push(type, **fields)

    def call(self, peer: int, type: str, fields: dict[str, Any], timeout: float) -> Any:
        """A call to ``peer`` (a relayed order or read): a Deferred of its reply."""
        return self.clients[peer].call(type, fields, timeout=timeout)


class _Outgoing:
    """
    The handler of this replica's own connection to a peer: the protocol
    messages the peer sends back on it (while its own connection to us is
    down) go to the replica's handler, as if they came on that one.
    """

    def __init__(self, peer: int, on_link: Callable[[int, bool], None], handler: Any) -> None:
        self.peer = peer
        self._on_link = on_link
        self._handler = handler

    def __getattr__(self, name: str) -> Any:
        if name.startswith("push_") and name[5:] in READERS:
            return getattr(self._handler, name)
        raise AttributeError(name)

    def connection_lost(self, connection: WireProtocol, reason: object) -> None:
        self._on_link(self.peer, False)
        lost = getattr(self._handler, "connection_lost", None)
        if lost is not None:
            lost(connection, reason)
