"""
Bugs planted on purpose, to show that the simulator finds them: each is the
real core, or the simulated catalog, with one rule broken.
"""

from __future__ import annotations

from toystore.order.core import Node, Role

from .store import Catalog


class VoteWithoutLogCheck(Node):
    """Grants a vote (and a pre-vote) whatever the candidate's log."""

    def _up_to_date(self, last_epoch: int, length: int) -> bool:
        return True


class ServeBeforeCommit(Node):
    """A new leader serves (orders and reads) before its leader record is committed."""

    @property
    def serving(self) -> bool:
        return self.role is Role.LEADER and self.handover_to is None


class ForgetRefusals(Catalog):
    """
    The catalog records sales but not refusals, so a refused key is free again: a late copy of
    its first attempt may sell it after a restock (as the catalog did before refusals were kept).
    """

    def buy(self, key: str, name: str, quantity: int, epoch: int) -> str:
        answer = super().buy(key, name, quantity, epoch)
        self.refused.pop(key, None)
        return answer


#: each planted bug: the core's or the catalog's class with one rule broken
BUGS: dict[str, type[Node] | type[Catalog]] = {
    "vote-without-log-check": VoteWithoutLogCheck,
    "serve-before-commit": ServeBeforeCommit,
    "catalog-forgets-refusals": ForgetRefusals,
}
