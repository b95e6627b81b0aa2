"""
One order replica: its log on disk, its role, and the calls of its lines port.

A replica starts as a follower.  Told ``lead {epoch, leader}`` naming itself,
it pulls what it lacks from the most up-to-date reachable peer, writes the
record that opens its epoch, and serves orders; naming another replica, it
follows that one's log stream (:mod:`toystore.order.replication`).  The
highest epoch it has accepted is on disk, and everything from an older epoch
(notices, streams, records) is refused, so a deposed leader cannot commit.

An order is acknowledged only once its record is durable on ``min_insync``
replicas, the leader included (:mod:`toystore.order.commitment`).  Log
writes, the leader's like the followers', go to one thread in batches
(:mod:`toystore.order.writes`): one fsync per batch, and the reactor thread
never waits on the disk.  The records a leader adds in one reactor turn go
to each follower in one push and to its own file in one write, at the end
of the turn.

The log in memory holds only the most recent lines and a few bytes per order
(:mod:`toystore.order.log`); the idempotency keys are in a key store beside
the journal (:mod:`toystore.order.keystore`).  An older line (a follower's
catch-up) is read back from the journal in a thread of its own
(:mod:`toystore.order.reads`), and a key from the store in the disk thread.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .. import failpoints
from ..config import ClusterConfig, ReplicaConfig
from ..contract import FENCE, GET, LEAD, ORDER
from ..envelope import (
    ApiError,
    Conflict,
    NotFound,
    StaleEpoch,
    Unavailable,
    Unprocessable,
    dumps,
    loads,
)
from ..runtime import EXIT_DISK_FAILED, StartupError, exit_now
from ..wire import WireProtocol
from .commitment import Commitment
from .journal import CorruptJournal, Log, open_log, write_durably
from .metrics import ReplicaMetrics
from .reads import LogReads
from .reconcile import unlogged_buys
from .replication import Link, Streams
from .writes import LogWrites

EPOCH = "epoch.json"

RunInThread = Callable[..., Deferred[Any]]


class NotLeader(ApiError):
    """This replica does not lead; the message names the one it knows (421 Misdirected Request)."""

    code = 421


class Replica(Service):
    """
    An order replica: the handler of its lines port and the owner of its log.

    :param me: this replica's addresses.
    :param cluster: the whole cluster file.
    :param clock: timers (commit timeouts, in-sync checks, discovery).
    :param run_in_thread: runs disk work off the reactor thread (one thread).
    :param peers: a wire client per other replica id, for promotion.
    :param catalog: the wire client of the catalog, for buys.
    :param connect: the client endpoint of a replica id, for the log stream.
    :param find_leader: asks the front-end who leads (``GET /leader``).
    :param key_hash: the hash of idempotency keys in the log's Bloom filter (tests make it collide).
    :param read_in_thread: runs reads of records no longer in memory (default:
        ``run_in_thread``; a thread of their own spares them the wait behind fsyncs).
    """

    log = Logger()

    def __init__(
        self,
        me: ReplicaConfig,
        cluster: ClusterConfig,
        clock: IReactorTime,
        run_in_thread: RunInThread,
        peers: dict[int, Any],
        catalog: Any,
        connect: Callable[[int], Any],
        find_leader: Callable[[], Deferred[dict[str, Any]]],
        key_hash: Callable[[str], int] = hash,
        read_in_thread: RunInThread | None = None,
        fail_stop: Callable[[str], None] = lambda why: exit_now(EXIT_DISK_FAILED, why),
    ) -> None:
        self.id = me.id
        self.config = cluster.order
        self.clock = clock
        self.data_dir = Path(self.config.data_dir.format(id=me.id))
        self.metrics = ReplicaMetrics(self.status)
        self.peers = peers
        self.catalog = catalog
        self.role = "follower"
        self.epoch = 0
        self.leader: int | None = None
        self._order_log_options = {"window_bytes": self.config.window_bytes, "key_hash": key_hash}
        self.order_log: Log = Log(**self._order_log_options)
        self.commitment = Commitment(clock, self.config.min_insync, self.config.commit_timeout)
        self.streams = Streams(self, clock, self.config.ack_timeout)
        self.link = Link(self, clock, cluster.wire, connect, find_leader, self.config.discovery_interval)
        self._run = run_in_thread
        self._fail_stop = fail_stop
        self.writes = LogWrites(
            run_in_thread, self.config.max_batch, self.metrics, lambda _: self.advance_commit(), self._write_failed
        )
        self.reads = LogReads(self.order_log, read_in_thread or run_in_thread, self.writes.find_key)
        self._unwritten: list[bytes] = []  # the leader's new records, written once per reactor turn
        self._unwritten_end = 0  # the length of the log with them
        self._write_call: IDelayedCall | None = None
        self._placing: dict[str, tuple[tuple[str, int], list[Deferred[int]]]] = {}
        self._roles = DeferredLock()

    # -- life cycle --------------------------------------------------------------

    def startService(self) -> None:
        """Read the log (cutting a torn tail) and the accepted epoch."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            epoch_file = self.data_dir / EPOCH
            self.epoch = loads(epoch_file.read_bytes())["epoch"] if epoch_file.exists() else 0
            opened = open_log(self.data_dir, **self._order_log_options)
        except CorruptJournal as e:
            raise StartupError(f"the order log is corrupt, refusing to start: {e}") from None
        except (OSError, ValueError, KeyError, ApiError, sqlite3.Error) as e:
            raise StartupError(f"cannot open the order log in {self.data_dir}: {e}") from None
        self.writes.open(opened.order_log, opened.file, opened.keys)
        self.reads.open(opened.order_log, opened.file.path)
        if opened.keys_remade:
            self.log.warn("the key store in {path} was unreadable: made it anew", path=self.data_dir)
        if opened.torn_bytes:
            self.log.warn("cut a torn record ({n} bytes) off the end of the log", n=opened.torn_bytes)
        if opened.keys_rewritten_from is not None:
            self.log.info("keys written to the key store again from order {n}", n=opened.keys_rewritten_from)
        self.order_log = opened.order_log
        super().startService()
        self.link.start()

    async def _stop(self) -> None:
        self.role = "stopping"
        self.link.shutdown()
        self.streams.close_all()
        self.commitment.fail_all(Unavailable(f"replica {self.id} is stopping"))
        self._write_new()
        await self.writes.close()
        await self.reads.close()

    def stopService(self) -> Deferred[None]:
        """Let the queued log writes finish, then close the log."""
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    # -- the disk ----------------------------------------------------------------

    @property
    def durable(self) -> int:
        """Records on disk here."""
        return self.writes.durable

    def write_lines(self, lines: list[bytes]) -> Deferred[Any]:
        """Append ``lines`` (the last records of the in-memory log) to the file: a Deferred of their fsync."""
        self._write_new()  # earlier records first, in the log's order
        return self.writes.append(lines, len(self.order_log))

    def _write_soon(self, line: bytes) -> None:
        """Push and write a leader's new record with the others of this reactor turn: one message, one write."""
        self._unwritten.append(line)
        self._unwritten_end = len(self.order_log)
        if self._write_call is None:
            self._write_call = self.clock.callLater(0, self._write_new)

    def _write_new(self) -> None:
        """Push the records added since the last push to the followers, and write them (the leader's)."""
        if self._write_call is not None:
            if self._write_call.active():
                self._write_call.cancel()
            self._write_call = None
        lines, self._unwritten = self._unwritten, []
        if lines:
            self.streams.send_new()
            end = self._unwritten_end
            self.writes.append(lines, end).addErrback(self._not_written, end - len(lines), len(lines))

    def _not_written(self, failure: Failure, first: int, count: int) -> None:
        self.log.failure("while writing records {first} to {last}", failure, first=first, last=first + count - 1)
        self.commitment.fail_from(first, ApiError("the order log could not be written", 500))

    async def truncate(self, length: int) -> None:
        """Keep only the first ``length`` records, in memory and (durably) on disk."""
        if length >= len(self.order_log):
            return
        self.log.warn("truncating the log from {old} to {new} records", old=len(self.order_log), new=length)
        self._write_new()  # in the file's order
        size = self.order_log.truncate(length)
        self.commitment.truncate(length)
        await self.writes.truncate(length, size)

    def refuse_older(self, epoch: int) -> None:
        """Raise :class:`StaleEpoch` if ``epoch`` is older than the one this replica accepted."""
        if epoch < self.epoch:
            raise StaleEpoch(f"epoch {epoch} is older than epoch {self.epoch}, which replica {self.id} accepted")

    def accept_epoch(self, epoch: int) -> Deferred[None]:
        """
        Make ``epoch`` the highest accepted: at once in memory, so that older
        epochs are refused from now on, and durably on disk by the time the
        Deferred fires.  The write goes to the disk thread ahead of any log
        write queued after this call, so no record of ``epoch`` is
        acknowledged before the epoch is on disk.
        """
        self.refuse_older(epoch)
        if epoch == self.epoch:
            return succeed(None)
        # In the same turn as the epoch changes: a replica never reports, or
        # writes records of, a new epoch while it still leads an older one.
        self.step_down(f"epoch {epoch} is accepted")
        self.leader = None
        self.epoch = epoch
        return self._run(write_durably, self.data_dir / EPOCH, dumps({"epoch": epoch}))

    # -- commitment -------------------------------------------------------------

    def _write_failed(self, failure: Failure) -> None:
        """The log's file failed a write: it may no longer hold what memory says it does. Stop."""
        why = f"replica {self.id}: a write to the order log failed ({failure.getErrorMessage()})"
        self.log.critical("{why}; stopping: its next start recovers from the file and its peers", why=why)
        self._fail_stop(why)

    def advance_commit(self) -> None:
        """Recompute the commit point from the copies on disk: the leader's own and each follower's."""
        if self.role == "leader":
            self.commitment.advance([self.durable, *self.streams.acked()])

    # -- roles ---------------------------------------------------------------------

    def not_leader(self) -> NotLeader:
        """The error for a call only a leader serves."""
        known = f"replica {self.leader} leads" if self.leader is not None else "no leader is known"
        return NotLeader(f"replica {self.id} is not the leader ({known}, epoch {self.epoch})")

    def step_down(self, reason: str) -> None:
        """Stop leading (a newer epoch exists): fail the orders waiting to commit."""
        if self.role == "leader":
            self.log.warn("replica {id} steps down: {reason}", id=self.id, reason=reason)
            self.role = "follower"
            self.streams.close_all()
            self.commitment.fail_all(self.not_leader())

    async def lead(self, epoch: int, leader: int) -> dict[str, Any]:
        """
        Handle a leader notice: ``leader`` leads ``epoch``.  Naming this
        replica, it promotes itself; naming another, it follows that one.
        An epoch is led by one replica, once: a repeated notice is answered
        again, a conflicting or older one refused.
        """
        async with self._roles:
            self.refuse_older(epoch)
            if epoch == self.epoch:
                if leader == self.leader and (leader != self.id or self.role == "leader"):
                    return self._notice_reply()
                if leader == self.id:
                    raise StaleEpoch(f"replica {self.id} already accepted epoch {epoch}: leading needs a newer one")
                if self.leader is not None and self.leader != leader:
                    raise Conflict(f"epoch {epoch} is led by replica {self.leader}, not {leader}")
            await self.accept_epoch(epoch)
            self.leader = leader
            if leader == self.id:
                await self.promote(epoch)
            else:
                self.step_down(f"replica {leader} leads epoch {epoch}")
                self.link.follow(leader)
            return self._notice_reply()

    def _notice_reply(self) -> dict[str, Any]:
        reply = {"epoch": self.epoch, "leader": self.leader, "role": self.role, "length": len(self.order_log)}
        if self.role == "leader":
            reply["ready"] = True
        return reply

    async def promote(self, epoch: int) -> None:
        """
        Catch up from the most up-to-date reachable peer, adopt the catalog's
        buys no log holds, write the leader record, and lead.
        """
        self.role = "promoting"
        self.link.stop()
        # Streams of an earlier leadership must sync again, and so learn the new epoch.
        self.streams.close_all()
        try:
            await self.link.catch_up_from_peers(epoch)
            adopted, reconciled = await unlogged_buys(self.catalog, self.order_log, epoch, self.reads.find_order)
            if self.epoch != epoch:
                raise StaleEpoch(f"epoch {epoch} was superseded by epoch {self.epoch} during the promotion")
            lines = [self.order_log.append_order(epoch, b["name"], b["quantity"], b["key"], b["seq"]) for b in adopted]
            self.commitment.start(len(self.order_log))
            lines.append(self.order_log.append_leader(epoch, self.id, reconciled))
            self.role = "leader"
            self.streams.open()
            self.streams.send_new()
            await self.write_lines(lines)
        except BaseException:
            self.role = "follower"
            self.leader = None
            raise
        if adopted:
            self.log.warn(
                "adopted {n} buy(s) the catalog made for a leader that died before logging them: keys {keys}",
                n=len(adopted),
                keys=", ".join(b["key"] for b in adopted),
            )
        self.log.info(
            "replica {id} leads epoch {epoch} from record {index}",
            id=self.id,
            epoch=epoch,
            index=self.commitment.epoch_start,
        )

    async def fence(self, epoch: int) -> dict[str, Any]:
        """
        A peer promoting itself to ``epoch`` asks for this replica's log.
        Accept the epoch first (durably), so that no older leader can count
        this replica's copies any more: it steps down if it leads, and acks
        nothing further on an older leader's stream.  Then answer the status.
        """
        if epoch > self.epoch:
            await self.accept_epoch(epoch)
        return self.status()

    # -- orders ----------------------------------------------------------------

    async def place(self, name: str, quantity: int, key: str) -> dict[str, int]:
        """Place an order (once per key) and return its number once committed."""
        if self.role != "leader":
            raise self.not_leader()
        # A key the log's Bloom filter has never seen is new (the common case, answered at once);
        # another may be in the key store on disk, which lets time pass.
        order_log = self.order_log
        number = await self.reads.find_order(key) if order_log.may_hold(key) else None
        if self.role != "leader":
            raise self.not_leader()
        if number is not None:
            index, summary = order_log.order_index(number), order_log.summary(number)
            assert index is not None and summary is not None
            self._same_body(key, {"name": summary[0], "quantity": summary[1]}, name, quantity)
            await self.commitment.wait(index)
            return {"order_number": number}
        if key in self._placing:
            (first_name, first_quantity), waiting = self._placing[key]
            self._same_body(key, {"name": first_name, "quantity": first_quantity}, name, quantity)
            waiting.append(Deferred())
            return {"order_number": await waiting[-1]}
        waiting: list[Deferred[int]] = []
        self._placing[key] = ((name, quantity), waiting)
        try:
            number = await self._place(name, quantity, key)
        except Exception as e:
            for d in waiting:
                d.errback(e)
            raise
        finally:
            self._placing.pop(key, None)
        for d in waiting:
            d.callback(number)
        return {"order_number": number}

    @staticmethod
    def _same_body(key: str, order: dict[str, Any], name: str, quantity: int) -> None:
        if (order["name"], order["quantity"]) != (name, quantity):
            raise Unprocessable(
                f"key {key!r} was used for {order['quantity']} x {order['name']}, not {quantity} x {name}"
            )

    async def _place(self, name: str, quantity: int, key: str) -> int:
        epoch = self.epoch
        started = self.clock.seconds()
        try:
            bought = await self.catalog.call("buy", {"name": name, "quantity": quantity, "key": key, "epoch": epoch})
        except StaleEpoch as e:
            self.step_down(f"the catalog refused epoch {epoch}: {e.message}")
            raise self.not_leader() from None
        failpoints.reach("order.after-buy")
        if self.role != "leader" or self.epoch != epoch:
            raise self.not_leader()
        number = self.order_log.order_count
        self._write_soon(self.order_log.append_order(epoch, name, quantity, key, bought.get("seq")))
        await self.commitment.wait(len(self.order_log) - 1)
        self.metrics.commit_seconds.observe(self.clock.seconds() - started)
        return number

    def order(self, number: int) -> dict[str, Any] | Deferred[dict[str, Any]]:
        """
        An order from this replica's log, answered from memory (the log
        keeps every order's toy and quantity).  A leader answers for
        committed orders only, waiting (up to ``order.commit_timeout``) for
        one that is in its log but not yet committed, as after a promotion:
        then the answer is a Deferred.  A follower answers from what it has
        on disk.
        """
        index = self.order_log.order_index(number)
        if index is None or (self.role != "leader" and index >= self.durable):
            raise NotFound(f"order {number} not found")
        if self.role == "leader" and index >= self.commitment.point:
            return self.commitment.wait(index).addCallback(lambda _: self._order_reply(number))
        return self._order_reply(number)

    def _order_reply(self, number: int) -> dict[str, Any]:
        summary = self.order_log.summary(number)
        if summary is None:  # truncated while it waited
            raise NotFound(f"order {number} not found")
        name, quantity = summary
        return {"number": number, "name": name, "quantity": quantity}

    def status(self) -> dict[str, Any]:
        """What ``status`` and ``GET /health`` report."""
        last = self.order_log.order_count - 1
        return {
            "id": self.id,
            "role": self.role,
            "epoch": self.epoch,
            "leader": self.leader,
            "length": len(self.order_log),
            "durable": self.durable,
            "commit": self.commitment.point,
            "last_epoch": self.order_log.last_epoch,
            "last_order": last,
            "in_sync": self.streams.in_sync() if self.role == "leader" else [],
        }

    # -- the lines port ---------------------------------------------------------

    def call_status(self, message: dict[str, Any], connection: WireProtocol) -> dict[str, Any]:
        return self.status()

    def call_fence(self, message: dict[str, Any], connection: WireProtocol) -> Any:
        return self.fence(*FENCE.parse(message))

    def call_lead(self, message: dict[str, Any], connection: WireProtocol) -> Any:
        epoch, leader = LEAD.parse(message)
        if leader not in {r.id for r in self.config.replicas}:
            raise NotFound(f"no replica {leader} in the cluster")
        return self.lead(epoch, leader)

    def call_order(self, message: dict[str, Any], connection: WireProtocol) -> Any:
        return self.place(*ORDER.parse(message))

    def call_get(self, message: dict[str, Any], connection: WireProtocol) -> Any:
        return self.order(*GET.parse(message))

    def call_sync(self, message: dict[str, Any], connection: WireProtocol) -> Any:
        return self.streams.sync(message, connection)

    def call_pull(self, message: dict[str, Any], connection: WireProtocol) -> Any:
        return self.streams.pull(message)

    def push_ack(self, message: dict[str, Any], connection: WireProtocol) -> None:
        self.streams.ack(message, connection)

    def push_records(self, message: dict[str, Any], connection: WireProtocol) -> Any:
        return self.link.records(message, connection)

    def connection_lost(self, connection: WireProtocol, reason: object) -> None:
        self.streams.lost(connection)
        self.link.lost(connection)

    def call_finished(self, kind: str, outcome: str, seconds: float) -> None:
        self.metrics.calls.record(kind, outcome, seconds)
