"""
Log replication: the leader's streams to its followers, the follower's link
to its leader, and the catch-up a new leader does before it serves.

One mechanism serves live replication and catch-up after a crash.  A follower
connects to the leader's lines port and calls ``sync`` with a summary of its
log (its length and where each epoch starts).  The leader answers with the
length both logs share (the follower truncates a tail that diverged), then
pushes every record after it, then each new record as it is written, on the
same connection.  The follower appends, fsyncs and pushes ``ack`` with its
durable length; the leader counts those copies to commit orders.  A follower
that leaves a record unacknowledged for longer than ``order.ack_timeout``
leaves the in-sync set; it is back once every record it has been sent for
that long is acknowledged (a busy but healthy follower, always a few records
behind, stays in).  The leader goes on serving meanwhile.

Records the leader no longer holds in memory (a follower far behind) are
read back from its journal file in the disk thread, a chunk at a time, and
only while the follower has acknowledged all but :data:`AHEAD` of the
records sent: a long catch-up neither blocks the reactor nor piles the
whole backlog into the connection's buffer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..contract import ACK, PULL, RECORDS, SYNC
from ..envelope import ApiError, StaleEpoch, Unavailable
from ..wire import Reply, WireClient, WireProtocol
from .journal import CorruptJournal
from .reads import LogChanged

if TYPE_CHECKING:
    from .replica import Replica

#: Records per ``records`` push or ``pull`` reply.
CHUNK = 500
#: Records sent from disk to a follower beyond those it has acknowledged, at most.
AHEAD = 4 * CHUNK
#: Seconds a promoting replica waits for each peer's status.
PEER_TIMEOUT = 1.0


def _log_summary(replica: Replica) -> dict[str, Any]:
    order_log = replica.order_log
    return {"replica": replica.id, "epoch": replica.epoch, "runs": order_log.runs(), "length": len(order_log)}


@dataclass
class FollowerStream:
    """
    The leader's end of one follower's stream: what it has pushed on it,
    what the follower has acknowledged, and whether it is in sync.
    """

    follower_id: int
    connection: WireProtocol
    sent: int  # records pushed to it (or shared at sync)
    acked: int = 0  # records the follower has on disk
    in_sync: bool = False
    reading: bool = False  # a chunk for it is being read from disk
    #: (records sent by then, when) of each push not yet acknowledged, oldest first
    unacked: deque[tuple[int, float]] = field(default_factory=deque)

    def late(self, now: float, timeout: float) -> bool:
        """Whether a record sent more than ``timeout`` seconds ago is still unacknowledged."""
        return bool(self.unacked) and now - self.unacked[0][1] > timeout


class Streams:
    """The leader's side of replication (and ``pull``, which any replica serves)."""

    log = Logger()

    def __init__(self, replica: Replica, clock: Any, ack_timeout: float) -> None:
        self.replica = replica
        self.clock = clock
        self.ack_timeout = ack_timeout
        self.by_connection: dict[WireProtocol, FollowerStream] = {}
        self._checker = LoopingCall(self._check_lag)
        self._checker.clock = clock

    def open(self) -> None:
        """Start watching followers' lag (on becoming leader)."""
        if not self._checker.running:
            self._checker.start(self.ack_timeout / 2, now=False)

    def close_all(self) -> None:
        """Drop every follower's stream (on stepping down)."""
        if self._checker.running:
            self._checker.stop()
        streams, self.by_connection = self.by_connection, {}
        for stream in streams.values():
            stream.connection.transport.loseConnection()

    def sync(self, message: dict[str, Any], connection: WireProtocol) -> Reply:
        """A follower's ``sync``: agree on the shared length, then stream."""
        replica = self.replica
        follower_id, their_epoch, length, runs = SYNC.parse(message)
        if replica.role != "leader":
            raise replica.not_leader()
        if their_epoch > replica.epoch:
            replica.step_down(f"replica {follower_id} has seen epoch {their_epoch}")
            raise replica.not_leader()
        common = replica.order_log.common_length(runs, length)
        stream = FollowerStream(follower_id, connection, sent=common)
        self.by_connection[connection] = stream
        self.log.info(
            "replica {id} syncs: it has {length} records, {common} shared; streaming from there",
            id=follower_id,
            length=length,
            common=common,
        )
        reply = {"epoch": replica.epoch, "leader": replica.id, "common": common}
        return Reply(reply, lambda: self._send(stream))

    def _send(self, stream: FollowerStream) -> None:
        """Push what the follower of ``stream`` lacks: from memory at once, from disk a chunk at a time."""
        order_log = self.replica.order_log
        while stream.sent < len(order_log) and not stream.reading:
            chunk = order_log.lines_in_memory(stream.sent, min(stream.sent + CHUNK, len(order_log)))
            if chunk is None:
                if stream.sent - stream.acked < AHEAD:
                    stream.reading = True
                    Deferred.fromCoroutine(self._send_from_disk(stream))
                return  # else its next ack sends more
            self._push(stream, chunk)

    async def _send_from_disk(self, stream: FollowerStream) -> None:
        order_log = self.replica.order_log
        try:
            lines = await self.replica.reads.lines(stream.sent, min(stream.sent + CHUNK, order_log.first_in_memory))
        except (LogChanged, CorruptJournal, OSError, Unavailable) as e:
            self.log.warn("cannot read records for replica {id}: {error}", id=stream.follower_id, error=e)
            stream.connection.transport.loseConnection()
            return
        finally:
            stream.reading = False
        if self.by_connection.get(stream.connection) is stream:
            self._push(stream, lines)
            self._send(stream)

    def _push(self, stream: FollowerStream, chunk: list[bytes]) -> None:
        stream.connection.push(
            "records",
            epoch=self.replica.epoch,
            start=stream.sent,
            lines=[line.decode("utf-8") for line in chunk],
        )
        stream.sent += len(chunk)
        stream.unacked.append((stream.sent, self.clock.seconds()))

    def send_new(self) -> None:
        """Push the records written since the last push to every follower."""
        for stream in list(self.by_connection.values()):
            self._send(stream)

    def ack(self, message: dict[str, Any], connection: WireProtocol) -> None:
        """A follower's ``ack``: it has ``length`` records on disk."""
        stream = self.by_connection.get(connection)
        if stream is None:
            return
        (length,) = ACK.parse(message)
        stream.acked = max(stream.acked, min(length, stream.sent))
        while stream.unacked and stream.unacked[0][0] <= stream.acked:
            stream.unacked.popleft()
        if not stream.in_sync and not stream.late(self.clock.seconds(), self.ack_timeout):
            stream.in_sync = True
            self.log.info("replica {id} is in sync at {length} records", id=stream.follower_id, length=stream.acked)
        self.replica.advance_commit()
        self._send(stream)  # a catch-up from disk waits for acks

    def _check_lag(self) -> None:
        now = self.clock.seconds()
        for stream in self.by_connection.values():
            if stream.in_sync and stream.late(now, self.ack_timeout):
                stream.in_sync = False
                self.log.warn(
                    "replica {id} left a record unacknowledged for {timeout} s: out of the in-sync set",
                    id=stream.follower_id,
                    timeout=self.ack_timeout,
                )

    def lost(self, connection: WireProtocol) -> None:
        """A connection closed; if it was a follower's stream, forget it."""
        stream = self.by_connection.pop(connection, None)
        if stream is not None:
            self.log.info("replica {id}'s stream closed", id=stream.follower_id)

    def acked(self) -> list[int]:
        """Each follower's acknowledged length (the best of its streams)."""
        best: dict[int, int] = {}
        for stream in self.by_connection.values():
            best[stream.follower_id] = max(best.get(stream.follower_id, 0), stream.acked)
        return list(best.values())

    def in_sync(self) -> list[int]:
        """The ids of the followers in the in-sync set."""
        return sorted({s.follower_id for s in self.by_connection.values() if s.in_sync})

    async def pull(self, message: dict[str, Any]) -> dict[str, Any]:
        """A promoting peer's ``pull``: the shared length and the durable records after it."""
        replica = self.replica
        _, epoch, length, runs = PULL.parse(message)
        replica.refuse_older(epoch)
        while True:
            durable = replica.durable
            common = min(replica.order_log.common_length(runs, length), durable)
            try:
                lines = await replica.reads.lines(common, min(durable, common + CHUNK))
            except LogChanged:
                continue  # truncated meanwhile: find the shared length again
            return {"common": common, "length": durable, "lines": [line.decode("utf-8") for line in lines]}


class Link:
    """
    The follower's side: one stream from the leader it follows, reconnected
    with backoff; and the catch-up of a promotion.

    :param connect: the client endpoint of a replica id.
    :param find_leader: asks the front-end who leads: a Deferred of
        ``{"leader": id, "epoch": e}``.
    """

    log = Logger()

    def __init__(
        self,
        replica: Replica,
        clock: Any,
        wire: Any,
        connect: Callable[[int], Any],
        find_leader: Callable[[], Deferred[dict[str, Any]]],
        discovery_interval: float,
    ) -> None:
        self.replica = replica
        self.clock = clock
        self.wire = wire
        self._connect = connect
        self._find_leader = find_leader
        self._client: WireClient | None = None
        self._stream: WireProtocol | None = None
        self._acked = 0  # the length last acknowledged on the stream
        self.following: int | None = None
        self._discovery = LoopingCall(self._discover)
        self._discovery.clock = clock
        self._discovery_interval = discovery_interval

    @property
    def connected(self) -> bool:
        """Whether a synced stream from the leader is up."""
        return self._stream is not None and self._stream.connected

    def start(self) -> None:
        """Look for the leader now and every ``discovery_interval`` while there is no stream."""
        self._discovery.start(self._discovery_interval, now=True)

    def shutdown(self) -> None:
        """Stop looking and following (the service is stopping)."""
        if self._discovery.running:
            self._discovery.stop()
        self.stop()

    def follow(self, leader: int) -> None:
        """Stream from ``leader`` (replacing any current stream)."""
        if self.following == leader and self._client is not None:
            return
        self.stop()
        self.following = leader
        self._client = WireClient(
            self._connect(leader),
            self.clock,
            self.wire,
            handler=self.replica,
            prepare=self._sync,
            name=f"replica {leader}",
        )
        self._client.startService()
        self.log.info("replica {id} follows replica {leader}", id=self.replica.id, leader=leader)

    def stop(self) -> None:
        """Close the stream, if any."""
        client, self._client, self._stream, self.following = self._client, None, None, None
        if client is not None:
            client.stopService()

    async def _sync(self, connection: WireProtocol) -> None:
        replica = self.replica
        reply = await connection.call("sync", _log_summary(replica))
        epoch, leader, common = reply["epoch"], reply["leader"], reply["common"]
        if epoch < replica.epoch or self._client is None:
            connection.transport.loseConnection()
            raise StaleEpoch(f"replica {leader} streams epoch {epoch}, older than epoch {replica.epoch}")
        accepted = replica.accept_epoch(epoch)
        replica.leader = leader
        self._stream = connection
        # Start now: the in-memory part must be done before the first records push is read.
        truncated = Deferred.fromCoroutine(replica.truncate(common))
        await accepted
        await truncated
        self._acked = replica.durable
        connection.push("ack", length=self._acked)

    def records(self, message: dict[str, Any], connection: WireProtocol) -> Deferred[None] | None:
        """Records from the leader: append, fsync, acknowledge."""
        replica = self.replica
        if connection is not self._stream or replica.role != "follower":
            return None
        their_epoch, start, lines = RECORDS.parse(message)
        if their_epoch < replica.epoch or start != len(replica.order_log):
            self.log.warn(
                "records from {start} in epoch {epoch} do not continue this log ({length} records, epoch {mine}): "
                "syncing again",
                start=start,
                epoch=their_epoch,
                length=len(replica.order_log),
                mine=replica.epoch,
            )
            connection.transport.loseConnection()
            return None
        added = []
        try:
            for line in lines:
                added.append(replica.order_log.append_line(line.encode("utf-8")))
        except (ValueError, AttributeError) as e:
            self.log.warn("a bad record from the leader ({error}): syncing again", error=e)
            connection.transport.loseConnection()
            if not added:
                return None

        epoch = replica.epoch

        async def write_and_ack() -> None:
            await replica.write_lines(added)
            # Fenced meanwhile by a promoting peer: the old leader must not count this copy.
            # Writes that shared a batch end together: one ack tells of them all.
            if replica.epoch == epoch and connection is self._stream and replica.durable > self._acked:
                self._acked = replica.durable
                connection.push("ack", length=self._acked)

        return Deferred.fromCoroutine(write_and_ack())

    async def catch_up_from_peers(self, epoch: int) -> None:
        """
        Before leading ``epoch``: fence enough peers to form a majority (each
        accepts the epoch before it reports its log, so an older leader can
        commit nothing this replica does not see), and copy the most
        up-to-date reachable log if it is not ours.
        """
        replica = self.replica
        peers = replica.peers
        calls = [client.call("fence", {"epoch": epoch}, timeout=PEER_TIMEOUT) for client in peers.values()]
        results = await DeferredList([ensureDeferred(c) for c in calls], consumeErrors=True)
        reachable = {peer: status for peer, (ok, status) in zip(peers, results, strict=True) if ok}
        newest = max((s["epoch"] for s in reachable.values()), default=0)
        if newest > epoch:
            raise StaleEpoch(f"a peer has accepted epoch {newest}, newer than {epoch}")
        if len(reachable) + 1 < replica.config.min_insync:
            raise Unavailable(
                f"replica {replica.id} reaches {len(reachable)} peer(s); leading needs "
                f"{replica.config.min_insync - 1} to hold every committed order"
            )
        best = max(reachable.items(), key=lambda item: (item[1]["last_epoch"], item[1]["durable"]), default=None)
        if best is None or not _newer(best[1], replica):
            return
        source, status = best
        self.log.info(
            "replica {id} copies the log of replica {source} ({length} records) before leading",
            id=replica.id,
            source=source,
            length=status["durable"],
        )
        while True:
            reply = await peers[source].call("pull", {**_log_summary(replica), "epoch": epoch})
            await replica.truncate(reply["common"])
            lines = [replica.order_log.append_line(line.encode("utf-8")) for line in reply["lines"]]
            if lines:
                await replica.write_lines(lines)
            if not lines or len(replica.order_log) >= reply["length"]:
                return

    async def _discover(self) -> None:
        """Find the leader (front-end first, then the peers) and follow it."""
        replica = self.replica
        if replica.role != "follower" or self.connected:
            return
        try:
            found = await self._find_leader()
            leader, epoch = found["leader"], found["epoch"]
        except Exception as e:
            self.log.debug("the front-end does not say who leads ({error}); asking the peers", error=e)
            leader, epoch = await self._ask_peers()
        if leader is None or leader == replica.id:
            return
        try:
            await replica.lead(epoch, leader)
        except ApiError as e:
            self.log.info(
                "not following replica {leader} in epoch {epoch}: {error}", leader=leader, epoch=epoch, error=e.message
            )

    async def _ask_peers(self) -> tuple[int | None, int]:
        peers = self.replica.peers
        calls = [ensureDeferred(c.call("status", timeout=PEER_TIMEOUT)) for c in peers.values()]
        results = await DeferredList(calls, consumeErrors=True)
        leaders = [status for ok, status in results if ok and status["role"] == "leader"]
        if not leaders:
            return None, 0
        newest = max(leaders, key=lambda s: s["epoch"])
        return newest["id"], newest["epoch"]

    def lost(self, connection: WireProtocol) -> None:
        """A connection closed; if it was our stream, we have none until the next sync."""
        if connection is self._stream:
            self._stream = None


def _newer(status: dict[str, Any], replica: Replica) -> bool:
    return (status["last_epoch"], status["durable"]) > (replica.order_log.last_epoch, len(replica.order_log))
