"""
The evaluation experiments and benchmarks of toystore, run from the
repository root as modules (``python -m scripts.<name>``).  Each starts its
own store on free loopback ports, unless told of a running one, and has a
``--smoke`` mode, a few seconds long, that the test suite runs:

- ``load_test``: latency per request type against the buy probability, cache
  on and off, and the LRU's replacements over time (plots);
- ``failover_test``: order replicas SIGKILLed under load, what the clients
  saw, and the invariants checked afterwards (a timeline plot);
- ``latency``: what 5 clients see per request type, and the failover time of
  leader SIGKILLs;
- ``bench_wire``: the round-trip rate of one internal JSON-lines connection;
- ``bench_catalog``: durable buys per second of the catalog;
- ``bench_orders``: durable orders per second through a leader with three
  replicas;
- ``bench`` (a package): the public API under wrk against a bare twisted.web
  server and a bare forwarder, and each process's memory over a long run.

This package is not installed with toystore: it is part of the checkout.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toystore.supervise import ChildFailed, Supervisor
from toystore.testing import Store

#: The repository root: where the scripts write their figures by default (under ``docs/``).
ROOT = Path(__file__).resolve().parents[1]


async def start_store(
    reactor: Any,
    supervisor: Supervisor,
    directory: Path,
    *frontend_flags: str,
    frontends: int = 1,
    names: Sequence[str] | None = None,
    **overrides: Any,
) -> Store:
    """
    A fresh store in ``directory`` with the cluster file's ``overrides``, its
    processes ``names`` (default: all) started, the front-end with
    ``frontend_flags`` and its first leader elected; a process that fails to
    start ends the script with what it printed.
    """
    store = Store.create(reactor, directory, supervisor, frontends=frontends, **overrides)
    try:
        await store.start_all(*frontend_flags, names=names)
    except ChildFailed as e:
        raise SystemExit(f"{e}:\n{e.output}") from None
    return store


def int_list(text: str) -> list[int]:
    """A command-line value of comma-separated integers (``1,16,64``)."""
    return [int(item) for item in text.split(",")]
