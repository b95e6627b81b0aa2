"""
Bugs planted on purpose, to show that the simulator finds them: each is the
real core with one rule broken.
"""

from __future__ import annotations

from toystore.order.core import Node, Role


class VoteWithoutLogCheck(Node):
    """Grants a vote (and a pre-vote) whatever the candidate's log."""

    def _up_to_date(self, last_epoch: int, length: int) -> bool:
        return True


class ServeBeforeCommit(Node):
    """A new leader serves (orders and reads) before its leader record is committed."""

    @property
    def serving(self) -> bool:
        return self.role is Role.LEADER and self.handover_to is None


BUGS: dict[str, type[Node]] = {
    "vote-without-log-check": VoteWithoutLogCheck,
    "serve-before-commit": ServeBeforeCommit,
}
