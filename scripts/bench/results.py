"""
The figures of ``python -m scripts.bench``: the ceiling's mean, each row's
ratio to it, the issue's targets met or not, and the printed table.
"""

from __future__ import annotations

import statistics
from typing import Any

from scripts.bench.references import CASE_PROCESSES
from toystore.measure import table

#: The cases, in the order of the table, by their ``--cases`` names.
CASES = {
    "ceiling": "ceiling",
    "forwarder": "bare forwarder",
    "cached": "product (cached)",
    "uncached": "product (uncached)",
    "order-query": "order query",
    "order": "order",
}
#: Ratio to the ceiling each case should reach (since the replicas elect their leader).
RATIO_TARGETS = {"product (cached)": 1.00, "product (uncached)": 0.60, "order query": 0.60}
ORDER_TARGET = {"connections": 16, "per_s": 1000.0, "p99_ms": 50.0}


def mean_ceiling(runs: list[dict[str, Any]], connections: int) -> dict[str, Any]:
    """The ceiling row at ``connections``: the mean of its runs (figure by figure)."""
    mine = [r for r in runs if r["connections"] == connections]
    row = dict(mine[0])
    for key in ("req_per_s", "p50_ms", "p90_ms", "p99_ms", "mean_ms"):
        row[key] = statistics.fmean(r[key] for r in mine)
    row["requests"] = sum(r["requests"] for r in mine)
    row["errors"] = sum(r["errors"] for r in mine)
    row["runs"] = len(mine)
    return row


def merge_rounds(rounds: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """
    One row from rounds of ``(ceiling row, case row)``: the case's requests,
    errors and seconds summed, its rate over them, its latencies the median
    round's (the maximum the largest), each process's CPU share the mean,
    its elections the sum; and ``ratio``, the median of the rounds' ratios
    of the case's rate to the ceiling's run just before it.
    """
    rows = [row for _, row in rounds]
    merged = dict(rows[0])
    good = sum(r["req_per_s"] * r["seconds"] for r in rows)
    merged["seconds"] = sum(r["seconds"] for r in rows)
    merged["req_per_s"] = good / merged["seconds"] if merged["seconds"] else 0.0
    for key in ("requests", "errors"):
        merged[key] = sum(r[key] for r in rows)
    merged["wrk_errors"] = {k: sum(r["wrk_errors"][k] for r in rows) for k in rows[0]["wrk_errors"]}
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
        merged[key] = statistics.median(r[key] for r in rows)
    merged["max_ms"] = max(r["max_ms"] for r in rows)
    merged["cpu"] = {name: statistics.fmean(r["cpu"].get(name, 0.0) for r in rows) for name in rows[0]["cpu"]}
    elections = [r["elections"] for r in rows]
    merged["elections"] = None if None in elections else sum(elections)
    ratios = [row["req_per_s"] / top["req_per_s"] if top["req_per_s"] else 0.0 for top, row in rounds]
    merged["ratio"] = statistics.median(ratios)
    merged["rounds"] = [{"ceiling": top["req_per_s"], "case": row["req_per_s"]} for top, row in rounds]
    return merged


def with_ratios(rows: list[dict[str, Any]], ceiling: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """
    Each row with ``ratio``: its req/s over the ceiling's at the same number
    of connections (a row measured in rounds keeps the ratio of its rounds).
    """
    for row in rows:
        if "rounds" in row:
            continue
        top = ceiling.get(row["connections"])
        row["ratio"] = row["req_per_s"] / top["req_per_s"] if top and top["req_per_s"] else None
    order = list(CASES.values())
    # A case measured again with dashboard pages open ("order, 50 feeds") follows its plain rows.
    return sorted(rows, key=lambda r: (order.index(r["case"].split(", ")[0]), r["case"], r["connections"]))


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets against the rows: what each asks, what was measured, met or not."""
    found = []
    for case, ratio in RATIO_TARGETS.items():
        mine = [r for r in rows if r["case"] == case and r["ratio"] is not None]
        if mine:
            met = [r["connections"] for r in mine if r["ratio"] >= ratio]
            found.append(
                {
                    "target": f"{case} >= {ratio:.2f} x ceiling",
                    "measured": {str(r["connections"]): round(r["ratio"], 3) for r in mine},
                    "met_at": met,
                    "met": len(met) == len(mine),
                }
            )
    c = ORDER_TARGET["connections"]
    orders = [r for r in rows if r["case"] == "order" and r["connections"] == c]
    if orders:
        r = orders[0]
        found.append(
            {
                "target": f"order at {c} connections >= {ORDER_TARGET['per_s']:,.0f}/s with p99 < "
                f"{ORDER_TARGET['p99_ms']:.0f} ms",
                "measured": {"req_per_s": round(r["req_per_s"], 1), "p99_ms": round(r["p99_ms"], 2)},
                "met": r["req_per_s"] >= ORDER_TARGET["per_s"] and r["p99_ms"] < ORDER_TARGET["p99_ms"],
            }
        )
    watched = [r for r in rows if r.get("elections") is not None]
    if watched:
        during = {f"{r['case']} at {r['connections']}": r["elections"] for r in watched if r["elections"]}
        found.append(
            {
                "target": "no election while the store is under load",
                "measured": {"elections": sum(r["elections"] for r in watched), "points": len(watched), **during},
                "met": not during,
            }
        )
    return found


def report(rows: list[dict[str, Any]], goals: list[dict[str, Any]], rss: dict[str, Any] | None) -> None:
    """Print the table, the targets and the memory figures."""

    def server_cpu(row: dict[str, Any]) -> str:
        own = CASE_PROCESSES.get(row["case"])
        name = own[0] if own else next((n for n in row["cpu"] if n.startswith("frontend")), "")
        return f"{100 * row['cpu'][name]:.0f}%" if name in row["cpu"] else "-"

    cells = [
        (
            r["case"],
            str(r["connections"]),
            f"{r['req_per_s']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['ratio']:.2f}" if r["ratio"] is not None else "-",
            server_cpu(r),
            str(r["errors"]),
        )
        for r in rows
    ]
    if cells:
        print(table(("case", "conns", "req/s", "p50 ms", "p99 ms", "ratio", "server cpu", "errors"), cells, left=1))
    for goal in goals:
        if "met_at" in goal:
            measured = " / ".join(f"{v:.2f}" for v in goal["measured"].values())
            at = "/".join(goal["measured"])
            print(f"target {goal['target']}: {measured} at {at} connections: {'met' if goal['met'] else 'not met'}")
        elif "elections" in goal["measured"]:
            m = goal["measured"]
            print(
                f"target {goal['target']}: {m['elections']} in {m['points']} points: "
                f"{'met' if goal['met'] else 'not met'}"
            )
        else:
            m = goal["measured"]
            print(
                f"target {goal['target']}: {m['req_per_s']:,.0f}/s, p99 {m['p99_ms']:.1f} ms: "
                f"{'met' if goal['met'] else 'not met'}"
            )
    if rss is not None:
        print(
            f"memory over {rss['seconds']:.0f} s of mixed load at {rss['connections']} connections "
            f"({rss['requests']:,} requests, {rss['req_per_s']:,.0f}/s, {rss['errors']} errors):"
        )

        def mib(kib: int | None) -> str:
            return f"{kib / 1024:.1f}" if kib is not None else "-"

        cells = [
            (name, str(p["pid"]), mib(p["start_kib"]), mib(p["warm_kib"]), mib(p["end_kib"]))
            for name, p in rss["processes"].items()
        ]
        warm = f"RSS MiB at {rss['warm_at_s']:.0f} s"
        print(table(("process", "pid", "RSS MiB at start", warm, "RSS MiB at end"), cells, left=1))
