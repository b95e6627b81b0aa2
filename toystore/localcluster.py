"""
A whole store on this machine with every listener on a free loopback port,
for end-to-end tests, benchmarks and experiments that must not collide with
a store already running on the default ports.

:func:`cluster_file` writes a cluster file from the packaged default: the
same knobs, new ports and data directories, and any overrides.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable

import treq
from twisted.internet.defer import DeferredList
from twisted.internet.endpoints import clientFromString
from twisted.internet.task import deferLater

from .config import WireConfig, dump, load, read_raw
from .supervise import Supervisor
from .wire import WireFactory, WireProtocol

REPLICAS = (1, 2, 3)


def free_ports(count: int) -> list[int]:
    """``count`` loopback ports that were free a moment ago (the OS picks them)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cluster_file(directory: Path, **overrides: dict[str, Any]) -> tuple[Path, dict[str, int]]:
    """
    Write ``directory/cluster.toml``: the packaged cluster with free ports,
    data under ``directory``, and ``overrides`` (``order={"max_batch": 1}``)
    applied per section.

    :return: the file, and the ports by name: ``frontend``, ``catalog_http``,
        ``catalog_lines``, ``http1``, ``lines1``, ... .
    """
    names = ["frontend", "catalog_http", "catalog_lines"] + [f"{k}{i}" for i in REPLICAS for k in ("http", "lines")]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    raw = read_raw(None)
    raw["catalog"].update(
        lines=_listen(ports["catalog_lines"]),
        connect=_connect(ports["catalog_lines"]),
        http=_listen(ports["catalog_http"]),
        data_dir=str(directory / "catalog"),
    )
    raw["frontend"].update(http=_listen(ports["frontend"]), url=f"http://127.0.0.1:{ports['frontend']}")
    raw["order"]["data_dir"] = str(directory / "order-{id}")
    raw["order"]["replicas"] = [
        {
            "id": i,
            "lines": _listen(ports[f"lines{i}"]),
            "connect": _connect(ports[f"lines{i}"]),
            "http": _listen(ports[f"http{i}"]),
        }
        for i in REPLICAS
    ]
    for section, values in overrides.items():
        raw[section].update(values)
    path = directory / "cluster.toml"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(dump(raw))
    load(str(path))  # a mistake in the overrides shows here, not in four child processes
    return path, ports


def _listen(port: int) -> str:
    return f"tcp:{port}:interface=127.0.0.1"


def _connect(port: int) -> str:
    return f"tcp:host=127.0.0.1:port={port}"


async def connect(reactor: Any, port: int, wire: WireConfig | None = None) -> WireProtocol:
    """
    A wire connection to a lines port on loopback, authenticated with
    ``wire.secret`` when there is one (``wire`` defaults to the packaged
    file's, with ``TOYSTORE_SECRET`` applied).
    """
    endpoint = clientFromString(reactor, f"tcp:host=127.0.0.1:port={port}")
    connection = await endpoint.connect(WireFactory(None, reactor, wire or load().wire, client=True))
    try:
        await connection.authenticate()
    except Exception:
        connection.transport.loseConnection()
        raise
    return connection


async def replica_status(reactor: Any, port: int, timeout: float = 1.0) -> dict[str, Any] | None:
    """
    The ``status`` of the replica on lines ``port``, over a connection of
    its own, or None if it cannot be reached or does not answer within
    ``timeout`` seconds (down, paused, or cut off: to a poller, all alike).
    """
    try:
        connection = await connect(reactor, port)
    except Exception:
        return None
    try:
        return await connection.call("status", timeout=timeout)
    except Exception:
        return None
    finally:
        connection.transport.loseConnection()


async def start_store(
    reactor: Any, supervisor: Any, directory: Path, frontend_flags: tuple[str, ...] = (), **overrides: dict[str, Any]
) -> dict[str, Any]:
    """
    Start a whole store in ``directory`` as children of ``supervisor``:
    catalog, three replicas, front-end (with ``frontend_flags``), and wait
    for the front-end's first election.  Each child's output goes to
    ``directory/logs/<name>.log``.

    :return: ``url`` (the front-end), ``ports``, ``config`` (the file),
        ``logs``, ``args`` (each replica's flags, to restart it) and
        ``replicas`` (each replica's Child).
    :raises ChildFailed: when a process exits before it is ready.
    """
    config, ports = cluster_file(directory, **overrides)
    common = ["--config", str(config)]
    store: dict[str, Any] = {
        "url": f"http://127.0.0.1:{ports['frontend']}",
        "ports": ports,
        "config": config,
        "logs": directory / "logs",
        "args": {i: [*common, "--id", str(i)] for i in REPLICAS},
        "replicas": {},
    }
    await supervisor.start("catalog", "toystore-catalog", common, store["logs"] / "catalog.log")
    for i in REPLICAS:
        await start_replica(supervisor, store, i)
    await supervisor.start("frontend", "toystore-frontend", [*common, *frontend_flags], store["logs"] / "frontend.log")
    await wait_for_leader(reactor, store["url"])
    return store


async def start_replica(supervisor: Any, store: dict[str, Any], i: int) -> Any:
    """Start (or restart) replica ``i`` of a :func:`start_store` store; its Child (also in ``store["replicas"]``)."""
    child = await supervisor.start(f"order-{i}", "toystore-order", store["args"][i], store["logs"] / f"order-{i}.log")
    store["replicas"][i] = child
    return child


async def wait_for_leader(reactor: Any, url: str, timeout: float = 30.0) -> dict[str, int]:
    """``GET /leader`` of the front-end at ``url`` until it names one (its first election runs after it is ready)."""
    deadline = reactor.seconds() + timeout
    last: Any = None
    while reactor.seconds() < deadline:
        try:
            response = await treq.get(f"{url}/leader", timeout=2.0, persistent=False)
            last = await response.json()
            if response.code == 200:
                return last["data"]
        except Exception as e:  # not up yet, or busy: look again
            last = f"{type(e).__name__}: {e}"
        await deferLater(reactor, 0.05, lambda: None)
    raise TimeoutError(f"no leader elected within {timeout} s (last answer: {last})")


def scratch(
    reactor: Any, prefix: str, keep: Callable[[], bool] = lambda: False, on_stop: Callable[[], None] = lambda: None
) -> tuple[Supervisor, Path]:
    """
    A Supervisor for a script's store and a new temporary directory for its
    data.  When the reactor stops (at the end, or on Ctrl-C or SIGTERM) every
    child is killed and the directory removed, unless ``keep()`` says not to.
    The children can import this package wherever it is (a checkout too).
    """
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    home = str(Path(__file__).resolve().parents[1])
    supervisor = Supervisor(
        reactor, env={"PYTHONPATH": os.pathsep.join(filter(None, [home, os.environ.get("PYTHONPATH")]))}
    )

    def stopping() -> DeferredList:
        on_stop()
        ended = DeferredList(supervisor.kill_all())
        return ended.addBoth(lambda _: keep() or shutil.rmtree(directory, ignore_errors=True))

    reactor.addSystemEventTrigger("before", "shutdown", stopping)
    return supervisor, directory
