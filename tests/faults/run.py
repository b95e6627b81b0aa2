"""
One fault-injection run: start the store, buy while the nemesis works,
heal, wait for quiet, place one last order, stop, check, and measure how
available the store stayed under each kind of fault.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any, Callable

from toystore.supervise import Supervisor
from toystore.testing import QUICK, HostLauncher, Store, with_knobs

from .buyers import TIMEOUT, Buyers
from .checker import availability, availability_misses, check, describe_availability, orders_of
from .nemesis import CATCH_UP_TIMEOUT, FAULTS, Nemesis

#: Seconds the store gets to agree again once healed.
RECOVERY = 30.0
#: The harness's quick knobs, with stock that runs out and is restocked.
KNOBS = with_knobs(QUICK, {"catalog": {"initial_stock": 30, "restock_interval": 2.0, "restock_quantity": 30}})


def fault_store(reactor: Any, supervisor: Supervisor, directory: Path, frontends: int = 1, hosts: Any = None) -> Store:
    """
    The store under test, not started: the catalog, three replicas and
    ``frontends`` front-ends with :data:`KNOBS`; on loopback a proxy on every
    link to a lines port (:class:`toystore.testing.Proxies`), on ``hosts``
    (:class:`toystore.hosts.network.Hosts`) a host each and a cluster
    secret, no proxies.
    """
    if hosts is None:
        return Store.create(reactor, directory, supervisor, frontends=frontends, proxies=True, **KNOBS)
    knobs = with_knobs(KNOBS, {"wire": {"secret": secrets.token_hex(16)}})
    launcher = HostLauncher(hosts)
    return Store.create(reactor, directory, supervisor, launcher, frontends=frontends, **knobs)


async def run_one(
    reactor: Any,
    supervisor: Supervisor,
    directory: Path,
    seed: int,
    duration: float,
    buyers: int = 4,
    faults: tuple[str, ...] = FAULTS,
    say: Callable[[str], None] = print,
    hold: float | None = None,
    frontends: int = 1,
    min_availability: float | None = None,
    max_gap: float | None = None,
    hosts: Any = None,
) -> dict[str, Any]:
    """
    One run with ``seed``, faults for ``duration`` seconds, each held
    ``hold`` seconds (None: drawn), buyers spread over ``frontends``
    front-ends, on loopback or on ``hosts`` (made, and entered as
    ``clients``, by the caller).  The availability figures are reported;
    they fail the run only below ``min_availability`` or above
    ``max_gap``, when given.

    :return: the seed, the faults injected, the attempts by outcome, the
        availability figures, the checker's counts and details, and whether
        the store recovered.
    """
    replay = f"python -m tests.faults --seed {seed} --duration {duration:g} --faults {','.join(faults)}"
    replay += f" --buyers {buyers}" if buyers != 4 else ""
    replay += f" --hold {hold:g}" if hold is not None else ""
    replay += f" --frontends {frontends}" if frontends != 1 else ""
    replay += " --hosts" if hosts is not None else ""
    say(f"fault run: seed {seed}, {duration:g} s (replay: {replay})")
    store = fault_store(reactor, supervisor, directory, frontends, hosts)
    packets = None
    if hosts is not None:
        from toystore.hosts.faults import PacketFaults  # needs nft: only on hosts

        packets = PacketFaults(hosts)
    try:
        await store.start_all()
        names = [name for name in store.names if name.startswith("frontend")]
        for name in names:
            await store.elected(name)
        clients = Buyers(reactor, [store.sites[name].url for name in names], seed, buyers)
        nemesis = Nemesis(store, seed, faults, hold, packets)
        began = reactor.seconds()
        clients.start()
        done = await nemesis.run(duration)
        stopped = reactor.seconds()
        await clients.stop()
        figures = availability(clients.attempts, done, (began, stopped), TIMEOUT)
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
    finally:
        if packets is not None:
            packets.heal()
    counts["not_recovered"] = 0 if recovered is not None else 1
    if recovered is None:
        details.insert(0, f"not_recovered: {problem}")  # first: the details kept are cut at 50
    if min_availability is not None or max_gap is not None:
        misses = availability_misses(figures, min_availability, max_gap)
        counts["availability_missed"] = len(misses)
        details += [f"availability_missed: {miss}" for miss in misses]
    outcomes: dict[str, int] = {}
    for attempt in clients.attempts:
        outcomes[attempt.outcome] = outcomes.get(attempt.outcome, 0) + 1
    result = {
        "seed": seed,
        "duration": duration,
        "faults": done,
        "attempts": outcomes,
        "orders": len(orders_of(store.logs()[1])),
        "availability": figures,
        "counts": counts,
        "details": details[:50],
        "ok": not any(counts.values()),
    }
    (directory / "result.json").write_text(json.dumps(result, indent=2))
    return result


def summary(result: dict[str, Any]) -> str:
    """
    Two lines per run: seed, faults, outcomes, violations; then the
    availability under each fault kind (the share of the orders first tried
    under it that were acknowledged within the buyers' timeout, of those the
    store did not refuse, and the longest gap between acknowledgements).
    """
    faults = ", ".join(f["fault"] for f in result["faults"]) or "none"
    bad = {k: v for k, v in result["counts"].items() if v}
    text = (
        f"seed {result['seed']}: {len(result['faults'])} faults ({faults}); attempts {result['attempts']}; "
        f"{result['orders']} orders in the log; violations: {bad or 'none'}\n"
        f"    availability: {describe_availability(result['availability'])}"
    )
    cuts = [f for f in result["faults"] if "caught_up_s" in f]
    if cuts:
        times = [f["caught_up_s"] for f in cuts]
        known = [t for t in times if t is not None]
        slowest = f"{max(known):.2f} s" if known else "-"
        text += f"\n    cut-off replica at the commit point after the heal: slowest {slowest}, "
        text += f"{len(times) - len(known)} of {len(times)} not within {CATCH_UP_TIMEOUT:.0f} s"
    return text
