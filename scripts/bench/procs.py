"""
What ``python -m scripts.bench`` reads of its processes: CPU time and
resident memory, from ``/proc`` (Linux).
"""

from __future__ import annotations

import os

from toystore.supervise import Supervisor


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def running(supervisor: Supervisor) -> dict[str, int]:
    """The pid of every running child, by name."""
    return {child.name: child.pid for child in supervisor.children if child.running and child.pid}


def cpu_all(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each process so far (those that are gone are left out)."""
    times = {}
    for name, pid in pids.items():
        try:
            times[name] = cpu_seconds(pid)
        except OSError:
            pass
    return times
