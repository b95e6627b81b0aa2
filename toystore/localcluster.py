"""
A whole store on this machine with every listener on a free loopback port,
for end-to-end tests, benchmarks and experiments that must not collide with
a store already running on the default ports.

:func:`cluster_file` writes a cluster file from the packaged default: the
same knobs, new ports and data directories, and any overrides.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from twisted.internet.endpoints import clientFromString

from .config import WireConfig, dump, load, read_raw
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
    """A wire connection to a lines port on loopback."""
    endpoint = clientFromString(reactor, f"tcp:host=127.0.0.1:port={port}")
    return await endpoint.connect(WireFactory(None, reactor, wire or load().wire))
