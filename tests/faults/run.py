"""
One fault-injection run: start the store, buy while the nemesis works,
heal, wait for quiet, place one last order, stop, and check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from toystore.supervise import Supervisor
from toystore.testing import QUICK, Store, with_knobs

from .buyers import Buyers
from .checker import check, orders_of
from .nemesis import FAULTS, Nemesis

#: Seconds the store gets to agree again once healed.
RECOVERY = 30.0
#: The harness's quick knobs, with stock that runs out and is restocked.
KNOBS = with_knobs(QUICK, {"catalog": {"initial_stock": 30, "restock_interval": 2.0, "restock_quantity": 30}})


def fault_store(reactor: Any, supervisor: Supervisor, directory: Path) -> Store:
    """
    The store under test, not started: the five processes with :data:`KNOBS`,
    every replica's lines port behind its two proxies
    (:class:`toystore.testing.Proxies`).
    """
    return Store.create(reactor, directory, supervisor, proxies=True, **KNOBS)


async def run_one(
    reactor: Any,
    supervisor: Supervisor,
    directory: Path,
    seed: int,
    duration: float,
    buyers: int = 4,
    faults: tuple[str, ...] = FAULTS,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """
    One run with ``seed``, faults for ``duration`` seconds.

    :return: the seed, the faults injected, the attempts by outcome, the
        checker's counts and details, and whether the store recovered.
    """
    replay = f"python -m tests.faults --seed {seed} --duration {duration:g} --faults {','.join(faults)}"
    say(f"fault run: seed {seed}, {duration:g} s (replay: {replay})")
    store = fault_store(reactor, supervisor, directory)
    try:
        await store.start_all()
        clients = Buyers(reactor, store.url, seed, buyers)
        nemesis = Nemesis(store, seed, faults)
        clients.start()
        done = await nemesis.run(duration)
        await clients.stop()
        recovered = await store.recovered(RECOVERY)
        problem = f"the replicas did not agree on a committed log within {RECOVERY:g} s: {await store.statuses()}"
        if recovered is not None:
            # The store serves again: one more order gets a definite answer (409 if that toy is sold out).
            last = await clients.attempt(f"s{seed}-last", "Tux", 1)
            recovered = await store.recovered(RECOVERY) if last.outcome != "unknown" else None
            problem = f"the last order got {last.outcome} {last.code} {last.error}"
        await store.stop()
        ledger, _ = store.ledger()
        counts, details = check(clients.attempts, store.logs(), ledger, clients.mismatches)
    except BaseException:
        await store.stop()
        raise
    counts["not_recovered"] = 0 if recovered is not None else 1
    if recovered is None:
        details.append(f"not_recovered: {problem}")
    outcomes: dict[str, int] = {}
    for attempt in clients.attempts:
        outcomes[attempt.outcome] = outcomes.get(attempt.outcome, 0) + 1
    result = {
        "seed": seed,
        "duration": duration,
        "faults": done,
        "attempts": outcomes,
        "orders": len(orders_of(store.logs()[1])),
        "counts": counts,
        "details": details[:50],
        "ok": not any(counts.values()),
    }
    (directory / "result.json").write_text(json.dumps(result, indent=2))
    return result


def summary(result: dict[str, Any]) -> str:
    """One line per run: seed, faults, outcomes, violations."""
    faults = ", ".join(f["fault"] for f in result["faults"]) or "none"
    bad = {k: v for k, v in result["counts"].items() if v}
    return (
        f"seed {result['seed']}: {len(result['faults'])} faults ({faults}); attempts {result['attempts']}; "
        f"{result['orders']} orders in the log; violations: {bad or 'none'}"
    )
