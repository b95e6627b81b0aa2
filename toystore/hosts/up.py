"""
``python -m toystore.hosts up``: the whole store on hosts of this machine,
for people to try.

It makes a host for the catalog, each replica, the front-end and the
clients (:data:`NAMES`), writes a cluster file in which every listener binds
to its host's own address on the packaged cluster's port, with a random
cluster secret set, and starts each twistd plugin inside its host (``ip
netns exec``) with the store harness, in order, each awaited until ready.
It prints how to reach the front-end from the clients' host, reports any
process that exits, and on SIGINT or SIGTERM stops them all and removes the
hosts.  Data and logs stay in the directory it names.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from ..cli import say, status_line, stop, watch
from ..supervise import ChildFailed, Supervisor
from ..testing import REPLICAS, Site, Store, cluster_file
from ..testing.store import child_env
from .network import PREFIX, Hosts, unavailable

#: The hosts, in the order their processes start; the clients' host runs none.
NAMES = ("catalog", *(f"order-{i}" for i in REPLICAS), "frontend", "clients")
#: Each process's ports: the packaged cluster's, each on its own host's address.
PORTS: dict[str, dict[str, int]] = {
    "catalog": {"lines": 8101, "http": 8100},
    **{f"order-{i}": {"lines": 8300 + i, "http": 8200 + i} for i in REPLICAS},
    "frontend": {"http": 8000},
}


def sites(hosts: Hosts) -> dict[str, Site]:
    """Where each process of the store listens: its host's address, its ports."""
    return {name: Site(hosts.address(name), dict(ports)) for name, ports in PORTS.items()}


def write_cluster(hosts: Hosts, directory: Path) -> Path:
    """The cluster file of the store on ``hosts``, with a new 32-character secret, written in ``directory``."""
    return cluster_file(directory, sites(hosts), wire={"secret": secrets.token_hex(16)})


async def run(reactor: Any, hosts: Hosts, directory: Path) -> None:
    """Start the store on ``hosts`` (made already), report on it, and stop it when the reactor stops."""
    config = write_cluster(hosts, directory)
    supervisor = Supervisor(reactor, env=child_env())
    # A Store asks its launcher only for the command line each process runs under: the hosts' wrap.
    store = Store(reactor, directory, config, sites(hosts), list(PORTS), supervisor, launcher=hosts)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(stop(supervisor)))
    say(f"toystore: starting the store on hosts; cluster file {config}, data and logs in {directory}/")
    for name in store.names:
        try:
            child = await store.start(name)
        except ChildFailed as e:
            say(f"toystore: {e}; the end of its log ({store.log_path(name)}):")
            say("\n".join(e.output.splitlines()[-15:]))
            raise SystemExit(1) from None
        say(f"  {name:<10} ready   pid {child.pid:<7} {hosts.namespace(name):<16} {store.sites[name].host}")
        watch(supervisor, child, store.log_path(name))
    say(status_line(supervisor))
    url = store.sites["frontend"].url
    say(f"toystore is up at {url}, reached from the clients' host; try:")
    say(f"  {' '.join(hosts.wrap('clients'))} curl {url}/products/Tux")
    say(f"the live page, {url}/dashboard, from a browser in the clients' host")
    say("Ctrl-C stops it and removes the hosts.")
    await Deferred()  # until the reactor stops


def main(directory: str | None = None, prefix: str = PREFIX) -> None:
    """Make the hosts, run the store on them until SIGINT or SIGTERM, then remove the hosts; exits."""
    reason = unavailable()
    if reason is not None:
        raise SystemExit(f"toystore.hosts: cannot make hosts here: {reason}")
    path = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="toystore-hosts-"))
    hosts = Hosts(NAMES, prefix)
    hosts.create()
    say(f"toystore: hosts {', '.join(f'{name} {hosts.address(name)}' for name in hosts.names)}")
    try:
        react(run, (hosts, path))
    finally:
        hosts.remove()
        say(f"toystore: hosts removed ({hosts.prefix}*)")
