"""
What a client of the public API sees: request latency through the real
store on this machine, with the product cache on and off, and how long
orders go unacknowledged when the order leader dies.

Each store is a fresh cluster on free loopback ports (a new temporary
directory, 100,000,000 of every toy so orders never run dry, other knobs as
packaged) started with the store harness (:class:`toystore.testing.Store`)
as in the end-to-end tests: catalog, three order replicas, front-end, then
``GET /leader`` until its first election is over.  ``--clients`` clients,
each a treq ``HTTPClient`` on its OWN one-connection persistent pool (a
keep-alive session), loop each request type for ``--seconds``:

* A, cache on: ``GET /products/Tux`` (cached: all hits after the first),
  ``POST /orders`` (1 item, toys in rotation), ``GET /orders/<n>`` over the
  numbers just placed;
* C, on the same store: one client orders back to back while every
  ``--failover-period`` s the leader (``GET /leader``) is SIGKILLed and
  restarted at once, ``--kills`` times.  Per kill: failover = first ack of an
  order SENT after the kill - the kill; gap = that ack - the last ack before;
* B, a fresh store, front-end ``--no-cache``: ``GET /products/Tux`` (uncached:
  every query goes to the catalog over the wire).

Latency is ``reactor.seconds()`` around a request, body read included; any
answer but 200 (or none) is an error, counted and not timed.  From the
repository root::

    python -m scripts.latency                  # 5 clients, 5 s per type, 3 kills: about 45 s
    python -m scripts.latency --json out.json  # also every figure as JSON
    python -m scripts.latency --smoke          # a few seconds, for CI
    python -m scripts.latency --hosts --kills 12   # each process on a host of its own (root)

With ``--hosts`` each process runs in a network namespace of its own
(:mod:`toystore.hosts`, prefix ``tsl-``), with its own address, and the
clients in another, so every request and every internal call crosses a
(virtual) network instead of loopback.

This is a measurement, not a test: it asserts nothing about speed, and its
numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import sys
from pathlib import Path
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.copyright import version as twisted_version
from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.web.client import Agent, HTTPConnectionPool

import scripts
from toystore.measure import percentile, table
from toystore.supervise import Supervisor
from toystore.testing import HostLauncher, Store, listeners, scratch, sleep

#: The prefix of this script's hosts (``--hosts``).
HOSTS_PREFIX = "tsl-"
TOYS = ["Tux", "Whale", "Elephant", "Dolphin", "Fox"]  # orders rotate over these
KINDS = ["product (cached)", "product (uncached)", "order", "order query"]
POLL = 0.05  # seconds between two looks while waiting for a state
TIMEOUT = 30.0  # seconds before a request without an answer counts as an error


def session(reactor: Any) -> tuple[HTTPClient, HTTPConnectionPool]:
    """A keep-alive HTTP client on a pool of its own that keeps one connection."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 1
    return HTTPClient(Agent(reactor, pool=pool)), pool


async def call(http: Any, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """One request, its body read: the status (0 if none came) and the decoded reply (or the failure's text)."""
    try:
        response = await http.request(method, url, json=body, timeout=TIMEOUT)
        content = await treq.content(response)
    except Exception as e:  # refused, dropped, timed out: an error like a non-200 answer
        return 0, f"{type(e).__name__}: {e}"
    try:
        return response.code, json.loads(content)
    except ValueError:
        return response.code, content.decode("utf-8", "replace")


async def start_store(reactor: Any, supervisor: Supervisor, directory: Path, *flags: str, hosts: Any = None) -> Store:
    """
    A fresh store in ``directory`` (``flags`` for the front-end), its first
    leader elected; on ``hosts`` (entered as ``clients``), a host per
    process and a cluster secret.
    """
    knobs: dict[str, Any] = {"catalog": {"initial_stock": 100_000_000}}
    if hosts is not None:
        knobs.update(launcher=HostLauncher(hosts), wire={"secret": secrets.token_hex(16)})
    return await scripts.start_store(reactor, supervisor, directory, *flags, **knobs)


def request(kind: str, url: str, i: int, k: int, numbers: list[int]) -> tuple[str, str, Any]:
    """Client ``i``'s ``k``-th request of type ``kind``: ``(method, url, body)``."""
    if kind.startswith("product"):
        return "GET", f"{url}/products/Tux", None
    if kind == "order":
        return "POST", f"{url}/orders", {"name": TOYS[(i + k) % len(TOYS)], "quantity": 1}
    return "GET", f"{url}/orders/{numbers[(7 * i + k) % len(numbers)]}", None


async def measure(reactor: Any, clients: list[Any], seconds: float, kind: str, url: str, numbers: list[int]) -> dict:
    """Each client loops requests of type ``kind`` for ``seconds``: the 200s' latencies and replies, the errors."""
    latencies: list[float] = []
    replies: list[Any] = []
    errors: list[str] = []
    deadline = reactor.seconds() + seconds

    async def client(i: int, http: Any) -> None:
        """One keep-alive session's loop of requests until the deadline."""
        k = 0
        while reactor.seconds() < deadline:
            started = reactor.seconds()
            code, reply = await call(http, *request(kind, url, i, k, numbers))
            k += 1
            if code == 200:
                latencies.append(reactor.seconds() - started)
                replies.append(reply["data"])
            else:
                errors.append(f"{code} {reply}")

    await gatherResults([Deferred.fromCoroutine(client(i, http)) for i, http in enumerate(clients)])
    return {"latencies": latencies, "replies": replies, "errors": errors}


async def loops(reactor: Any, url: str, args: Any, kinds: list[str]) -> dict[str, dict]:
    """Loop each request type of ``kinds`` in turn on the same keep-alive sessions: the raw runs by type."""
    sessions = [session(reactor) for _ in range(args.clients)]
    runs: dict[str, dict] = {}
    numbers: list[int] = []  # the orders placed, for the order queries
    try:
        for kind in kinds:
            runs[kind] = await measure(reactor, [http for http, _ in sessions], args.seconds, kind, url, numbers)
            numbers += [reply["order_number"] for reply in runs[kind]["replies"] if kind == "order"]
    finally:
        await DeferredList([pool.closeCachedConnections() for _, pool in sessions])
    return runs


def figures(run: dict[str, Any]) -> dict[str, Any]:
    """Count, errors and latency figures (ms) of one request type."""
    latencies = run["latencies"]
    return {
        "count": len(latencies) + len(run["errors"]),
        "errors": len(run["errors"]),
        "first_error": run["errors"][0] if run["errors"] else None,
        "p50_ms": 1e3 * percentile(latencies, 0.5),
        "p99_ms": 1e3 * percentile(latencies, 0.99),
        "mean_ms": 1e3 * statistics.fmean(latencies) if latencies else float("nan"),
    }


async def in_sync(store: Store, i: int) -> Any:
    """The in-sync followers replica ``i`` reports (its ``status``)."""
    status = await store.status(i, timeout=5.0)
    return status["in_sync"] if status is not None else "no status"


async def failover(reactor: Any, store: Store, args: Any) -> dict[str, Any]:
    """One client orders back to back while the leader is SIGKILLed and restarted ``--kills`` times."""
    url, sent = store.url, []  # sent: (sent at, answered at, status, reply)
    kills: list[dict[str, Any]] = []
    stop: list[bool] = []

    async def orders(http: Any) -> None:
        """Place orders, one after the other, until told to stop."""
        while not stop:
            started = reactor.seconds()
            code, reply = await call(
                http, "POST", f"{url}/orders", {"name": TOYS[len(sent) % len(TOYS)], "quantity": 1}
            )
            sent.append((started, reactor.seconds(), code, reply))

    def acked_after(moment: float) -> list[float]:
        """When the orders sent at or after ``moment`` were acknowledged."""
        return [done for started, done, code, _ in sent if code == 200 and started >= moment]

    http, pool = session(reactor)
    running = Deferred.fromCoroutine(orders(http))
    try:
        for _ in range(args.kills):
            await sleep(reactor, args.failover_period)
            victim = (await store.elected())["leader"]
            followers = await in_sync(store, victim)
            killed = reactor.seconds()
            await store.restart(f"order-{victim}")  # SIGKILL, then start it at once
            kills.append({"replica": victim, "in_sync": followers, "killed_at": killed})
            kills[-1]["restarted_after_s"] = reactor.seconds() - killed
        deadline = reactor.seconds() + 30  # the last kill's first ack
        while not acked_after(kills[-1]["killed_at"]) and reactor.seconds() < deadline and not running.called:
            await sleep(reactor, POLL)
    finally:
        stop.append(True)
        await running
        await pool.closeCachedConnections()
    for kill in kills:
        first = min(acked_after(kill["killed_at"]), default=float("nan"))
        before = [done for _, done, code, _ in sent if code == 200 and done < kill["killed_at"]]
        kill["failover_s"] = first - kill["killed_at"]
        kill["gap_s"] = first - max(before, default=float("nan"))
    errors = [f"{code} {reply}" for _, _, code, reply in sent if code != 200]
    return {
        "orders": len(sent),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "kills": kills,
        "median_failover_s": statistics.median(k["failover_s"] for k in kills),
    }


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line; ``--smoke`` overrides the sizes with small ones."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.latency", description="Latency of the toystore public API, and of a leader failover."
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each request type's loop (default 5)")
    parser.add_argument("--clients", type=int, default=5, help="concurrent keep-alive clients (default 5)")
    parser.add_argument("--kills", type=int, default=3, help="leader kills in the failover phase (default 3)")
    parser.add_argument("--failover-period", type=float, default=3.0, help="seconds between two kills (default 3)")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data directory (logs, processes' output)")
    parser.add_argument("--smoke", action="store_true", help="a short run with small numbers, for CI")
    parser.add_argument(
        "--hosts", action="store_true", help="each process in a network namespace of its own (root, toystore.hosts)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.clients, args.kills, args.failover_period = 0.3, 2, 1, 1.0
    if args.seconds <= 0 or args.clients < 1 or args.kills < 1 or args.failover_period <= 0:
        parser.error("--seconds, --clients, --kills and --failover-period must be positive")
    return args


def report(results: dict[str, Any], ratio: float, failovers: dict[str, Any], crashed: list[str]) -> None:
    """Print the table, the ratio and the kills; errors and crashes to stderr."""
    cells = [
        (kind, str(r["count"]), str(r["errors"]), f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['mean_ms']:.2f}")
        for kind, r in results.items()
    ]
    print(table(("request", "count", "errors", "p50 ms", "p99 ms", "mean ms"), cells, left=1))
    print(f"cached/uncached p50: {ratio:.2f}")
    for i, kill in enumerate(failovers["kills"], 1):
        print(
            f"kill {i}: replica {kill['replica']} (its in-sync followers {kill['in_sync']}): "
            f"failover s {kill['failover_s']:.3f}, gap s {kill['gap_s']:.3f}"
        )
    print(
        f"median failover s: {failovers['median_failover_s']:.3f} "
        f"({failovers['orders']} orders by 1 client, {failovers['errors']} errors)"
    )
    for kind, r in [*results.items(), ("failover", failovers)]:
        if r["first_error"]:
            print(f"  {kind}: first error: {r['first_error']}", file=sys.stderr)
    if crashed:
        print(f"  exited during the run: {', '.join(crashed)}", file=sys.stderr)


async def main(reactor: Any, *argv: str) -> None:
    """Measure phases A and C on one store and phase B on another, stop everything, print the figures."""
    args = parse(list(argv))
    hosts = None
    if args.hosts:
        from toystore.hosts.network import HostsUnavailable, entered

        try:
            hosts = entered([*listeners(), "clients"], prefix=HOSTS_PREFIX)
        except HostsUnavailable as e:
            raise SystemExit(f"python -m scripts.latency --hosts: hosts cannot be made here: {e}") from None
    try:
        await phases(reactor, args, hosts)
    finally:
        if hosts is not None:
            hosts.remove()


async def phases(reactor: Any, args: argparse.Namespace, hosts: Any) -> None:
    """Phases A and C on one store, B on another (each on ``hosts``, if given); print and write the figures."""
    supervisor, directory = scratch(reactor, "latency-", keep=lambda: args.keep)
    cache: dict[str, Any] = {}
    try:
        store = await start_store(reactor, supervisor, directory / "cache-on", hosts=hosts)
        runs = await loops(reactor, store.url, args, ["product (cached)", "order", "order query"])
        cache["on"] = (await call(treq, "GET", f"{store.url}/cache"))[1]  # hits, misses
        failovers = await failover(reactor, store, args)
        exited = [child.name for child in supervisor.children if not child.running and child.status != -9]
        await supervisor.stop_all()
        first = len(supervisor.children)
        store = await start_store(reactor, supervisor, directory / "cache-off", "--no-cache", hosts=hosts)
        runs.update(await loops(reactor, store.url, args, ["product (uncached)"]))
        cache["off"] = (await call(treq, "GET", f"{store.url}/cache"))[1]
        exited += [child.name for child in supervisor.children[first:] if not child.running]
    finally:
        await supervisor.stop_all()
        if args.keep:  # otherwise scratch() removes it when the reactor stops
            print(f"kept {directory}", file=sys.stderr)
    results = {kind: figures(runs[kind]) for kind in KINDS}
    ratio = results["product (cached)"]["p50_ms"] / results["product (uncached)"]["p50_ms"]
    report(results, ratio, failovers, exited)
    if args.json:
        meta = {**vars(args), "initial_stock": 100_000_000, "python": platform.python_version()}
        meta.update(twisted=twisted_version, reactor=type(reactor).__name__, cpus=os.cpu_count())
        everything = {"settings": meta, "results": results, "cached_over_uncached_p50": ratio, "failover": failovers}
        with open(args.json, "w") as f:
            json.dump({**everything, "cache": cache, "exited": exited}, f, indent=2)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
