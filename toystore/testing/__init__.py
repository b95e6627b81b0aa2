"""
The one store harness: the store's processes started for ``toystore up``,
the end-to-end tests, the fault-injection suite and the evaluation scripts.

* :mod:`.store`: :class:`Store`, the processes of one store (any of them,
  front-ends too, each a real ``twistd`` child awaited until its ready
  line): start, kill, pause, resume, restart, statuses, the leader, stop;
  and :func:`scratch`, a tool's supervisor and temporary directory;
* :mod:`.launch`: where a process runs and what address it has: on
  loopback (:class:`LocalLauncher`), or each in a network namespace of its
  own (:class:`HostLauncher`);
* :mod:`.clusterfile`: the cluster file written for those addresses;
* :mod:`.proxy`: a TCP proxy that cuts, stalls or drops, for the network
  between two processes;
* :mod:`.calls`: wire connections, replica statuses, ``/health``, the
  front-end's leader, and :func:`sleep`, the one timed pause.
"""

from .calls import connect, health, replica_status, sleep, wait_for_leader
from .clusterfile import QUICK, REPLICAS, cluster_file, listeners, with_knobs
from .launch import HostLauncher, LocalLauncher, Site
from .proxy import Proxy
from .store import Proxies, Store, scratch

__all__ = [
    "REPLICAS",
    "HostLauncher",
    "LocalLauncher",
    "Proxies",
    "Proxy",
    "QUICK",
    "Site",
    "Store",
    "cluster_file",
    "connect",
    "health",
    "listeners",
    "replica_status",
    "scratch",
    "sleep",
    "wait_for_leader",
    "with_knobs",
]
