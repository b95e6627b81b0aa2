"""
A serving leader's pass over the catalog's buys: every buy that no order of
the log holds is adopted (:mod:`toystore.order.reconcile` says why).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..envelope import ApiError, StaleEpoch
from .log import Log
from .reads import LogReads

#: Seconds before a leader asks an unreachable catalog again.
RETRY = 0.2


class Leader(Protocol):
    """What a pass needs of the replica."""

    catalog: Any
    clock: IReactorTime
    order_log: Log
    reads: LogReads

    def serving_in(self, epoch: int) -> bool: ...

    def adopt(self, key: str, name: str, quantity: int, seq: int) -> bool: ...

    def deposed(self, why: str) -> None: ...


class Reconciliation:
    """
    A serving leader's reconciliation with the catalog: one pass per
    leadership, a page of buys at a time, while the leader serves (so no
    length of the log makes an election slow: heartbeats go on meanwhile).
    Each buy whose key no order of the log holds, and that is not being
    logged already, is adopted (:meth:`~toystore.order.replica.Replica.adopt`).
    The catalog unreachable, the pass asks again until it answers or the
    leadership ends.

    :param replica: the replica (its log, its catalog client, its orders under way).
    """

    log = Logger()

    def __init__(self, replica: Leader) -> None:
        self.replica = replica
        self.epoch: int | None = None  # of the last pass started
        self.finished: int | None = None  # the epoch of the last pass that ended
        self.adopted = 0  # buys adopted, in every pass
        self._running: Deferred[None] | None = None

    def start(self, epoch: int) -> None:
        """Begin the pass of the leadership of ``epoch``."""
        self.stop()
        self.epoch = epoch
        self._running = Deferred.fromCoroutine(self._run(epoch))
        self._running.addErrback(self._failed, epoch)

    def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.cancel()

    def _failed(self, failure: Failure, epoch: int) -> None:
        if not failure.check(CancelledError):
            self.log.failure("reconciliation in epoch {epoch} failed", failure, epoch=epoch)

    async def _run(self, epoch: int) -> None:
        replica = self.replica
        through = replica.order_log.reconciled()
        adopted: list[str] = []
        while replica.serving_in(epoch):
            try:
                reply = await replica.catalog.call("reconcile", {"epoch": epoch, "after": through})
            except StaleEpoch as e:
                replica.deposed(f"the catalog refuses epoch {epoch}: {e.message}")
                return
            except ApiError as e:
                self.log.info("cannot reconcile with the catalog yet ({error}): asking again", error=e.message)
                await deferLater(replica.clock, RETRY, lambda: None)
                continue
            for buy in reply["buys"]:
                key = buy["key"]
                if await replica.reads.find_order(key) is None and replica.serving_in(epoch):
                    if replica.adopt(key, buy["name"], buy["quantity"], buy["seq"]):
                        adopted.append(key)
                through = buy["seq"]
            if not reply["more"]:
                break
        self.adopted += len(adopted)
        self.finished = epoch
        if adopted:
            self.log.warn(
                "adopted {n} buy(s) the catalog made for a leader that died before logging them: keys {keys}",
                n=len(adopted),
                keys=", ".join(adopted),
            )
