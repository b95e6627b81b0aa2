"""
The ``toystore`` command.

``toystore status`` asks every process of the cluster file for its
``/health`` and prints one line each: up or down, role, epoch, last order.

``toystore up`` runs the store of the cluster file on this machine with
the harness (:class:`toystore.testing.Store`): every service as a child
process (``twistd -n --pidfile= toystore-<service>``), started in order, each
awaited until it reports ready.  It prints where the store answers, reports
any child that exits, and stops them all on Ctrl-C or SIGTERM.  Each child's
log goes to ``<data-dir>/logs/<service>.log``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import react

from . import loadgen
from .config import ConfigError, load
from .measure import table
from .supervise import Child, ChildFailed, Supervisor
from .testing import Site, Store, health


def say(message: str) -> None:
    """Print a line of ``toystore up``'s own output."""
    print(message, flush=True)


async def up(reactor: Any, options: argparse.Namespace) -> None:
    """Start the store, report on it, and stop it when told to."""
    data_dir = Path(options.data_dir)
    supervisor = Supervisor(reactor)
    try:
        store = Store.from_file(reactor, data_dir, options.config, supervisor)
    except ConfigError as e:
        raise SystemExit(f"toystore: error: {e}") from None
    reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(stop(supervisor)))
    say(f"toystore: starting the store; data and logs in {data_dir}/")
    for service in store.names:
        log_path = store.log_path(service)
        try:
            child = await store.start(service, *(["--no-cache"] * (options.no_cache and service == "frontend")))
        except ChildFailed as e:
            say(f"toystore: {e}; the end of its log ({log_path}):")
            say("\n".join(e.output.splitlines()[-15:]))
            raise SystemExit(1) from None
        except Exception as e:
            say(f"toystore: {service} did not start: {e!r}; see {log_path}")
            raise SystemExit(1) from None
        ports = "  ".join(f"{name} :{port}" for name, port in sorted(child.ports.items()))
        say(f"  {service:<10} ready   pid {child.pid:<7} {ports}")
        watch(supervisor, child, log_path)
    say(status_line(supervisor))
    url = store.cluster.frontend.url
    say(f"toystore is up at {url}  (try {url}/products/Tux)   Ctrl-C stops it.")
    say(f"the live page: {url}/dashboard")
    await Deferred()  # until the reactor stops


def status_line(supervisor: Supervisor) -> str:
    """One line: each child up or down."""
    states = [f"{child.name} {'up' if child.running else 'DOWN'}" for child in supervisor.children]
    return "toystore: " + ", ".join(states)


def watch(supervisor: Supervisor, child: Child, log_path: Path) -> None:
    """Report the child if it exits while the store is up."""

    def ended(status: int) -> None:
        if supervisor.stopping:
            return
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        say(f"toystore: {child.name} {how}; see {log_path}")
        say(status_line(supervisor))

    child.when_ended().addCallback(ended)


async def stop(supervisor: Supervisor) -> None:
    """Stop every child: SIGTERM, then SIGKILL for the slow."""
    if any(child.running for child in supervisor.children):
        say("toystore: stopping ...")
        await supervisor.stop_all()
        say("toystore: stopped.")


async def status(reactor: Any, options: argparse.Namespace) -> None:
    """
    Print each process of the store: up or down, role, epoch, last order
    number; for a replica also its vote, commit point, the lag of each
    follower (a leader), its elections, pre-votes refused and handovers.
    """
    try:
        config = load(options.config)
    except ConfigError as e:
        raise SystemExit(f"toystore: error: {e}") from None
    targets = [("frontend", config.frontend.url), ("catalog", Site.of({"http": config.catalog.http}).url)]
    targets += [(f"order-{r.id}", Site.of({"http": r.http}).url) for r in config.order.replicas]
    found = await DeferredList([Deferred.fromCoroutine(health(url)) for _, url in targets])
    rows = []
    for (name, url), (_, data) in zip(targets, found, strict=True):
        if data is None:
            rows.append((name, "down", *[""] * 9, url))
            continue
        role = data.get("role", "")
        if name == "frontend" and data.get("leader") is not None:
            via = data.get("via")
            role = f"leader is {data['leader']}" + (f" via {via}" if via not in (None, data["leader"]) else "")
        replica = [
            _text(data.get("vote")),
            _text(data.get("commit")),
            " ".join(f"{peer}:{lag}" for peer, lag in data.get("lag", {}).items()) or "-",
            _text(data.get("elections")),
            _text(data.get("prevotes_refused")),
            _text(data.get("handovers")),
        ]
        if not name.startswith("order-"):
            replica = [""] * len(replica)
        rows.append((name, "up", role, _text(data.get("epoch", "")), _text(data.get("last_order", "")), *replica, url))
    header = ("process", "state", "role", "epoch", "last order", "vote", "commit", "lag")
    say(table((*header, "elections", "pre-votes refused", "handovers", "address"), rows, left=3))
    if any(row[1] == "down" for row in rows):
        raise SystemExit(1)


def _text(value: Any) -> str:
    """A status value as a cell: "-" for none."""
    return "-" if value is None else str(value)


def parser() -> argparse.ArgumentParser:
    """The command line of ``toystore``."""
    top = argparse.ArgumentParser(prog="toystore", description="A replicated online toy store.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("up", help="run the whole store on this machine until Ctrl-C")
    run.add_argument("--config", "-c", help="the cluster file (TOML); default: the packaged one-machine cluster")
    run.add_argument(
        "--data-dir", "-d", default="var", help="where each service keeps its data and log (default: ./var)"
    )
    run.add_argument("--no-cache", action="store_true", help="run the front-end without its product cache")
    shop = commands.add_parser("client", help="simulated shoppers: query, buy with probability p, check the orders")
    loadgen.add_arguments(shop)
    show = commands.add_parser(
        "status", help="show each process of the store: up or down, role, epoch, and each replica's election state"
    )
    show.add_argument("--config", "-c", help="the cluster file (TOML); default: the packaged one-machine cluster")
    return top


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``toystore`` command."""
    options = parser().parse_args(argv)
    if options.command == "up":
        react(up, (options,))
    elif options.command == "status":
        react(status, (options,))
    elif options.command == "client":
        react(loadgen.main, (options,))
    sys.exit(0)
