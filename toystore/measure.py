"""
Small tools for measuring the store: percentiles, plain text tables,
``/metrics`` scraping, and the raw fsync rate of a disk.  The benchmark
scripts and the load client use them; nothing here asserts anything.
"""

from __future__ import annotations

import os
import re
import time
from typing import Sequence

import treq

_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$")


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 0) -> str:
    """Cells aligned in columns: the first ``left`` columns to the left, the others to the right."""
    lines = [tuple(header), *map(tuple, rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as ``{"name{labels}": value}``."""
    samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


async def scrape(port: int) -> dict[str, float]:
    """``GET /metrics`` of the operator port ``port`` on loopback, parsed."""
    response = await treq.get(f"http://127.0.0.1:{port}/metrics", persistent=False)
    return parse_metrics(await treq.text_content(response))


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What each sample grew by between two scrapes."""
    return {name: after[name] - before.get(name, 0.0) for name in after}


def mean(grown: dict[str, float], histogram: str) -> float:
    """The mean of a histogram's observations in a :func:`delta`; NaN if none."""
    count = grown.get(f"{histogram}_count", 0.0)
    return grown.get(f"{histogram}_sum", 0.0) / count if count else float("nan")


def fsync_rate(directory: str, seconds: float) -> float:
    """Append 4 KiB and fsync, again and again for ``seconds``, in ``directory``: fsyncs per second."""
    path = os.path.join(directory, "fsync-probe")
    block = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            os.write(fd, block)
            os.fsync(fd)
            count += 1
        return count / elapsed
    finally:
        os.close(fd)
        os.unlink(path)


__all__ = ["percentile", "table", "parse_metrics", "scrape", "delta", "mean", "fsync_rate"]
