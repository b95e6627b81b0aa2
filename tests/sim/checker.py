"""
The invariants, checked as the run goes.

Each replica's log is followed as a chain of hashes (record ``i``'s hash
covers every record before it), so two logs agree on a prefix exactly when
their hashes at its end agree: checking that a log still holds the committed
prefix, or that two logs sharing a record share everything before it, is
one comparison, not a walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class Violation(AssertionError):
    """An invariant broke; ``kind`` names which."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


@dataclass
class Checker:
    #: epoch -> the replica that led it
    leaders: dict[int, int] = field(default_factory=dict)
    #: (index, epoch) -> the chain hash of the record there, first seen
    positions: dict[tuple[int, int], int] = field(default_factory=dict)
    #: the committed prefix, as chain hashes and as records
    committed: list[int] = field(default_factory=list)
    committed_records: list[tuple[Any, ...]] = field(default_factory=list)
    #: the committed orders, in number order: (key, name, quantity)
    orders: list[tuple[str, str, int]] = field(default_factory=list)
    order_keys: dict[str, int] = field(default_factory=dict)
    #: key -> order number, as acknowledged to clients
    acked: dict[str, int] = field(default_factory=dict)
    #: the order acknowledged last: (number, key)
    newest: tuple[int, str] | None = None
    #: keys whose orders a client was told are refused
    refusals: set[str] = field(default_factory=set)

    # -- logs ------------------------------------------------------------------------------

    def extended(self, replica: int, chain: list[int], records: list[tuple[Any, ...]], start: int) -> None:
        """Records ``start ..`` were added to a replica's log: they must agree with any record seen at the same index and epoch."""
        for index in range(start, len(records)):
            epoch = records[index][1]
            seen = self.positions.setdefault((index, epoch), chain[index])
            if seen != chain[index]:
                raise Violation(
                    "log matching",
                    f"replica {replica} holds record {index} of epoch {epoch} with a different history "
                    f"from another replica's: {records[index]}",
                )

    def committed_at(self, replica: int, point: int, chain: list[int], records: list[tuple[Any, ...]]) -> None:
        """A replica says its first ``point`` records are committed: they must be the committed prefix."""
        if point <= 0:
            return
        if point > len(chain):
            raise Violation("commit", f"replica {replica} says {point} records are committed but holds {len(chain)}")
        known = len(self.committed)
        check = min(point, known)
        if check and chain[check - 1] != self.committed[check - 1]:
            raise Violation(
                "committed prefix changed",
                f"replica {replica}'s first {check} records differ from what was committed before",
            )
        for index in range(known, point):
            self.committed.append(chain[index])
            self._commit_record(records[index], index)

    def _commit_record(self, record: tuple[Any, ...], index: int) -> None:
        self.committed_records.append(record)
        if record[0] != "order":
            return
        _, _, number, key, name, quantity = record
        if number != len(self.orders):
            raise Violation("order numbers", f"record {index} has order number {number}, expected {len(self.orders)}")
        if key in self.order_keys:
            raise Violation("exactly once", f"key {key!r} logged as order {self.order_keys[key]} and again as {number}")
        if key in self.refusals:
            raise Violation("refused order placed", f"key {key!r} was refused to its client and is order {number}")
        self.order_keys[key] = number
        self.orders.append((key, name, quantity))
        if key in self.acked and self.acked[key] != number:
            raise Violation("acknowledged order", f"key {key!r} was acknowledged as {self.acked[key]} but is {number}")

    def leads(self, replica: int, epoch: int, chain: list[int]) -> None:
        """``replica`` leads ``epoch``: the only one to, and its log holds every committed record."""
        other = self.leaders.setdefault(epoch, replica)
        if other != replica:
            raise Violation("one leader per epoch", f"replicas {other} and {replica} both lead epoch {epoch}")
        self.complete(replica, epoch, chain)

    def complete(self, replica: int, epoch: int, chain: list[int]) -> None:
        known = len(self.committed)
        if not known or self.committed_records[-1][1] > epoch:
            return
        if len(chain) < known or chain[known - 1] != self.committed[known - 1]:
            raise Violation(
                "leader completeness",
                f"replica {replica} leads epoch {epoch} without the {known} committed records",
            )

    # -- what clients saw ------------------------------------------------------------------

    def acknowledged(self, key: str, number: int) -> None:
        self.newest = (number, key)
        previous = self.acked.setdefault(key, number)
        if previous != number:
            raise Violation("acknowledged order", f"key {key!r} acknowledged as {previous} and as {number}")
        if number < len(self.orders) and self.orders[number][0] != key:
            raise Violation("acknowledged order", f"order {number} acknowledged for {key!r} is {self.orders[number][0]!r}")
        if key in self.order_keys and self.order_keys[key] != number:
            raise Violation("acknowledged order", f"key {key!r} acknowledged as {number}, committed as {self.order_keys[key]}")

    def refused(self, key: str) -> None:
        """A client was told, definitely, that the order under ``key`` is refused: it must never be placed."""
        self.refusals.add(key)
        if key in self.order_keys:
            number = self.order_keys[key]
            raise Violation("refused order placed", f"key {key!r} was refused to its client and is order {number}")

    def read(self, number: int, key: str, answer: str | None) -> None:
        """A read of acknowledged order ``number`` (``key``), started after its acknowledgement, answered ``answer``."""
        if answer != key:
            raise Violation("stale read", f"order {number} ({key!r}) was acknowledged, a later read answered {answer!r}")

    # -- the end ------------------------------------------------------------------------------

    def final(self, sold: dict[str, tuple[str, int]]) -> None:
        """After healing: every acknowledged order is in the log, and the catalog sold exactly what the log orders."""
        for key, number in self.acked.items():
            if number >= len(self.orders) or self.orders[number][0] != key:
                raise Violation("lost order", f"order {number} ({key!r}) was acknowledged and is not in the log")
        logged = {key: (name, quantity) for key, name, quantity in self.orders}
        if logged != sold:
            missing = sorted(set(sold) - set(logged))[:5]
            extra = sorted(set(logged) - set(sold))[:5]
            raise Violation(
                "conservation",
                f"the catalog sold {len(sold)} buys, the log orders {len(logged)}: "
                f"sold but not logged {missing}, logged but not sold {extra}",
            )
