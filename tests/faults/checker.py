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
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from toystore.order.journal import Log

from .buyers import Attempt

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
