"""
One order replica: its log on disk, its part in the election, and the calls
of its lines port.

The replicas elect their leader themselves, by Raft's rules: the rules are
the protocol core (:mod:`toystore.order.core`, no I/O), run here by
:mod:`toystore.order.consensus`, which does the I/O (the peers' connections,
the timer, the disk).  This module is the store around it:

- **orders**: the leader buys from the catalog under the order's key, then
  logs the order, and answers once the protocol has committed its record
  (on disk on a majority).  A buy whose answer was lost is asked again,
  same key, until the catalog answers definitely (the catalog answers a key
  it has recorded as it did the first time).  The orders bought in one
  reactor turn become records together: one append to each follower, one
  write;
- **reads**: ``get`` is answered by the leader once a majority has
  confirmed that it still leads (a heartbeat round since the read arrived),
  so a deposed leader never answers 404 for an acknowledged order;
- **relaying**: a replica that does not lead passes an order or a read on
  to the leader it knows, once (a relayed call is not relayed again), so a
  front-end cut from the leader alone still gets served;
- **reconciliation**: a leader that starts serving fences the catalog at
  its epoch and adopts every buy of the catalog that no order of the log
  holds (an earlier leader died between its buy and its record), a page
  at a time, while it serves (:mod:`toystore.order.reconcile`);
- **stopping**: a leader told to stop hands over to its most up-to-date
  follower first, so that a rolling restart costs no election;
- **deposed by the catalog**: a 412 from the catalog (a newer leader has
  reconciled or bought) makes a leader step down at once;
- **the catalog's reach** (:mod:`toystore.order.reach`): a leader that has
  not reached the catalog for an election timeout hands over to a follower
  that does.

The log in memory holds only the most recent lines and a few bytes per order
(:mod:`toystore.order.log`); the idempotency keys are in a key store beside
the journal (:mod:`toystore.order.keystore`).  Log writes go to one thread in
batches (:mod:`toystore.order.writes`): one fsync per batch, and the reactor
thread never waits on the disk.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from .. import failpoints
from ..config import ClusterConfig, ReplicaConfig
from ..contract import GET, ORDER
from ..envelope import ApiError, NotFound, StaleEpoch, Unavailable, Unprocessable
from ..runtime import EXIT_DISK_FAILED, StartupError, exit_now
from ..wire import WireProtocol
from .commitment import Commitment
from .consensus import Consensus, epochs_of, read_state
from .core import Node, NotServing, Ready, Role, Timing
from .journal import CorruptJournal, Log, open_log
from .metrics import ReplicaMetrics
from .peering import PeerLinks, digest, records_per_append
from .reach import CatalogReach
from .reads import LogReads
from .reconciling import Reconciliation
from .writes import LogWrites

RunInThread = Callable[..., Deferred[Any]]

#: Seconds before a buy whose answer was lost is asked again (doubling, up to BUY_RETRY_MAX).
BUY_RETRY, BUY_RETRY_MAX = 0.05, 1.0


class NotLeader(ApiError):
    """This replica does not serve orders; the message names the leader it knows (421 Misdirected Request)."""

    code = 421


class Replica(Service):
    """
    An order replica: the handler of its lines port and the owner of its log.

    :param me: this replica's addresses.
    :param cluster: the whole cluster file.
    :param clock: timers.
    :param run_in_thread: runs disk work off the reactor thread (one thread).
    :param catalog: the wire client of the catalog, for buys.
    :param connect: the client endpoint of a replica id (its lines port).
    :param key_hash: the hash of idempotency keys in the log's Bloom filter (tests make it collide).
    :param read_in_thread: runs reads of records no longer in memory (default:
        ``run_in_thread``; a thread of their own spares them the wait behind fsyncs).
    :param replaces: this replica starts on a new or emptied disk in a store
        that has run before: it does not vote until it has caught up.
    :param rng: the election's randomness.
    """

    log = Logger()

    def __init__(
        self,
        me: ReplicaConfig,
        cluster: ClusterConfig,
        clock: IReactorTime,
        run_in_thread: RunInThread,
        catalog: Any,
        connect: Callable[[int], Any],
        key_hash: Callable[[str], int] = hash,
        read_in_thread: RunInThread | None = None,
        fail_stop: Callable[[str], None] = lambda why: exit_now(EXIT_DISK_FAILED, why),
        replaces: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.id = me.id
        self.config = cluster.order
        self.clock = clock
        self.data_dir = Path(self.config.data_dir.format(id=me.id))
        self.metrics = ReplicaMetrics(self.status)
        self.catalog = catalog
        self.ids = tuple(sorted(r.id for r in self.config.replicas))
        self.digest = digest(self.ids)
        self.timing = Timing(
            election=self.config.election_timeout,
            heartbeat=self.config.heartbeat,
            stagger=2 * self.config.heartbeat,
            # an append is one wire line: it must fit in the peer's wire.max_line, whatever its records
            max_batch=records_per_append(cluster.wire.max_line, Timing().max_batch),
        )
        self._rng = rng or random.Random()
        self.links = PeerLinks(
            [i for i in self.ids if i != me.id], connect, clock, cluster.wire, self._link_changed, self._rng, self
        )
        self._order_log_options = {"window_bytes": self.config.window_bytes, "key_hash": key_hash}
        self.order_log: Log = Log(**self._order_log_options)
        self.commitment = Commitment(clock, self.config.commit_timeout)
        self._run = run_in_thread
        self._fail_stop = fail_stop
        self._replaces = replaces
        self.writes = LogWrites(run_in_thread, self.config.max_batch, self.metrics, lambda _: None, self._write_failed)
        self.reads = LogReads(self.order_log, read_in_thread or run_in_thread, self.writes.find_key)
        self.node: Node | None = None
        self.consensus: Consensus | None = None
        self.reconciliation = Reconciliation(self)
        self._stopping = False
        #: key -> ((name, quantity), callers waiting), for each key bought or adopted and not yet in the log
        self._placing: dict[str, tuple[tuple[str, int], list[Deferred[int]]]] = {}
        self._buying: set[Deferred[Any]] = set()  # buy calls to the catalog awaiting their reply
        #: orders bought (or adopted) in this reactor turn, logged together at its end
        self._unlogged: list[tuple[str, int, str, int | None, Deferred[tuple[int, int]]]] = []
        self._log_call: IDelayedCall | None = None
        self._leading: int | None = None  # the epoch this replica leads, as last seen
        self.reach = CatalogReach(self)
        self._stepped_down: list[Deferred[None]] = []

    # -- life cycle --------------------------------------------------------------

    def startService(self) -> None:
        """Read the log (cutting a torn tail) and the vote state; join the election."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            opened = open_log(self.data_dir, **self._order_log_options)
            state = read_state(self.data_dir, voter=not self._replaces)
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
        if not state.voter:
            self.log.warn("replica {id} replaces a lost disk: it votes once it has caught up", id=self.id)
        self.order_log = opened.order_log
        now = self.clock.seconds()
        self.node = Node(
            self.id,
            self.ids,
            self.digest,
            state,
            epochs_of(self.order_log),
            self._leader_record,
            self._rng,
            now,
            self.timing,
        )
        self.consensus = Consensus(
            self.node,
            self.order_log,
            self.writes,
            self.reads,
            self.links,
            self.clock,
            self.data_dir / "epoch.json",
            self._ready,
            self._broken,
        )
        super().startService()
        self.links.start()
        self.consensus.start()
        self.reach.start()

    def stopService(self) -> Deferred[None]:
        """Hand over if leading, then let the queued log writes finish and close the log."""
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self._stopping = True
        self.reach.stop()
        node, consensus = self.node, self.consensus
        if node is not None and consensus is not None and node.role is Role.LEADER and not consensus.stopped:
            stepped: Deferred[None] = Deferred()
            self._stepped_down.append(stepped)
            consensus.run(node.hand_over(self.clock.seconds()))
            if node.role is Role.LEADER:
                try:
                    await stepped.addTimeout(self.timing.election, self.clock)
                except Exception:
                    self.log.info("replica {id} stops without handing over", id=self.id)
        if consensus is not None:
            consensus.stop()
        self.reconciliation.stop()
        self._fail_waiting(Unavailable(f"replica {self.id} is stopping"))
        for d in self.links.stop():
            await d
        await self.writes.close()
        await self.reads.close()

    def _broken(self, why: str) -> None:
        self._fail_stop(f"replica {self.id}: {why}")

    def _write_failed(self, failure: Any) -> None:
        """The log's file failed a write: it may no longer hold what memory says it does. Stop."""
        why = f"replica {self.id}: a write to the order log failed ({failure.getErrorMessage()})"
        self.log.failure("{why}; stopping: its next start recovers from the file and its peers", failure, why=why)
        if self.consensus is not None:
            self.consensus.stop()
        self._fail_waiting(ApiError("the order log could not be written", 500))
        self._fail_stop(why)

    # -- the protocol's effects on the store ---------------------------------------------

    def _leader_record(self, epoch: int, leader: int) -> bytes:
        """The record that opens a leadership, added to the log as the protocol asks for it."""
        return self.order_log.append_leader(epoch, leader, self.order_log.reconciled())

    def _ready(self, ready: Ready) -> None:
        """After each event: leadership gained or lost, the commit point, reads that may be answered."""
        node = self.node
        assert node is not None
        leading = node.epoch if node.role is Role.LEADER else None
        if self._leading is not None and leading != self._leading:
            self._stop_leading()
        self._leading = leading
        self.commitment.advance(node.commit)
        for context, point in ready.reads:
            context.callback(point)
        for context in ready.failed_reads:
            context.errback(self.not_leader())
        if node.serving and self.reconciliation.epoch != node.epoch:
            self.reconciliation.start(node.epoch)

    def _stop_leading(self) -> None:
        self.log.warn("replica {id} no longer leads epoch {epoch}", id=self.id, epoch=self._leading)
        self._fail_waiting(self.not_leader())
        for call in list(self._buying):  # a buy waiting on a silent catalog need not hold its order up
            call.cancel()
        stepped, self._stepped_down = self._stepped_down, []
        for d in stepped:
            d.callback(None)

    def _fail_waiting(self, error: ApiError) -> None:
        """Fail the orders waiting to be logged or committed (their buys are adopted by whoever leads next)."""
        self.commitment.fail_all(error)
        unlogged, self._unlogged = self._unlogged, []
        for _, _, key, _, done in unlogged:
            self._placing.pop(key, None)
            done.errback(error)

    def deposed(self, why: str) -> None:
        """A newer leader exists (the catalog said so): stop leading now, not after an election timeout."""
        node, consensus = self.node, self.consensus
        if node is not None and consensus is not None and node.role is Role.LEADER and not consensus.stopped:
            self.log.warn("replica {id} steps down: {why}", id=self.id, why=why)
            consensus.run(node.deposed(self.clock.seconds()))

    def _link_changed(self, peer: int, up: bool) -> None:
        """Our own connection to ``peer`` is up, or down (meanwhile it is answered on its connection to us)."""
        if not up and not self._stopping:
            self.log.info("replica {id}: the connection to replica {peer} is down", id=self.id, peer=peer)

    # -- roles -------------------------------------------------------------------

    @property
    def role(self) -> str:
        return "stopping" if self._stopping else (self.node.role.value if self.node else "follower")

    @property
    def epoch(self) -> int:
        return self.node.epoch if self.node else 0

    @property
    def leader(self) -> int | None:
        return self.node.leader if self.node else None

    @property
    def durable(self) -> int:
        """Records on disk here."""
        return self.writes.durable

    def serving_in(self, epoch: int) -> bool:
        """Whether this replica still serves as the leader of ``epoch``."""
        node = self.node
        return node is not None and node.serving and node.epoch == epoch and not self._stopping

    def not_leader(self) -> NotLeader:
        """The error for a call only a serving leader takes."""
        node = self.node
        if node is not None and node.role is Role.LEADER:
            reason = f"replica {self.id} leads epoch {node.epoch} but does not serve yet"
            if node.handover_to is not None:
                reason = f"replica {self.id} is handing over to replica {node.handover_to}"
            return NotLeader(reason)
        known = f"replica {self.leader} leads" if self.leader is not None else "no leader is known"
        return NotLeader(f"replica {self.id} is not the leader ({known}, epoch {self.epoch})")

    def _relay(self, type: str, fields: dict[str, Any], relayed: bool) -> Deferred[Any]:
        """Pass a call this replica cannot serve on to the leader it knows, once."""
        leader = self.leader
        if relayed or leader is None or leader == self.id or self._stopping:
            raise self.not_leader()
        return self.links.call(leader, type, {**fields, "relayed": True}, timeout=self.config.commit_timeout + 1)

    # -- orders ----------------------------------------------------------------

    async def place(self, name: str, quantity: int, key: str, relayed: bool = False) -> dict[str, int]:
        """Place an order (once per key) and return its number once committed."""
        node = self.node
        if node is None or not node.serving or self._stopping:
            return await self._relay("order", {"name": name, "quantity": quantity, "key": key}, relayed)
        epoch = node.epoch
        # A key the log's Bloom filter has never seen is new (the common case, answered at once);
        # another may be in the key store on disk, which lets time pass.
        order_log = self.order_log
        number = await self.reads.find_order(key) if order_log.may_hold(key) else None
        if not self.serving_in(epoch):
            raise self.not_leader()
        if number is not None:
            index, summary = order_log.order_index(number), order_log.summary(number)
            assert index is not None and summary is not None
            self._same_body(key, summary, name, quantity)
            await self.commitment.wait(index)
            return {"order_number": number}
        if key in self._placing:
            first, waiting = self._placing[key]
            self._same_body(key, first, name, quantity)
            waiting.append(Deferred())
            return {"order_number": await waiting[-1]}
        entry: tuple[tuple[str, int], list[Deferred[int]]] = ((name, quantity), [])
        self._placing[key] = entry
        try:
            number = await self._place(name, quantity, key, epoch)
        except Exception as e:
            for d in entry[1]:
                d.errback(e)
            raise
        finally:
            if self._placing.get(key) is entry:
                del self._placing[key]
        for d in entry[1]:
            d.callback(number)
        return {"order_number": number}

    @staticmethod
    def _same_body(key: str, first: tuple[str, int], name: str, quantity: int) -> None:
        if first != (name, quantity):
            raise Unprocessable(f"key {key!r} was used for {first[1]} x {first[0]}, not {quantity} x {name}")

    async def _place(self, name: str, quantity: int, key: str, epoch: int) -> int:
        started = self.clock.seconds()
        bought = await self._buy(name, quantity, key, epoch)
        failpoints.reach("order.after-buy")
        index, number = await self.log_order(name, quantity, key, bought.get("seq"))
        await self.commitment.wait(index)
        self.metrics.commit_seconds.observe(self.clock.seconds() - started)
        return number

    async def _buy(self, name: str, quantity: int, key: str, epoch: int) -> dict[str, Any]:
        """
        Buy from the catalog under ``key``, asking again while the answer is
        in doubt (lost, timed out, the catalog unreachable) and this replica
        still leads ``epoch``.  A definite refusal (out of stock, unknown
        toy, fenced) is raised.
        """
        delay = BUY_RETRY
        while True:
            call = self.catalog.call("buy", {"name": name, "quantity": quantity, "key": key, "epoch": epoch})
            self._buying.add(call)
            try:
                return await call
            except CancelledError:
                # It stopped leading with the buy in flight (_stop_leading): the buy is in doubt, and
                # the next leader adopts it if the catalog made it; the caller retries there at once.
                raise self.not_leader() from None
            except StaleEpoch as e:
                # A newer leader has reconciled or bought: this one is deposed, whatever its peers can tell it.
                self.deposed(e.message)
                raise self.not_leader() from None
            except Unavailable as e:
                self.log.info("the buy of key {key} is in doubt ({error}): asking again", key=key, error=e.message)
            finally:
                self._buying.discard(call)
            await deferLater(self.clock, delay, lambda: None)
            delay = min(2 * delay, BUY_RETRY_MAX)
            node = self.node
            if node is None or node.role is not Role.LEADER or node.epoch != epoch or self._stopping:
                raise self.not_leader()  # the next leader adopts the buy if the catalog made it

    def adopt(self, key: str, name: str, quantity: int, seq: int) -> bool:
        """
        Log a buy of the catalog that no order holds (reconciliation), unless
        it is being logged already: whether it is adopted.
        """
        if key in self._placing:
            return False
        entry: tuple[tuple[str, int], list[Deferred[int]]] = ((name, quantity), [])
        self._placing[key] = entry

        def logged(result: Any) -> None:
            if self._placing.get(key) is entry:
                del self._placing[key]
            for d in entry[1]:
                if isinstance(result, Failure):
                    d.errback(result)
                else:  # a caller of the same key is answered once the record is committed
                    index, number = result
                    self.commitment.wait(index).addCallback(lambda _, n=number: n).chainDeferred(d)

        self.log_order(name, quantity, key, seq).addBoth(logged)
        return True

    def log_order(self, name: str, quantity: int, key: str, seq: int | None) -> Deferred[tuple[int, int]]:
        """
        Make a bought order a record of the log, with the others bought in
        this reactor turn: a Deferred of its record index and order number.
        """
        done: Deferred[tuple[int, int]] = Deferred()
        self._unlogged.append((name, quantity, key, seq, done))
        if self._log_call is None:
            self._log_call = self.clock.callLater(0, self._log_bought)
        return done

    def _log_bought(self) -> None:
        self._log_call = None
        unlogged, self._unlogged = self._unlogged, []
        node, consensus = self.node, self.consensus
        if not unlogged or node is None or consensus is None:
            return
        if not node.serving or self._stopping:
            error = self.not_leader()
            for *_, done in unlogged:
                done.errback(error)
            return
        order_log, epoch = self.order_log, node.epoch
        start, first_number = len(order_log), order_log.order_count
        lines = [order_log.append_order(epoch, name, quantity, key, seq) for name, quantity, key, seq, _ in unlogged]
        try:
            ready, _ = node.propose(lines, self.clock.seconds())
        except NotServing:  # cannot happen: serving was checked in this turn
            order_log.truncate(start)
            raise
        consensus.run(ready)
        for offset, (*_, done) in enumerate(unlogged):
            done.callback((start + offset, first_number + offset))

    # -- reads -------------------------------------------------------------------------

    def order(self, number: int, relayed: bool = False) -> dict[str, Any] | Deferred[dict[str, Any]]:
        """
        An order, as the serving leader knows it.  An order whose record is
        committed here is answered at once: a committed record never changes
        or goes away, so the answer holds whoever leads now.  Any other
        number is answered once a majority has confirmed that this replica
        still leads (a round sent after the read arrived): an order whose
        record is not committed by then is not found, and a deposed leader,
        which cannot confirm, never answers 404 for an acknowledged order.
        The first answer is a dict (the wire writes it in the same turn), the
        others Deferreds.
        """
        node, consensus = self.node, self.consensus
        if node is None or consensus is None or not node.serving or self._stopping:
            return self._relay("get", {"number": number}, relayed)
        order_log = self.order_log
        index = order_log.order_index(number)
        if index is not None and index < node.commit:
            summary = order_log.summary(number)
            if summary is not None:
                return {"number": number, "name": summary[0], "quantity": summary[1]}
        confirmed: Deferred[int] = Deferred()
        consensus.run(node.read(confirmed, self.clock.seconds()))
        return confirmed.addCallback(lambda point: self._order_reply(number, point))

    def local_order(self, number: int) -> dict[str, Any]:
        """An order from this replica's own log, if its record is durable here (for operators and tests)."""
        index = self.order_log.order_index(number)
        if index is None or index >= self.durable:
            raise NotFound(f"order {number} not found")
        return self._order_reply(number, self.durable)

    def _order_reply(self, number: int, point: int) -> dict[str, Any]:
        index = self.order_log.order_index(number)
        summary = self.order_log.summary(number)
        if index is None or index >= point or summary is None:
            raise NotFound(f"order {number} not found")
        name, quantity = summary
        return {"number": number, "name": name, "quantity": quantity}

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``status`` and ``GET /health`` report."""
        node = self.node
        core = node.status() if node is not None else {}
        return {
            "id": self.id,
            "role": self.role,
            "epoch": self.epoch,
            "vote": core.get("vote"),
            "leader": self.leader,
            "serving": bool(core.get("serving")) and not self._stopping,
            "reconciled": self.reconciliation.finished == self.epoch,
            "voter": core.get("voter", True),
            "length": len(self.order_log),
            "durable": self.durable,
            "commit": core.get("commit", 0),
            "last_epoch": self.order_log.last_epoch,
            "last_order": self.order_log.order_count - 1,
            "committed_order": self.order_log.orders_before(core.get("commit", 0)) - 1,
            "in_sync": self._in_sync(),
            "lag": {str(peer): lag for peer, lag in sorted(node.lag().items())} if node is not None else {},
            "elections": core.get("elections", 0),
            "prevotes_refused": core.get("prevotes_refused", 0),
            "handovers": core.get("handovers", 0),
            "links": {str(peer): self.links.up(peer) for peer in sorted(self.links.clients)},
            "catalog": bool(self.catalog.hearing),
        }

    def _in_sync(self) -> list[int]:
        """A leader's followers that answered within an election timeout and lack at most one append's records."""
        node = self.node
        if node is None or node.role is not Role.LEADER:
            return []
        now, length = self.clock.seconds(), len(self.order_log)
        return sorted(
            peer
            for peer, progress in node.progress.items()
            if now - progress.heard < self.timing.election and length - progress.match <= self.timing.max_batch
        )

    # -- the lines port ---------------------------------------------------------

    def call_status(self, message: dict[str, Any], connection: WireProtocol) -> dict[str, Any]:
        return self.status()

    def call_order(self, message: dict[str, Any], connection: WireProtocol) -> Any:
        return Deferred.fromCoroutine(self.place(*ORDER.parse(message)))

    def call_get(self, message: dict[str, Any], connection: WireProtocol) -> Any:
        return self.order(*GET.parse(message))

    def _protocol_message(self, type: str, message: dict[str, Any], connection: WireProtocol) -> None:
        # A leader that is stopping still hears its peers until its consensus stops: the answers that
        # bring its successor up to date, and the successor's vote request that ends its leadership.
        if self.consensus is not None and not self.consensus.stopped:
            self.consensus.receive(type, message, connection)

    def push_vote(self, message: dict[str, Any], connection: WireProtocol) -> None:
        self._protocol_message("vote", message, connection)

    def push_voted(self, message: dict[str, Any], connection: WireProtocol) -> None:
        self._protocol_message("voted", message, connection)

    def push_append(self, message: dict[str, Any], connection: WireProtocol) -> None:
        self._protocol_message("append", message, connection)

    def push_appended(self, message: dict[str, Any], connection: WireProtocol) -> None:
        self._protocol_message("appended", message, connection)

    def push_handover(self, message: dict[str, Any], connection: WireProtocol) -> None:
        self._protocol_message("handover", message, connection)

    def connection_lost(self, connection: WireProtocol, reason: object) -> None:
        if self.consensus is not None:
            self.consensus.connection_lost(connection)

    def call_finished(self, kind: str, outcome: str, seconds: float) -> None:
        self.metrics.calls.record(kind, outcome, seconds)
