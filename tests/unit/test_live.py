"""Tests for the dashboard's live view, :mod:`toystore.frontend.live` (no reactor)."""

from __future__ import annotations

from typing import Any

import pytest

from toystore.frontend.live import BURST, LiveView, Look, RequestTotals, quantile
from toystore.stats import SECONDS


def status(i: int, role: str = "follower", epoch: int = 2, length: int = 10, **more: Any) -> dict[str, Any]:
    return {
        "id": i,
        "role": role,
        "epoch": epoch,
        "serving": role == "leader",
        "length": length,
        "commit": length,
        "last_order": length - 2,
        **more,
    }


def look(at: float, **fields: Any) -> Look:
    """A look at a calm store: replica 3 leads epoch 2, every replica holds 10 records, the cache is empty."""
    versions: dict[str, int] = fields.pop("versions", {})
    base: dict[str, Any] = {
        "at": at,
        "leader": 3,
        "via": 3,
        "epoch": 2,
        "replicas": {1: status(1), 2: status(2), 3: status(3, "leader")},
        "catalog_up": True,
        "cache_size": 3,
        "cache_keys": [],
        "cache_counts": {"hits": 0, "misses": 0, "evictions": 0, "invalidations": 0, "clears": 0},
        "cache_version": lambda name: versions.get(name, 0),
        "requests": {},
        "bounds": SECONDS,
    }
    return Look(**{**base, **fields})


def test_quantile_interpolates_within_a_bucket() -> None:
    bounds = (0.001, 0.01, 0.1)
    assert quantile(bounds, [0, 0, 0, 0], 0.5) is None
    assert quantile(bounds, [10, 0, 0, 0], 0.5) == pytest.approx(0.0005)  # half way through (0, 1 ms]
    assert quantile(bounds, [0, 4, 0, 0], 0.25) == pytest.approx(0.001 + 0.009 * 0.25)
    assert quantile(bounds, [50, 49, 1, 0], 0.99) == pytest.approx(0.01)  # the 99th of 100 ends the second bucket
    assert quantile(bounds, [0, 0, 0, 5], 0.5) == 0.1  # beyond the last bound: the last bound


def test_first_look_has_every_section_and_an_unchanged_look_nothing() -> None:
    view = LiveView()
    change = view.look(look(100.0))
    assert change is not None
    assert set(change) >= {"frontend", "processes", "leader", "cache", "catalog", "requests", "at"}
    roles = {p["name"]: (p["role"], p["up"]) for p in change["processes"]}
    assert roles == {
        "frontend": ("front-end", True),
        "catalog": ("catalog", True),
        "order-1": ("follower", True),
        "order-2": ("follower", True),
        "order-3": ("leader", True),
    }
    assert change["leader"] == {"id": 3, "epoch": 2, "since": 100.0}
    assert view.look(look(100.5)) is None
    snapshot = view.snapshot()
    assert snapshot["leader"]["id"] == 3 and snapshot["events"] == [] and snapshot["elections"] == []


def test_leader_change_with_its_outage_and_a_replica_down_then_caught_up() -> None:
    view = LiveView()
    view.look(look(100.0))
    down = {1: status(1, epoch=3), 2: status(2, "leader", epoch=3, length=12), 3: None}
    change = view.look(look(101.0, leader=2, via=2, epoch=3, replicas=down, outage=0.42))
    assert change is not None
    assert change["elections"] == [{"at": 101.0, "epoch": 3, "leader": 2, "previous": 3, "unavailable": 0.42}]
    texts = [(e["kind"], e["text"]) for e in change["events"]]
    assert ("down", "order-3 does not answer") in texts
    assert ("election", "order-2 leads epoch 3 (orders unavailable 0.42 s)") in texts
    order3 = next(p for p in change["processes"] if p["name"] == "order-3")
    assert (order3["up"], order3["role"]) == (False, "down")
    assert next(p for p in change["processes"] if p["name"] == "order-1")["lag"] == 2

    back = {**down, 3: status(3, epoch=3, length=4)}
    change = view.look(look(102.0, leader=2, via=2, epoch=3, replicas=back))
    order3 = next(p for p in change["processes"] if p["name"] == "order-3")
    assert order3["catching_up"] == {"have": 4, "of": 12} and order3["lag"] == 8
    assert [e["kind"] for e in change["events"]] == ["up"]
    caught = {**back, 3: status(3, epoch=3, length=12)}
    change = view.look(look(103.0, leader=2, via=2, epoch=3, replicas=caught))
    assert next(p for p in change["processes"] if p["name"] == "order-3")["catching_up"] is None
    assert [e["text"] for e in change["events"]] == ["order-3 caught up with the leader (12 records)"]
    assert [e["kind"] for e in view.snapshot()["events"]] == ["down", "election", "up", "caught-up"]


def test_the_outage_counts_from_the_first_look_without_the_leader() -> None:
    view = LiveView()
    view.look(look(100.0))
    gone = {1: status(1), 2: status(2), 3: None}
    view.look(look(100.5, replicas=gone))
    view.look(look(101.0, replicas=gone))
    change = view.look(
        look(101.5, leader=2, via=2, epoch=3, replicas={**gone, 2: status(2, "leader", epoch=3)}, outage=0.2)
    )
    assert change["elections"][0]["unavailable"] == 1.0  # seen gone at 100.5; the front-end's own outage was shorter


def test_a_handover_costs_no_outage_and_the_first_leader_is_no_election() -> None:
    view = LiveView()
    assert "elections" not in view.look(look(100.0))
    change = view.look(look(101.0, leader=2, via=2, epoch=3))
    assert change["elections"][0]["unavailable"] == 0.0


def test_cache_names_leaving_are_told_apart_evicted_or_invalidated() -> None:
    view = LiveView()
    view.look(look(100.0, cache_keys=["Tux", "Fox", "Elephant"]))
    change = view.look(
        look(
            101.0,
            cache_keys=["Elephant", "Whale"],
            versions={"Fox": 1},
            cache_counts={"hits": 4, "misses": 4, "evictions": 1, "invalidations": 1, "clears": 0},
        )
    )
    cache = change["cache"]
    assert cache["keys"] == ["Elephant", "Whale"]
    assert (cache["evicted"], cache["invalidated"]) == (["Tux"], ["Fox"])
    assert (cache["capacity"], cache["evictions"], cache["invalidations"]) == (3, 1, 1)


def test_an_invalidation_burst_is_noted_once_in_a_while() -> None:
    view = LiveView()
    counts = {"hits": 0, "misses": 0, "evictions": 0, "clears": 0}
    view.look(look(100.0, cache_counts={**counts, "invalidations": 0}))
    change = view.look(look(100.5, cache_counts={**counts, "invalidations": BURST}))
    assert [e["kind"] for e in change["events"]] == ["invalidations"]
    change = view.look(look(101.0, cache_counts={**counts, "invalidations": 2 * BURST}))
    assert "events" not in change  # within the quiet time
    change = view.look(look(106.0, cache_counts={**counts, "invalidations": 3 * BURST}))
    assert [e["text"] for e in change["events"]] == [f"{BURST} cache entries invalidated at once"]


def test_requests_rate_and_percentiles_over_the_window() -> None:
    view = LiveView(window=10.0)
    empty = [0] * (len(SECONDS) + 1)
    fast = list(empty)
    fast[1] = 100  # 100 products in (0.5 ms, 1 ms]
    view.look(look(100.0, requests={"product": RequestTotals(0, 0, list(empty))}))
    change = view.look(
        look(
            102.0,
            requests={
                "product": RequestTotals(100, 0, fast),
                "order": RequestTotals(4, 1, [0, 0, 0, 0, 0, 0, 4] + empty[7:]),
            },
        )
    )
    kinds = change["requests"]["kinds"]
    assert kinds["product"]["rate"] == 50.0
    assert kinds["product"]["p50"] == pytest.approx(0.00075)
    assert kinds["order"]["rate"] == 2.0 and kinds["order"]["errors"] == 0.25
    assert kinds["order_query"] == {"rate": 0.0, "p50": None, "p99": None, "errors": 0.0}
    # Twelve seconds later nothing new: the window holds no request any more.
    later = {"product": RequestTotals(100, 0, fast), "order": RequestTotals(4, 1, [0, 0, 0, 0, 0, 0, 4] + empty[7:])}
    view.look(look(108.0, requests=later))
    change = view.look(look(114.0, requests=later))
    assert change["requests"]["kinds"]["product"]["rate"] == 0.0


def test_restocks_and_stock_come_from_the_catalog() -> None:
    view = LiveView()
    view.look(look(100.0))
    view.stock([{"name": "Tux", "price": 15.99, "quantity": 0}, {"name": "Fox", "price": 9.99, "quantity": 3}])
    view.pushed(100.2, ["Tux"], "buy")
    view.pushed(100.4, ["Tux", "Whale"], "restock")
    change = view.look(look(100.5, catalog_up=False))
    assert change["catalog"]["toys"][0]["name"] == "Fox"  # sorted by name
    assert (change["catalog"]["up"], change["catalog"]["restocks"]) == (False, 2)
    assert [(e["kind"], e["text"]) for e in change["events"]] == [
        ("restock", "catalog restocked Tux, Whale"),
        ("down", "catalog unreachable"),
    ]
