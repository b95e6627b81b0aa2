"""
The simulated store: replicas running the real protocol core
(:mod:`toystore.order.core`) under a small shell of their own, a catalog that
sells by key with epoch fencing, and clients that order and read back.

The replica's shell here does what the Twisted shell does with the core's
effects: mirrors its log in memory, writes to a disk that loses whatever was
not yet durable when the replica crashes, sends messages (filling in the
records of an ``Append``), sets the one timer, and serves orders and reads
the way the store does: buy from the catalog by key, retry a buy whose
answer was lost until it is definite, log it, answer once committed;
reconcile with the catalog when it starts to serve; relay an order that
reached a follower to the leader it knows.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import deque
from typing import Any

from toystore.order.core import Append, EpochLog, Node, NotServing, ProtocolError, Ready, Role, State, Timing, Write

from .checker import Checker, Violation
from .world import World

CATALOG = "catalog"
TOYS = ("Tux", "Whale", "Elephant", "Bird")
#: seconds a leader waits for the catalog's answer before asking again with the same key
BUY_RETRY = 0.05
DIGEST = "sim"


def record_epoch(record: tuple[Any, ...]) -> int:
    return record[1]


class Catalog:
    """
    Sells by key: a key it has answered definitely (sold, or refused for want of stock) gets that
    answer again whatever the epoch; a new key from an older epoch than the newest it saw is
    fenced.  Every ``RESTOCK`` seconds a toy sold out is stocked again, so that a refusal is not
    for ever and a late attempt of a refused buy could otherwise sell.
    """

    #: seconds between restocks
    RESTOCK = 1.0

    def __init__(self, world: World, stock: int) -> None:
        self.world = world
        self.initial = stock
        self.stock = {name: stock for name in TOYS}
        self.fence = 0
        self.sold: dict[str, tuple[str, int]] = {}
        self.refused: dict[str, tuple[str, int]] = {}
        self.up = True
        world.attach(CATALOG, self.receive)
        world.after(self.RESTOCK, self.restock)

    def restock(self) -> None:
        if self.up:
            for name, left in self.stock.items():
                if left == 0:
                    self.stock[name] = self.initial
        self.world.after(self.RESTOCK, self.restock)

    def receive(self, source: Any, message: tuple[Any, ...]) -> None:
        if not self.up:
            return
        kind = message[0]
        if kind == "buy":
            _, key, name, quantity, epoch = message
            self.world.send(CATALOG, source, ("bought", key, self.buy(key, name, quantity, epoch)))
        elif kind == "reconcile":
            _, epoch = message
            self.fence = max(self.fence, epoch)
            buys = tuple((key, name, quantity) for key, (name, quantity) in self.sold.items())
            self.world.send(CATALOG, source, ("reconciled", epoch, buys))

    def buy(self, key: str, name: str, quantity: int, epoch: int) -> str:
        for answer, recorded in (("ok", self.sold), ("out of stock", self.refused)):
            if key in recorded:
                return answer if recorded[key] == (name, quantity) else "conflict"
        if epoch < self.fence:
            return "stale"
        self.fence = epoch
        if self.stock[name] < quantity:
            self.refused[key] = (name, quantity)
            return "out of stock"
        self.stock[name] -= quantity
        self.sold[key] = (name, quantity)
        return "ok"


class Replica:
    """One replica: the core, its disk, and the store's rules around it."""

    def __init__(self, world: World, checker: Checker, id: int, ids: tuple[int, ...], node_type: type[Node], timing: Timing) -> None:
        self.world = world
        self.checker = checker
        self.id = id
        self.ids = ids
        self.node_type = node_type
        self.timing = timing
        # the disk: survives crashes
        self.disk_state = State()
        self.disk_log: list[tuple[Any, ...]] = []
        self.up = False
        self.paused = False
        self.incarnation = 0
        self.node: Node
        world.attach(id, self.receive)

    # -- life -----------------------------------------------------------------------------

    def start(self) -> None:
        self.incarnation += 1
        self.up = True
        self.paused = False
        self._inbox: deque[tuple[Any, Any]] = deque()
        log = EpochLog()
        for record in self.disk_log:
            log.append(record_epoch(record))
        self.node = self.node_type(
            self.id,
            self.ids,
            DIGEST,
            self.disk_state,
            log,
            lambda epoch, leader: ("leader", epoch, leader),
            random.Random(self.world.rng.random()),
            self.world.now,
            self.timing,
        )
        self.records: list[tuple[Any, ...]] = list(self.disk_log)
        self.chain: list[int] = []
        self._rechain(0)
        self.keys: dict[str, int] = {}
        self.order_index: list[int] = []
        self._index_from(0)
        self.disk_free = self.world.now
        self.timer_generation = 0
        self.role = self.node.role
        self.epoch = self.node.epoch
        self.was_serving = False
        # orders under way at this leader
        self.buys: dict[str, tuple[str, int]] = {}
        self.waiting: dict[str, list[tuple[Any, int]]] = {}  # key -> [(client, request)]
        self.relayed: dict[int, tuple[Any, int]] = {}  # relay number -> (client, its request)
        self.relays = 0
        self.reconciling = False
        self.apply(self.node.tick(self.world.now))

    def crash(self, lose_disk: bool = False) -> None:
        """Stop at once: whatever was not durable is lost (with ``lose_disk``, everything is)."""
        self.up = False
        self.incarnation += 1
        if lose_disk:
            self.disk_state = State(voter=False)
            self.disk_log = []

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        inbox, self._inbox = self._inbox, deque()
        for event in inbox:
            self._handle(*event)

    # -- the log in memory, mirrored from the core's writes ----------------------------------

    def _rechain(self, start: int) -> None:
        del self.chain[start:]
        previous = self.chain[-1] if self.chain else 0
        for record in self.records[start:]:
            previous = hash((previous, record))
            self.chain.append(previous)

    def _index_from(self, start: int) -> None:
        for key in [key for key, index in self.keys.items() if index >= start]:
            del self.keys[key]
        while self.order_index and self.order_index[-1] >= start:
            self.order_index.pop()
        for index in range(start, len(self.records)):
            record = self.records[index]
            if record[0] == "order":
                self.keys[record[3]] = index
                self.order_index.append(index)

    def _write(self, write: Write) -> None:
        start = len(self.records)
        if write.truncate is not None:
            del self.records[write.truncate :]
            start = write.truncate
        if write.payloads:
            if write.start != len(self.records):
                raise Violation("shell", f"replica {self.id} asked to write at {write.start}, log holds {len(self.records)}")
            self.records.extend(write.payloads)
        if write.truncate is not None or write.payloads:
            start = min(start, write.start)
            self._rechain(start)
            self._index_from(start)
            self.checker.extended(self.id, self.chain, self.records, start)
        done = max(self.world.now, self.disk_free) + self.world.rng.uniform(0.0005, 0.005)
        self.disk_free = done
        self.world.at(done, self._durable, self.incarnation, write)

    def _durable(self, incarnation: int, write: Write) -> None:
        if incarnation != self.incarnation:
            return  # crashed before the fsync returned: the write is lost
        if write.state is not None:
            self.disk_state = write.state
        if write.truncate is not None:
            del self.disk_log[write.truncate :]
        if write.payloads:
            assert len(self.disk_log) == write.start, (self.id, len(self.disk_log), write.start)
            self.disk_log.extend(write.payloads)
        self._event("persisted", write.ticket)

    # -- events -----------------------------------------------------------------------------

    def receive(self, source: Any, message: Any) -> None:
        if self.up:
            self._event("message", source, message)

    def _event(self, kind: str, *args: Any) -> None:
        if self.paused:
            self._inbox.append((kind, args))
        else:
            self._handle(kind, args)

    def _handle(self, kind: str, args: tuple[Any, ...]) -> None:
        now = self.world.now
        try:
            if kind == "message":
                source, message = args
                if isinstance(message, tuple):
                    self._store_message(source, message)
                else:
                    self.apply(self.node.receive(message, now))
            elif kind == "persisted":
                self.apply(self.node.persisted(args[0], now))
            elif kind == "tick":
                if args[0] == self.timer_generation:
                    self.apply(self.node.tick(now))
            elif kind == "leader lost":
                self.apply(self.node.leader_lost(now))
        except ProtocolError as error:
            raise Violation("protocol", f"replica {self.id}: {error}") from error

    def _tick(self, incarnation: int, generation: int) -> None:
        if incarnation == self.incarnation and self.up:
            self._event("tick", generation)

    def apply(self, ready: Ready) -> None:
        """Carry out the core's effects, then look at what changed."""
        for write in ready.writes:
            self._write(write)
        for to, message in ready.messages:
            if isinstance(message, Append) and message.payloads is None:
                message = message.with_payloads(tuple(self.records[message.start : message.end]))
            self.world.send(self.id, to, message)
        for context, point in ready.reads:
            self._answer_read(context, point)
        for client, request, _ in ready.failed_reads:
            self.world.send(self.id, client, ("error", request, self.node.leader))
        self.timer_generation += 1
        if ready.deadline != float("inf"):
            self.world.at(ready.deadline, self._tick, self.incarnation, self.timer_generation)
        self._changed()

    def _changed(self) -> None:
        node = self.node
        if len(self.records) != len(node.log):
            raise Violation("shell", f"replica {self.id} mirrors {len(self.records)} records, the core has {len(node.log)}")
        if node.role is Role.LEADER:
            self.checker.leads(self.id, node.epoch, self.chain)
        self.checker.committed_at(self.id, node.commit, self.chain, self.records)
        if (self.role is Role.LEADER) and (node.role is not Role.LEADER or node.epoch != self.epoch):
            self._stop_serving()
        self.role, self.epoch = node.role, node.epoch
        serving = node.serving
        if serving and not self.was_serving:
            self.reconciling = True
            self.world.send(self.id, CATALOG, ("reconcile", node.epoch))
            self.world.after(BUY_RETRY * 4, self._reconcile_again, self.incarnation, node.epoch)
        self.was_serving = serving
        if node.role is Role.LEADER:
            self._answer_committed()

    # -- orders -------------------------------------------------------------------------------

    def _store_message(self, source: Any, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "order":
            self._order(source, *message[1:])
        elif kind == "read":
            self._read(source, *message[1:])
        elif kind == "bought":
            self._bought(*message[1:])
        elif kind == "reconciled":
            self._reconciled(*message[1:])
        elif kind in ("ok", "error", "refused", "found"):
            relayed = self.relayed.pop(message[1], None)
            if relayed is not None:
                client, request = relayed
                self.world.send(self.id, client, (kind, request, *message[2:]))

    def _order(self, client: Any, request: int, key: str, name: str, quantity: int, relayed: bool = False) -> None:
        node = self.node
        if not node.serving:
            leader = node.leader
            if not relayed and leader is not None and leader != self.id:
                self.world.send(self.id, leader, ("order", self._relay(client, request), key, name, quantity, True))
            else:
                self.world.send(self.id, client, ("error", request, leader))
            return
        self.waiting.setdefault(key, []).append((client, request))
        if key in self.keys:
            self._answer_committed()
        elif key not in self.buys:
            self.buys[key] = (name, quantity)
            self._buy(key)

    def _relay(self, client: Any, request: int) -> int:
        """A number for a request relayed to the leader, under which its answer comes back."""
        self.relays += 1
        self.relayed[self.relays] = (client, request)
        return self.relays

    def _buy(self, key: str) -> None:
        name, quantity = self.buys[key]
        self.world.send(self.id, CATALOG, ("buy", key, name, quantity, self.node.epoch))
        self.world.after(BUY_RETRY, self._buy_again, self.incarnation, self.node.epoch, key)

    def _buy_again(self, incarnation: int, epoch: int, key: str) -> None:
        """No definite answer yet: ask again with the same key (the catalog answers a recorded key as it did first)."""
        if incarnation == self.incarnation and self.up and key in self.buys and self.node.epoch == epoch:
            if not self.paused and self.node.role is Role.LEADER:
                self._buy(key)

    def _bought(self, key: str, answer: str) -> None:
        if key not in self.buys or self.node.role is not Role.LEADER:
            return
        name, quantity = self.buys.pop(key)
        if answer == "ok":
            self._log_order(key, name, quantity)
            return
        for client, request in self.waiting.pop(key, []):
            # fenced: a newer leader exists (its id unknown here); anything else is a refusal
            reply = ("error", request, None) if answer == "stale" else ("refused", request, answer)
            self.world.send(self.id, client, reply)
        if answer == "stale":  # as the replica does: step down at once (Node.deposed)
            self.apply(self.node.deposed(self.world.now))

    def _log_order(self, key: str, name: str, quantity: int) -> None:
        if key in self.keys:
            return
        record = ("order", self.node.epoch, len(self.order_index), key, name, quantity)
        try:
            ready, _ = self.node.propose([record], self.world.now)
        except NotServing:
            return  # stepped down meanwhile: the next leader adopts the buy when it reconciles
        self.apply(ready)

    def _answer_committed(self) -> None:
        commit = self.node.commit
        for key in [key for key in self.waiting if key in self.keys and self.keys[key] < commit]:
            number = self.records[self.keys[key]][2]
            self.checker.acknowledged(key, number)
            for client, request in self.waiting.pop(key):
                self.world.send(self.id, client, ("ok", request, number))

    def _stop_serving(self) -> None:
        for key, waiters in self.waiting.items():
            for client, request in waiters:
                self.world.send(self.id, client, ("error", request, self.node.leader))
        self.waiting.clear()
        self.buys.clear()
        self.reconciling = False

    def _reconcile_again(self, incarnation: int, epoch: int) -> None:
        if incarnation == self.incarnation and self.up and self.reconciling and self.node.epoch == epoch and self.node.serving:
            self.world.send(self.id, CATALOG, ("reconcile", epoch))
            self.world.after(BUY_RETRY * 4, self._reconcile_again, incarnation, epoch)

    def _reconciled(self, epoch: int, buys: tuple[tuple[str, str, int], ...]) -> None:
        """Adopt every buy the catalog made that the log lacks (its leader's answer was lost)."""
        if not self.reconciling or epoch != self.node.epoch or not self.node.serving:
            return
        self.reconciling = False
        for key, name, quantity in buys:
            if key not in self.keys and key not in self.buys:
                self._log_order(key, name, quantity)

    # -- reads ---------------------------------------------------------------------------------

    def _read(self, client: Any, request: int, number: int, relayed: bool = False) -> None:
        node = self.node
        try:
            self.apply(node.read((client, request, number), self.world.now))
        except NotServing:
            leader = node.leader
            if not relayed and leader is not None and leader != self.id:
                self.world.send(self.id, leader, ("read", self._relay(client, request), number, True))
            else:
                self.world.send(self.id, client, ("error", request, leader))

    def _answer_read(self, context: tuple[Any, int, int], point: int) -> None:
        client, request, number = context
        known = bisect_left(self.order_index, point)
        key = self.records[self.order_index[number]][3] if number < known else None
        self.world.send(self.id, client, ("found", request, key))


class Caller:
    """What clients and readers share: an address, the replica they believe leads, and one request at a time."""

    def __init__(self, world: World, checker: Checker, name: str, replicas: tuple[int, ...]) -> None:
        self.world = world
        self.checker = checker
        self.name = name
        self.replicas = replicas
        self.target = world.rng.choice(replicas)
        self.request = 0
        self.reading: tuple[int, str] | None = None
        world.attach(name, self.receive)

    def start(self) -> None:
        self.world.after(self.world.rng.uniform(0, 0.1), self._next)

    def _next(self) -> None:
        raise NotImplementedError

    def receive(self, source: Any, message: tuple[Any, ...]) -> None:
        raise NotImplementedError


class Client(Caller):
    """Orders one toy at a time, each under a key of its own, retrying it (same key) until answered; reads back what was acknowledged."""

    TIMEOUT = 0.5

    def __init__(self, world: World, checker: Checker, name: str, replicas: tuple[int, ...]) -> None:
        super().__init__(world, checker, name, replicas)
        self.current: tuple[str, str, int] | None = None
        self.count = 0
        self.acked: dict[str, int] = {}
        self.last = ""
        self.ordering = True

    def _next(self) -> None:
        if self.current is not None or self.reading is not None:
            return
        if self.acked and self.world.rng.random() < 0.3:
            # half the time the newest: a read right after its write is where a stale leader shows
            key = self.last if self.world.rng.random() < 0.5 else self.world.rng.choice(sorted(self.acked))
            self.reading = (self.acked[key], key)
        elif self.ordering:
            self.count += 1
            self.current = (f"{self.name}-{self.count}", self.world.rng.choice(TOYS), self.world.rng.randint(1, 3))
        else:
            return
        self._send()

    def _send(self) -> None:
        self.request += 1
        if self.reading is not None:
            self.world.send(self.name, self.target, ("read", self.request, self.reading[0]))
        else:
            assert self.current is not None
            self.world.send(self.name, self.target, ("order", self.request, *self.current))
        self.world.after(self.TIMEOUT, self._timeout, self.request)

    def _timeout(self, request: int) -> None:
        if request == self.request and (self.current is not None or self.reading is not None):
            self.target = self.world.rng.choice(self.replicas)
            self._send()

    def receive(self, source: Any, message: tuple[Any, ...]) -> None:
        kind, request = message[0], message[1]
        if request != self.request:
            return
        if kind == "error":
            leader = message[2]
            self.target = leader if leader is not None else self.world.rng.choice(self.replicas)
            self.world.after(0.01, self._retry, request)
            return
        if kind == "found" and self.reading is not None:
            number, key = self.reading
            self.checker.read(number, key, message[2])
            self.reading = None
        elif kind == "ok" and self.current is not None:
            self.acked[self.current[0]] = message[2]
            self.last = self.current[0]
            self.current = None
        elif kind == "refused" and self.current is not None:
            self.checker.refused(self.current[0])
            self.current = None
        else:
            return
        self.world.after(self.world.rng.uniform(0, 0.02), self._next)

    def _retry(self, request: int) -> None:
        if request == self.request:
            self._send()

    @property
    def busy(self) -> bool:
        return self.current is not None


class Reader(Caller):
    """
    Reads, again and again, the order acknowledged last (to anyone): a
    leader that answers from a commit point older than that order shows at
    once.
    """

    TIMEOUT = 0.2

    def __init__(self, world: World, checker: Checker, name: str, replicas: tuple[int, ...]) -> None:
        super().__init__(world, checker, name, replicas)
        self.running = True

    def _next(self) -> None:
        if not self.running:
            return
        self.reading = self.checker.newest
        if self.reading is None:
            self.world.after(0.01, self._next)
            return
        self.request += 1
        self.world.send(self.name, self.target, ("read", self.request, self.reading[0]))
        self.world.after(self.TIMEOUT, self._timeout, self.request)

    def _timeout(self, request: int) -> None:
        if request == self.request:
            self.target = self.world.rng.choice(self.replicas)
            self._next()

    def receive(self, source: Any, message: tuple[Any, ...]) -> None:
        kind, request = message[0], message[1]
        if request != self.request or self.reading is None:
            return
        self.request += 1
        if kind == "found":
            number, key = self.reading
            self.checker.read(number, key, message[2])
        elif kind == "error" and message[2] is not None:
            self.target = message[2]
        self.world.after(self.world.rng.uniform(0.001, 0.005), self._next)
