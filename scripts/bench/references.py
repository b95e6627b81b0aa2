"""
The processes ``python -m scripts.bench`` measures beside the store, each a
reference for the store's cases: the ceiling (``ceiling.py``, a bare
twisted.web server) and the bare forwarder (``forwarder.py``, a front and
its back end), each run as a module from the repository root.  They are
children of the run's supervisor, stopped and killed with the store.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from scripts import ROOT
from toystore.supervise import Child, ChildFailed, Supervisor

CEILING = "scripts.bench.ceiling"
FORWARDER = "scripts.bench.forwarder"
#: The processes of each reference case, the one that serves HTTP first.
CASE_PROCESSES = {"ceiling": ("ceiling",), "bare forwarder": ("forwarder", "forwarder-back")}
#: Every process that is not the store's.
REFERENCES = {name for names in CASE_PROCESSES.values() for name in names}


async def start_reference(
    reactor: Any, supervisor: Supervisor, directory: Path, name: str, command: str, argv: list[str]
) -> dict[str, int]:
    """Start one of the processes measured beside the store (``argv``: ``-m``, a module and its flags); its ports."""
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    child = Child(name, command, (directory / "logs" / f"{name}.log").open("ab"))
    reactor.spawnProcess(child, sys.executable, [sys.executable, *argv], env=dict(os.environ), path=str(ROOT))
    supervisor.children.append(child)  # stopped and killed with the store
    try:
        return await child.ready.addTimeout(30, reactor)
    except ChildFailed as e:
        raise SystemExit(f"{e}:\n{e.output}") from None


async def start_references(reactor: Any, supervisor: Supervisor, directory: Path, body: bytes) -> tuple[str, str]:
    """
    Start the bare twisted.web server answering ``body`` and the bare
    forwarder (a front and its back end, which answers ``body``'s data);
    their URLs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    body_file = directory / "ceiling-body.json"
    body_file.write_bytes(body)

    async def start(name: str, command: str, module: str, *flags: str) -> dict[str, int]:
        return await start_reference(reactor, supervisor, directory, name, command, ["-m", module, *flags])

    ceiling = await start("ceiling", "bench-ceiling", CEILING, "--body-file", str(body_file))
    back = await start("forwarder-back", "bench-forwarder", FORWARDER, "--role", "back", "--body-file", str(body_file))
    front = await start("forwarder", "bench-forwarder", FORWARDER, "--role", "front", "--back-port", str(back["lines"]))
    return f"http://127.0.0.1:{ceiling['http']}/", f"http://127.0.0.1:{front['http']}"
