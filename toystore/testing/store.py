"""
One store's processes, started as real ``twistd -n --pidfile=
toystore-...`` children, and what an operator would ask them.

Processes are named ``catalog``, ``order-<id>`` and ``frontend`` (further
front-ends ``frontend-2``, ...).  A :class:`Store` starts any of them, in any
order, each awaited until its ready line; kills (SIGKILL), pauses (SIGSTOP),
resumes and restarts them; asks for replica statuses, ``/health`` and the
leader; and stops them all.  With ``proxies``, a :class:`~.proxy.Proxy` sits
on every link to a lines port that a fault may cut: from each replica to
each other one, from the front-ends to each replica, from each replica to
the catalog (:class:`Proxies`).  Where a process runs and what address it has is its
launcher's business (:mod:`.launch`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from twisted.internet.defer import DeferredList

from ..catalog.store import read_ledger
from ..config import ClusterConfig, load
from ..supervise import Child, Supervisor
from ..wire import WireProtocol
from .calls import connect, health, replica_status, sleep, wait_for_leader
from .clusterfile import cluster_file, listeners, with_knobs
from .launch import LocalLauncher, Site
from .proxy import Proxy, ProxyGroup


def child_env() -> dict[str, str]:
    """Environment for children that must import this package wherever it is (a checkout too)."""
    home = str(Path(__file__).resolve().parents[2])
    return {"PYTHONPATH": os.pathsep.join(filter(None, [home, os.environ.get("PYTHONPATH")]))}


@dataclass
class Proxies:
    """
    A proxy on every link between two processes that a fault may cut, each
    named by its direction (who connects to whom):

    ``pair[(i, j)]``
        replica *i*'s connections to replica *j*'s lines port (the log
        stream, fencing, pulls): *i*'s own cluster file names it as *j*'s
        ``peer_connect``;
    ``frontend[j]``
        the front-ends' connections to replica *j*'s lines port (*j*'s
        ``connect``);
    ``catalog[i]``
        replica *i*'s connections to the catalog's lines port (*i*'s own
        cluster file's ``catalog.connect``); the front-ends reach the
        catalog straight.

    Replica *i* therefore reads a cluster file of its own
    (:meth:`replica_view`), the same as everyone's but for those addresses;
    the front-ends and the catalog read the shared one (:meth:`routes`).
    ``peer[j]`` is every ``pair[(i, j)]`` as one: cutting ``peer[leader]``
    partitions the leader from its followers (they cannot reach it, it
    still reaches them) while the front-ends still reach it; dropping on
    ``frontend[leader]`` loses replies on their way back.
    """

    here: str
    pair: dict[tuple[int, int], Proxy]
    frontend: dict[int, Proxy]
    catalog: dict[int, Proxy]
    sites: dict[str, Site]

    @classmethod
    def start(cls, reactor: Any, here: str, sites: dict[str, Site]) -> Proxies:
        """Listen on ``here`` in front of the replicas and the catalog of ``sites``."""
        replicas = {int(name.split("-")[1]): site for name, site in sites.items() if name.startswith("order-")}
        catalog_site = sites["catalog"]
        pair, frontend, catalog = {}, {}, {}
        for j, site in replicas.items():
            for i in replicas:
                if i != j:
                    pair[i, j] = Proxy(reactor, site.ports["lines"], f"replica {i} -> replica {j}", site.host)
            frontend[j] = Proxy(reactor, site.ports["lines"], f"front-end -> replica {j}", site.host)
            catalog[j] = Proxy(reactor, catalog_site.ports["lines"], f"replica {j} -> catalog", catalog_site.host)
        started = cls(here, pair, frontend, catalog, sites)
        for proxy in started.all():
            proxy.start(interface=here)
        return started

    @property
    def replicas(self) -> list[int]:
        return sorted(self.frontend)

    @property
    def peer(self) -> dict[int, ProxyGroup]:
        """Each replica's peers' proxies to it, as one."""
        return {
            j: ProxyGroup(f"peers -> replica {j}", [p for (_, to), p in sorted(self.pair.items()) if to == j])
            for j in self.replicas
        }

    def _through(self, proxy: Proxy) -> str:
        return Site(self.here, {"lines": proxy.port}).connect("lines")

    def routes(self) -> dict[int, dict[str, str]]:
        """
        Each replica's ``connect`` (through its front-end proxy) and
        ``peer_connect`` (straight) in the shared cluster file, which no
        replica of this store reads.
        """
        return {
            j: {"connect": self._through(self.frontend[j]), "peer_connect": self.sites[f"order-{j}"].connect("lines")}
            for j in self.replicas
        }

    def replica_view(self, i: int) -> tuple[dict[int, dict[str, str]], str]:
        """
        Replica ``i``'s routes (each other replica's ``peer_connect``
        through the proxy of that pair) and its ``catalog.connect``.
        """
        routes = self.routes()
        for j in self.replicas:
            if j != i:
                routes[j]["peer_connect"] = self._through(self.pair[i, j])
        return routes, self._through(self.catalog[i])

    def all(self) -> list[Proxy]:
        """Every proxy."""
        return [*self.pair.values(), *self.frontend.values(), *self.catalog.values()]

    def heal(self) -> None:
        """Let everything through again."""
        for proxy in self.all():
            proxy.heal()

    def stop(self) -> DeferredList:
        """Stop listening and cut every connection."""
        return DeferredList([proxy.stop() for proxy in self.all()])


class Store:
    """
    The processes of one store: started through ``supervisor`` under
    ``launcher``, data and logs under ``directory`` (each child's output in
    ``logs/<name>.log``, the catalog's and each replica's data in
    ``<name>/``).  Make one with :meth:`create` (a cluster file on new
    addresses) or :meth:`from_file` (an existing one).

    :ivar names: every process of the store, in the order they start.
    :ivar sites: where each process listens; a ready line corrects it.
    :ivar children: the newest child of each process started.
    :ivar paused: the processes stopped with SIGSTOP.
    :ivar flags: the flags each process was last started with (``heal`` starts it with them again).
    :ivar proxies: the fault proxies, or None.
    :ivar configs: the cluster file of each process that reads one of its
        own (each replica, behind the proxies), instead of ``config``.
    """

    def __init__(
        self,
        reactor: Any,
        directory: Path,
        config: Path | str | None,
        sites: dict[str, Site],
        names: Sequence[str],
        supervisor: Supervisor | None = None,
        launcher: Any = None,
        proxies: Proxies | None = None,
        configs: dict[str, Path] | None = None,
    ) -> None:
        self.reactor = reactor
        self.directory = directory
        self.config = config
        self.cluster: ClusterConfig = load(None if config is None else str(config))
        self.sites = sites
        self.names = list(names)
        self.replicas = tuple(int(name.split("-")[1]) for name in self.names if name.startswith("order-"))
        self.supervisor = supervisor or Supervisor(reactor, env=child_env())
        self.launcher = launcher or LocalLauncher()
        self.proxies = proxies
        self.configs = dict(configs or {})
        self.children: dict[str, Child] = {}
        self.paused: set[str] = set()
        self.flags: dict[str, tuple[str, ...]] = {}
        self._connections: dict[str, WireProtocol] = {}

    @classmethod
    def create(
        cls,
        reactor: Any,
        directory: Path,
        supervisor: Supervisor | None = None,
        launcher: Any = None,
        frontends: int = 1,
        proxies: bool = False,
        **overrides: Any,
    ) -> Store:
        """
        A store of the catalog, three replicas and ``frontends`` front-ends
        (0 too) on the addresses ``launcher`` gives, its cluster file written
        in ``directory`` with ``overrides`` (``catalog={"initial_stock": 30}``);
        with ``proxies``, the replicas, and the catalog from the replicas,
        are reached through :class:`Proxies` (listening from now on), each
        replica reading a cluster file of its own (``cluster-order-<i>.toml``:
        its view of those addresses).  Nothing runs yet.
        """
        launcher = launcher or LocalLauncher()
        sites = launcher.sites(listeners(frontends))
        names = [name for name in sites if frontends or not name.startswith("frontend")]
        started = Proxies.start(reactor, launcher.here, sites) if proxies else None
        configs: dict[str, Path] = {}
        try:
            config = cluster_file(directory, sites, started.routes() if started else None, **overrides)
            for i in started.replicas if started else ():
                routes, catalog = started.replica_view(i)
                view = with_knobs(overrides, {"catalog": {"connect": catalog}})
                configs[f"order-{i}"] = cluster_file(directory, sites, routes, f"cluster-order-{i}.toml", **view)
        except BaseException:
            if started is not None:
                started.stop()  # a bad override: nothing else will stop them
            raise
        return cls(reactor, directory, config, sites, names, supervisor, launcher, started, configs)

    @classmethod
    def from_file(
        cls, reactor: Any, directory: Path, config: str | None, supervisor: Supervisor | None = None
    ) -> Store:
        """
        The store the cluster file ``config`` describes (None: the packaged
        one), as it is: the catalog, its replicas and its front-end, with data
        and logs under ``directory``.  Raises :class:`~toystore.config.ConfigError`.
        """
        cluster = load(config)
        sites = {"catalog": Site.of({"lines": cluster.catalog.lines, "http": cluster.catalog.http})}
        sites |= {f"order-{r.id}": Site.of({"lines": r.lines, "http": r.http}) for r in cluster.order.replicas}
        sites["frontend"] = Site.of({"http": cluster.frontend.http})
        return cls(reactor, directory, config, sites, list(sites), supervisor)

    # -- the processes ---------------------------------------------------------

    def log_path(self, name: str) -> Path:
        """Where the output of process ``name`` goes."""
        return self.directory / "logs" / f"{name}.log"

    def _command(self, name: str) -> tuple[str, list[str]]:
        """The twistd command of process ``name`` and its flags."""
        config = self.configs.get(name, self.config)
        flags = ["--config", str(config)] if config is not None else []
        if name == "catalog":
            return "toystore-catalog", [*flags, "--data-dir", str(self.directory / name)]
        if name.startswith("order-"):
            return "toystore-order", [*flags, "--id", name.split("-")[1], "--data-dir", str(self.directory / name)]
        if name != "frontend":  # another front-end: the cluster file names the first one's port
            flags += ["--http", self.sites[name].listen("http")]
        return "toystore-frontend", flags

    async def start(self, name: str, *flags: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> Child:
        """
        Start process ``name`` (again, if it ran before) with ``flags`` added
        and ``env`` added to its environment, and wait until it is ready.

        :raises ChildFailed: when it exits before it is ready.
        """
        command, args = self._command(name)
        wrap = self.launcher.wrap(name)
        child = await self.supervisor.start(name, command, [*args, *flags], self.log_path(name), timeout, env, wrap)
        self.children[name] = child
        self.flags[name] = flags
        self.sites[name] = replace(self.sites[name], ports=child.ports)
        self._connections.pop(name, None)
        return child

    async def start_all(self, *frontend_flags: str, names: Sequence[str] | None = None) -> None:
        """
        Start ``names`` (default: every process) in the store's order, the
        front-ends with ``frontend_flags``.  With every replica started, wait
        until the highest id serves (the replicas hand over to it once it has
        caught up); with the first front-end too, until it names that leader.
        """
        wanted = self.names if names is None else [name for name in self.names if name in names]
        for name in wanted:
            await self.start(name, *(frontend_flags if name.startswith("frontend") else ()))
        leader = None
        if all(self.running(f"order-{i}") for i in self.replicas):
            leader = await self.serving(30.0, expected=max(self.replicas))
        if "frontend" in wanted:
            await self.elected(leader=leader)

    def running(self, name: str) -> bool:
        """Whether process ``name`` was started and has not exited."""
        return name in self.children and self.children[name].running

    async def kill(self, name: str) -> int:
        """SIGKILL process ``name`` and wait until it is gone; its status."""
        child = self.children[name]
        child.signal("KILL")
        self.paused.discard(name)
        return await self.supervisor.wait(child)

    async def restart(self, name: str, *flags: str, env: dict[str, str] | None = None) -> Child:
        """SIGKILL process ``name`` if it runs, and start it again (with ``flags`` and ``env``)."""
        if self.running(name):
            await self.kill(name)
        return await self.start(name, *flags, env=env)

    def pause(self, name: str) -> None:
        """SIGSTOP process ``name``."""
        self.children[name].signal("STOP")
        self.paused.add(name)

    def resume(self, name: str) -> None:
        """SIGCONT process ``name``."""
        self.children[name].signal("CONT")
        self.paused.discard(name)

    async def heal(self) -> None:
        """Resume paused processes, heal every proxy, start again (with its flags) every process that is down."""
        for name in list(self.paused):
            self.resume(name)
        if self.proxies:
            self.proxies.heal()
        for name in list(self.children):
            if not self.running(name):
                await self.start(name, *self.flags[name])

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the processes (SIGTERM, then SIGKILL after ``grace`` s), the connections and the proxies."""
        for name in list(self.paused):
            self.resume(name)
        await self.supervisor.stop(list(self.children.values()), grace)
        await self.close()

    async def close(self) -> None:
        """Close the harness's own connections and proxies; the processes run on."""
        for connection in self._connections.values():
            connection.transport.loseConnection()
        self._connections.clear()
        if self.proxies:
            await self.proxies.stop()

    # -- questions -------------------------------------------------------------

    @property
    def url(self) -> str:
        """The first front-end's base URL."""
        return self.sites["frontend"].url

    async def call(self, name: str, type: str, /, timeout: float = 5.0, **fields: Any) -> Any:
        """A wire call with ``fields`` to the lines port of process ``name`` (one connection per process, kept)."""
        connection = self._connections.get(name)
        if connection is None or not connection.connected:
            site = self.sites[name]
            connection = await connect(self.reactor, site.ports["lines"], self.cluster.wire, site.host)
            self._connections[name] = connection
        return await connection.call(type, fields, timeout=timeout)

    async def status(self, i: int, timeout: float = 1.0) -> dict[str, Any] | None:
        """Replica ``i``'s status, straight from its lines port, or None (down, paused, or no answer)."""
        name = f"order-{i}"
        if not self.running(name) or name in self.paused:
            return None
        site = self.sites[name]
        return await replica_status(self.reactor, site.ports["lines"], timeout, self.cluster.wire, site.host)

    async def statuses(self) -> dict[int, dict[str, Any]]:
        """The status of every replica that answers."""
        found = {i: await self.status(i) for i in self.replicas}
        return {i: s for i, s in found.items() if s is not None}

    async def health(self, name: str) -> dict[str, Any] | None:
        """What process ``name``'s ``/health`` says, or None."""
        return await health(self.sites[name].url)

    async def elected(
        self, frontend: str = "frontend", timeout: float = 30.0, leader: int | None = None
    ) -> dict[str, int]:
        """Wait until ``frontend`` names a leader (``leader``, if given) on ``GET /leader``; what it says."""
        return await wait_for_leader(self.reactor, self.sites[frontend].url, timeout, leader)

    async def leader(self, timeout: float = 10.0) -> int | None:
        """The replica that leads the newest epoch, as the replicas say; None if none within ``timeout``."""
        deadline = self.reactor.seconds() + timeout
        while True:
            statuses = await self.statuses()
            leaders = [s for s in statuses.values() if s["serving"]]
            if leaders:
                newest = max(leaders, key=lambda s: s["epoch"])
                if newest["epoch"] >= max(s["epoch"] for s in statuses.values()):
                    return newest["id"]
            if self.reactor.seconds() >= deadline:
                return None
            await sleep(self.reactor, 0.05)

    async def recovered(self, timeout: float = 30.0) -> dict[int, dict[str, Any]] | None:
        """
        Wait until one replica leads the newest epoch and every replica holds
        its whole log on disk, committed; the statuses then, or None.
        """
        deadline = self.reactor.seconds() + timeout
        while self.reactor.seconds() < deadline:
            statuses = await self.statuses()
            if len(statuses) == len(self.replicas):
                leaders = [s for s in statuses.values() if s["serving"]]
                lengths = {s["length"] for s in statuses.values()} | {s["durable"] for s in statuses.values()}
                if len(leaders) == 1 and len(lengths) == 1 and leaders[0]["commit"] == leaders[0]["length"]:
                    return statuses
            await sleep(self.reactor, 0.1)
        return None

    async def caught_up(
        self, length: int | None = None, replicas: Sequence[int] | None = None, timeout: float = 15.0
    ) -> None:
        """Wait until every replica named has ``length`` records on disk (default: the longest log)."""
        deadline = self.reactor.seconds() + timeout
        while True:
            statuses = {i: await self.status(i) for i in replicas or self.replicas}
            known = [s for s in statuses.values() if s is not None]
            if known and len(known) == len(statuses):
                target = length if length is not None else max(s["length"] for s in known)
                if all(s["durable"] == target for s in known):
                    return
            if self.reactor.seconds() >= deadline:
                raise AssertionError(f"replicas did not catch up within {timeout} s: {statuses}")
            await sleep(self.reactor, 0.05)

    # -- the front-end's part, where a test or benchmark plays it ---------------

    async def serving(self, timeout: float = 15.0, expected: int | None = None) -> int:
        """
        Wait until one replica serves (it leads the newest epoch, its leader
        record committed, its reconciliation with the catalog done), and
        ``expected`` if given; its id.
        """
        deadline = self.reactor.seconds() + timeout
        while True:
            statuses = await self.statuses()
            newest = max((s["epoch"] for s in statuses.values()), default=0)
            serving = [s["id"] for s in statuses.values() if s["serving"] and s["reconciled"] and s["epoch"] == newest]
            if serving and (expected is None or serving[0] == expected):
                return serving[0]
            if self.reactor.seconds() >= deadline:
                raise AssertionError(
                    f"no replica serves{'' if expected is None else f' as {expected}'} within {timeout} s: {statuses}"
                )
            await sleep(self.reactor, 0.05)

    async def order(self, leader: int, key: str, name: str = "Tux", quantity: int = 1) -> int:
        """An order straight to replica ``leader``; its number."""
        reply = await self.call(f"order-{leader}", "order", name=name, quantity=quantity, key=key)
        return reply["order_number"]

    # -- what is on disk -------------------------------------------------------

    def log(self, i: int) -> bytes:
        """Replica ``i``'s log file."""
        return (self.directory / f"order-{i}" / "orders.log").read_bytes()

    def logs(self) -> dict[int, bytes]:
        """Every replica's log file."""
        return {i: self.log(i) for i in self.replicas}

    def ledger(self) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
        """The catalog's ledger and buys, read from its database."""
        return read_ledger(self.directory / "catalog" / "catalog.sqlite")


def scratch(
    reactor: Any, prefix: str, keep: Callable[[], bool] = lambda: False, on_stop: Callable[[], None] = lambda: None
) -> tuple[Supervisor, Path]:
    """
    A Supervisor for a tool's stores and a new temporary directory for their
    data.  When the reactor stops (at the end, or on Ctrl-C or SIGTERM) every
    child is killed and the directory removed, unless ``keep()`` says not to.
    """
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    supervisor = Supervisor(reactor, env=child_env())

    def stopping() -> DeferredList:
        on_stop()
        ended = DeferredList(supervisor.kill_all())
        return ended.addBoth(lambda _: keep() or shutil.rmtree(directory, ignore_errors=True))

    reactor.addSystemEventTrigger("before", "shutdown", stopping)
    return supervisor, directory
