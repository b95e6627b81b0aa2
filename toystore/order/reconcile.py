"""
Reconciliation: a new leader makes every buy of the catalog an order of its
log before it serves.

A leader buys from the catalog first and logs the order after.  If it dies
in between, the catalog has sold toys that no order log holds, and stock is
no longer conserved (initial + restocked - ordered = stock).  The catalog
keeps every buy with its key and a sequence number (``seq``), and orders in
the log carry the ``seq`` of their buy.  So a new leader, once its log is
the most up to date, calls the catalog's ``reconcile``, which

* fences the catalog at the new epoch, in the same serial order as buys: a
  buy of an older leader is either listed here or refused afterwards (412);
* lists the buys after the seq this log is known to hold all buys up to
  (:meth:`~toystore.order.journal.Log.reconciled`).

Buys whose key no order of the log has are *adopted*: appended as orders of
the new epoch, before the leader record, which states the new ``reconciled``
seq.  The client's retry with the same key then finds its order.  Adopting,
rather than giving the stock back, keeps the catalog's record of each key
final: a key the catalog has sold under is an order, once.
"""

from __future__ import annotations

from typing import Any

from ..envelope import ApiError, Unavailable
from .journal import Log


async def unlogged_buys(catalog: Any, log: Log, epoch: int) -> tuple[list[dict[str, Any]], int]:
    """
    Fence the catalog at ``epoch`` and find the buys ``log`` lacks.

    :return: those buys (``seq``, ``key``, ``name``, ``quantity``), oldest
        first, and the seq up to which the log holds every buy once they are
        appended.
    :raises StaleEpoch: the catalog has seen a newer epoch.
    :raises Unavailable: the catalog cannot be reached (nobody can buy then).
    """
    through = log.reconciled()
    missing: list[dict[str, Any]] = []
    while True:
        try:
            reply = await catalog.call("reconcile", {"epoch": epoch, "after": through})
        except ApiError as e:
            if e.code == 412:
                raise
            raise Unavailable(f"cannot reconcile with the catalog before leading: {e.message}") from None
        for buy in reply["buys"]:
            through = buy["seq"]
            if buy["key"] not in log.keys:
                missing.append(buy)
        if not reply["more"]:
            return missing, through
