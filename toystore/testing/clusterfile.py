"""
The processes of a store the harness writes a cluster file for, and that
file: the packaged default's knobs, the addresses a launcher gave, data
under one directory, and any overrides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import dump, load, read_raw
from .launch import Site

#: The replica ids of a store the harness writes the cluster file of.
REPLICAS = (1, 2, 3)
#: Knobs for a store under test: failures quick to see, stock that does not run out.
QUICK: dict[str, dict[str, Any]] = {
    "wire": {"reconnect_initial": 0.05, "reconnect_max": 0.5},
    "catalog": {"initial_stock": 100_000},
    "order": {"commit_timeout": 3.0},
}


def with_knobs(base: dict[str, dict[str, Any]], overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The knobs of ``base`` with those of ``overrides`` replacing them one by one, section by section."""
    return {section: {**base.get(section, {}), **overrides.get(section, {})} for section in {*base, *overrides}}


def frontend_name(k: int) -> str:
    """The name of the ``k``-th front-end (from 1): ``frontend``, then ``frontend-2``, ..."""
    return "frontend" if k == 1 else f"frontend-{k}"


def listeners(frontends: int = 1) -> dict[str, tuple[str, ...]]:
    """
    The processes of a store in the order they start, each with its
    listeners: the catalog, the replicas, and ``frontends`` front-ends (the
    first always has an address: the cluster file names it, and the replicas
    ask it who leads).
    """
    return {
        "catalog": ("lines", "http"),
        **{f"order-{i}": ("lines", "http") for i in REPLICAS},
        **{frontend_name(k): ("http",) for k in range(1, max(frontends, 1) + 1)},
    }


def cluster_file(
    directory: Path,
    sites: dict[str, Site],
    routes: dict[int, dict[str, str]] | None = None,
    name: str = "cluster.toml",
    **overrides: Any,
) -> Path:
    """
    Write ``directory/<name>`` (``cluster.toml``): the packaged cluster with
    the addresses of ``sites`` (by :func:`listeners`' names), data under
    ``directory``, ``routes`` (settings added to replica *i*'s entry:
    ``connect`` and ``peer_connect`` through a proxy) and ``overrides``
    (``order={"max_batch": 1}``) applied per section.
    """
    raw = read_raw(None)
    catalog, frontend = sites["catalog"], sites["frontend"]
    raw["catalog"].update(
        lines=catalog.listen("lines"),
        connect=catalog.connect("lines"),
        http=catalog.listen("http"),
        data_dir=str(directory / "catalog"),
    )
    raw["frontend"].update(http=frontend.listen("http"), url=frontend.url)
    raw["order"]["data_dir"] = str(directory / "order-{id}")
    raw["order"]["replicas"] = [
        {
            "id": i,
            "lines": sites[f"order-{i}"].listen("lines"),
            "connect": sites[f"order-{i}"].connect("lines"),
            "http": sites[f"order-{i}"].listen("http"),
            **(routes or {}).get(i, {}),
        }
        for i in REPLICAS
    ]
    for section, values in overrides.items():
        raw[section].update(values)
    path = directory / name
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(dump(raw))
    load(str(path))  # a mistake in the overrides shows here, not in four child processes
    return path
