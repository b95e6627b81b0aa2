"""
Reconciliation: a leader makes every buy of the catalog an order of its log.

A leader buys from the catalog first and logs the order after.  If it dies
in between, the catalog has sold toys that no order log holds, and stock is
no longer conserved (initial + restocked - ordered = stock).  The catalog
keeps every buy with its key and a sequence number (``seq``), and orders in
the log carry the ``seq`` of their buy.  So a leader, once it serves (its
leader record committed, so its log holds every committed order), calls the
catalog's ``reconcile`` (:mod:`toystore.order.reconciling`), which

* fences the catalog at the new epoch, in the same serial order as buys: a
  buy of an older leader is either listed here or refused afterwards (412);
* lists the buys after the seq this log is known to hold all buys up to
  (:meth:`~toystore.order.journal.Log.reconciled`).

Buys whose key no order of the log has are *adopted*: appended as orders of
the new epoch.  The leader record states the ``reconciled`` seq of the log
it ends.  The client's retry with the same key then finds its order.  Adopting,
rather than giving the stock back, keeps the catalog's record of each key
final: a key the catalog has sold under is an order, once.

The log keeps :meth:`~toystore.order.journal.Log.reconciled` up to date
record by record (:class:`Reconciled`), so a new leader does not walk the
records of the last leadership, which may be far more than the log keeps in
memory.  The value may be lower than the exact one after a truncation or a
long-lasting gap in the seqs (see :class:`Reconciled`): that is safe, since
the new leader then lists more buys and finds their keys in its log.
"""

from __future__ import annotations

from typing import Any

#: Records between two snapshots of :class:`Reconciled`; a truncation
#: replays at most this many records from the last one before the cut.
CHECKPOINT_EVERY = 1024
#: Seqs past a gap held while they wait for it to fill; beyond this, the
#: highest are dropped (the gap's end is then not carried on past them).
MAX_PENDING = 4096


class Reconciled:
    """
    ``Log.reconciled()`` kept up to date as records are added: the last
    leader record's ``reconciled``, carried on by the seqs of the orders
    after it for as long as they run without a gap.

    Orders can come in a slightly different order than their seqs (buys
    answered out of order), so seqs past a gap wait in a set until the gap
    fills; the set is bounded (:data:`MAX_PENDING`).  For truncation, the
    state is snapshotted after every leader record and every
    :data:`CHECKPOINT_EVERY` records; :meth:`restore` goes back to the last
    snapshot before the cut, and the log replays the records after it that
    it still has in memory.  Dropped or unreplayed seqs can only make the
    value lower than the exact one, never higher: a new leader then asks the
    catalog for more buys than it needs, and adopts none of them twice.
    """

    def __init__(self) -> None:
        self.through = 0
        self._pending: set[int] = set()
        #: (records before it, through, pending) of each snapshot, in order
        self._checkpoints: list[tuple[int, int, tuple[int, ...]]] = [(0, 0, ())]

    def add(self, index: int, record: dict[str, Any]) -> None:
        """Account for record ``index`` (already checked by the log)."""
        if "leader" in record:
            self.through = record.get("reconciled", 0)
            self._pending = set()
            self._checkpoint(index + 1)
            return
        order = record.get("order")
        self.add_order(index, order.get("seq") if order is not None else None)

    def add_order(self, index: int, seq: int | None) -> None:
        """Account for record ``index``, an order whose buy has ``seq`` (None: not known)."""
        if seq is not None and seq > self.through:
            if seq == self.through + 1:
                self.through = seq
                while self._pending and self.through + 1 in self._pending:
                    self.through += 1
                    self._pending.remove(self.through)
            else:
                self._pending.add(seq)
                if len(self._pending) > MAX_PENDING:
                    self._pending = set(sorted(self._pending)[: MAX_PENDING // 2])
        if (index + 1) % CHECKPOINT_EVERY == 0:
            self._checkpoint(index + 1)

    def _checkpoint(self, records: int) -> None:
        if self._checkpoints[-1][0] == records:
            self._checkpoints.pop()
        self._checkpoints.append((records, self.through, tuple(sorted(self._pending))))

    def restore(self, length: int) -> int:
        """
        Go back to the state of the last snapshot taken within the first
        ``length`` records; the log must replay the records from the number
        returned up to ``length`` (those it has).
        """
        while self._checkpoints[-1][0] > length:
            self._checkpoints.pop()
        records, self.through, pending = self._checkpoints[-1]
        self._pending = set(pending)
        return records
