"""
The checker: after the store has healed and gone quiet, count every way the
invariants of ``docs/architecture.rst`` could have been broken.  Every count
should be zero.

``lost``
    an acknowledged order (a key that got a 200 with number n) that is not
    order n of that key, with the same toy and quantity, in every replica's
    log;
``unexpected``
    an order in the log whose key no client ever sent;
``failed_but_present``
    an order whose every attempt was definitely refused (4xx, or never
    sent), yet it is in the log;
``duplicated``
    a key that holds more than one order, or an order number given twice;
``reply_mismatch``
    the same key answered with two different order numbers;
``logs_differ``
    replica logs that are not byte-identical to replica 1's;
``conservation``
    toys for which initial + restocked - ordered (summed over the log) is
    not the catalog's stock;
``sold_not_ordered``
    toys whose quantity sold by the catalog differs from the quantity ordered
    in the log;
``negative_stock``
    toys with a stock below zero.

Availability is measured, not counted as a violation (:func:`availability`):
per fault kind, the share of the orders first tried while a fault of that
kind held that were acknowledged within the buyers' timeout, and the longest
gap between consecutive acknowledgements around those faults.  A run fails
on them only when given thresholds (:func:`availability_misses`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Sequence

from toystore.order.journal import Log

from .buyers import TIMEOUT, Attempt

COUNTS = (
    "lost",
    "unexpected",
    "failed_but_present",
    "duplicated",
    "reply_mismatch",
    "logs_differ",
    "conservation",
    "sold_not_ordered",
    "negative_stock",
)


def orders_of(log: bytes) -> list[dict[str, Any]]:
    """The order records of a log file's bytes, in order."""
    parsed = Log(log.splitlines(keepends=True))
    return [parsed.records[index]["order"] for index in parsed.orders]


def check(
    attempts: Iterable[Attempt],
    logs: dict[int, bytes],
    ledger: dict[str, dict[str, int]],
    mismatches: Iterable[str] = (),
) -> tuple[dict[str, int], list[str]]:
    """
    Count the violations.

    :return: the counts (every name of :data:`COUNTS`), and one line of
        detail per violation, for the report of a failing run.
    """
    counts = dict.fromkeys(COUNTS, 0)
    details: list[str] = []

    def violation(kind: str, detail: str) -> None:
        counts[kind] += 1
        details.append(f"{kind}: {detail}")

    reference_id = min(logs)
    for i, log in sorted(logs.items()):
        if log != logs[reference_id]:
            violation("logs_differ", f"replica {i}'s log differs from replica {reference_id}'s")

    per_replica = {i: orders_of(log) for i, log in logs.items()}
    keyed_per_replica: dict[int, dict[str, dict[str, Any]]] = {}
    for i, its in per_replica.items():
        keyed_per_replica[i] = {}
        for order in its:
            keyed_per_replica[i].setdefault(order["key"], order)
    orders = per_replica[reference_id]
    by_key: dict[str, list[dict[str, Any]]] = {}
    for order in orders:
        by_key.setdefault(order["key"], []).append(order)
    for key, found in by_key.items():
        if len(found) > 1:
            violation("duplicated", f"key {key} holds orders {[o['number'] for o in found]}")
    for number, times in Counter(o["number"] for o in orders).items():
        if times > 1:
            violation("duplicated", f"order number {number} given {times} times")

    tried: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        tried.setdefault(attempt.key, []).append(attempt)
    for key, its in tried.items():
        numbers = {a.number for a in its if a.outcome == "ok"}
        if len(numbers) > 1:
            violation("reply_mismatch", f"key {key} answered {sorted(numbers)}")
        for number in numbers:
            expected = (number, its[0].name, its[0].quantity)
            missing = [
                i
                for i, keyed in sorted(keyed_per_replica.items())
                if key not in keyed or (keyed[key]["number"], keyed[key]["name"], keyed[key]["quantity"]) != expected
            ]
            if missing:
                violation("lost", f"key {key}, acknowledged as order {number}, is not so in the log of {missing}")
        if key in by_key and all(a.outcome == "failed" for a in its):
            violation(
                "failed_but_present", f"key {key} was refused ({its[-1].code}) but is order {by_key[key][0]['number']}"
            )
    for key, found in by_key.items():
        if key not in tried:
            violation("unexpected", f"order {found[0]['number']} has key {key}, which no client sent")
    for line in mismatches:
        violation("reply_mismatch", line)

    ordered = Counter()
    for order in orders:
        ordered[order["name"]] += order["quantity"]
    for name, row in sorted(ledger.items()):
        if row["quantity"] < 0:
            violation("negative_stock", f"{name}: {row['quantity']}")
        if row["initial"] + row["restocked"] - ordered[name] != row["quantity"]:
            violation(
                "conservation",
                f"{name}: {row['initial']} + {row['restocked']} - {ordered[name]} ordered"
                f" != {row['quantity']} in stock",
            )
        if row["sold"] != ordered[name]:
            violation("sold_not_ordered", f"{name}: the catalog sold {row['sold']}, the log has {ordered[name]}")
    return counts, details


#: The figures of one row of :func:`availability`.
ROW = ("faults", "tried", "refused", "acknowledged", "availability", "max_gap", "gaps")


def _row(faults: int = 0) -> dict[str, Any]:
    return {
        "faults": faults,
        "tried": 0,
        "refused": 0,
        "acknowledged": 0,
        "availability": None,
        "max_gap": None,
        "gaps": [],
    }


def _share(row: dict[str, Any]) -> dict[str, Any]:
    answerable = row["tried"] - row["refused"]
    row["availability"] = round(row["acknowledged"] / answerable, 4) if answerable else None
    return row


def availability(
    attempts: Iterable[Attempt],
    faults: Sequence[dict[str, Any]],
    window: tuple[float, float],
    timeout: float = TIMEOUT,
) -> dict[str, Any]:
    """
    How available the store was while each kind of fault held.

    An *order* is a key; it is *first tried* when its first attempt starts.
    It is *acknowledged* if an attempt with its key got a 200 that ended at
    most ``timeout`` seconds after that start, and *refused* if instead one
    got a definite refusal from the store (a 4xx, such as 409 out of stock)
    within that time: the store answered, and there was nothing to
    acknowledge.  A connection refused (the front-end down), a 5xx or a
    timeout is neither.  A fault *holds* from its ``at`` to its ``healed``
    (seconds on the buyers' clock); an order first tried while it holds
    counts for its kind (``fault``).

    Each row has ``faults`` (how many), ``tried``, ``refused``,
    ``acknowledged``, ``availability`` (acknowledged / (tried - refused), or
    None when that is 0), ``max_gap``: the longest time between
    consecutive acknowledgements (an order's first 200, however late), the
    ``window``'s ends counting as acknowledgements, that overlaps a fault of
    the kind (for ``overall``: anywhere in the window), and ``gaps``: that
    longest gap for each fault of the kind, in order.  A gap that begins
    before a fault or ends after its heal counts whole: the outage it caused
    lasts until orders are acknowledged again.

    :param window: when the buyers started and stopped; only attempts that
        started in it count.
    :return: ``{"kinds": {kind: row}, "no_fault": row, "overall": row}``:
        ``no_fault`` holds the orders first tried while no fault held (its
        ``max_gap`` is None), ``overall`` every order and the longest gap
        of the window.
    """
    start, end = window
    by_key: dict[str, list[Attempt]] = {}
    for attempt in sorted(attempts, key=lambda a: a.started):
        if start <= attempt.started <= end:
            by_key.setdefault(attempt.key, []).append(attempt)
    acks = []
    orders: list[tuple[float, str]] = []  # when first tried, and "acknowledged", "refused" or ""
    for its in by_key.values():
        first = its[0].started
        oks = [a.ended for a in its if a.outcome == "ok"]
        if oks:
            acks.append(min(oks))
        if any(ended <= first + timeout for ended in oks):
            orders.append((first, "acknowledged"))
        elif any(a.outcome == "failed" and a.code is not None and a.ended <= first + timeout for a in its):
            orders.append((first, "refused"))
        else:
            orders.append((first, ""))
    points = [start, *sorted(t for t in acks if start <= t <= end), end]

    def longest_gap(at: float, healed: float) -> float:
        """The longest gap between consecutive points that overlaps [at, healed]."""
        return max(
            (b - a for a, b in zip(points, points[1:]) if b >= at and a <= healed),
            default=0.0,
        )

    kinds: dict[str, dict[str, Any]] = {}
    for fault in faults:
        row = kinds.setdefault(fault["fault"], _row())
        row["faults"] += 1
        gap = round(longest_gap(fault["at"], fault["healed"]), 3)
        row["max_gap"] = max(row["max_gap"] or 0.0, gap)
        row["gaps"].append(gap)
    no_fault, overall = _row(), _row(len(faults))
    for first, outcome in orders:
        holding = {f["fault"] for f in faults if f["at"] <= first <= f["healed"]}
        for row in [kinds[kind] for kind in sorted(holding)] or [no_fault]:
            _count(row, outcome)
        _count(overall, outcome)
    overall["max_gap"] = round(longest_gap(start, end), 3)
    return {
        "kinds": {kind: _share(row) for kind, row in sorted(kinds.items())},
        "no_fault": _share(no_fault),
        "overall": _share(overall),
    }


def _count(row: dict[str, Any], outcome: str) -> None:
    row["tried"] += 1
    if outcome:
        row[outcome] += 1


def merge_availability(figures: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The :func:`availability` of several runs as one: counts added, the longest gaps kept."""

    def add(total: dict[str, Any] | None, row: dict[str, Any]) -> dict[str, Any]:
        total = total or _row()
        for name in ("faults", "tried", "refused", "acknowledged"):
            total[name] += row[name]
        if row["max_gap"] is not None:
            total["max_gap"] = max(total["max_gap"] or 0.0, row["max_gap"])
        total["gaps"] = total["gaps"] + row["gaps"]
        return total

    kinds: dict[str, dict[str, Any]] = {}
    no_fault = overall = None
    for figure in figures:
        for kind, row in figure["kinds"].items():
            kinds[kind] = add(kinds.get(kind), row)
        no_fault, overall = add(no_fault, figure["no_fault"]), add(overall, figure["overall"])
    return {
        "kinds": {kind: _share(row) for kind, row in sorted(kinds.items())},
        "no_fault": _share(no_fault or _row()),
        "overall": _share(overall or _row()),
    }


def availability_misses(
    figures: dict[str, Any], min_availability: float | None = None, max_gap: float | None = None
) -> list[str]:
    """
    One line for each fault kind whose availability is below
    ``min_availability``, or whose longest gap is above ``max_gap`` (the
    longest gap of the whole run too); nothing when neither is given.  A
    kind with no order that could be acknowledged has no availability to
    judge.
    """
    misses = []
    rows = [*figures["kinds"].items(), ("the run", figures["overall"])]
    for kind, row in rows:
        share = row["availability"]
        if min_availability is not None and kind != "the run" and share is not None and share < min_availability:
            misses.append(
                f"availability under {kind}: {share:.1%} of {row['tried'] - row['refused']} orders"
                f" acknowledged, below {min_availability:.1%}"
            )
        if max_gap is not None and row["max_gap"] is not None and row["max_gap"] > max_gap:
            misses.append(f"longest gap between acknowledged orders under {kind}: {row['max_gap']:g} s > {max_gap:g} s")
    return misses


def describe_availability(figures: dict[str, Any]) -> str:
    """The figures on one line: each kind, no fault, and the longest gap."""

    def one(name: str, row: dict[str, Any]) -> str:
        answerable = row["tried"] - row["refused"]
        share = "-" if row["availability"] is None else f"{row['availability']:.0%}"
        gap = "" if row["max_gap"] is None else f", gap {row['max_gap']:.1f} s"
        return f"{name} {share} of {answerable}{gap}"

    parts = [one(kind, row) for kind, row in figures["kinds"].items()]
    parts.append(one("no fault", figures["no_fault"]))
    return "; ".join(parts) + f"; longest gap {figures['overall']['max_gap'] or 0:.1f} s"
