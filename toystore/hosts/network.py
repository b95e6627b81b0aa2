"""
Hosts on one machine: a network namespace per host, joined to a bridge.

:class:`Hosts` makes, for every host name, a network namespace
``<prefix><name>`` with its loopback up and one interface, the end of a veth
pair whose other end is a port of a bridge.  The bridge lives in a namespace
of its own, ``<prefix>net``, so nothing is added to the machine's own
network: every interface is made inside the bridge's namespace and one end
moved to its host.  Each host has one address in :data:`SUBNET` (``.1`` for
the first name, ``.2`` for the next, ...) and no route but the one to that
subnet, so nothing it sends leaves the test network.

A process runs inside a host under :meth:`Hosts.wrap` (``ip netns exec
<namespace>``), or moves there itself with :meth:`Hosts.enter`.  Whatever
a crashed run left (every namespace named with the prefix) goes with
:func:`clean`, which :meth:`Hosts.create` calls first.  Netlink work is done
with pyroute2, imported only when hosts are made or removed, so that this
module imports (and :func:`unavailable` explains) where it is missing.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from types import TracebackType
from typing import Any, Sequence

#: Every namespace and interface this module makes starts with it.
PREFIX = "tsh-"
#: RFC 2544's benchmarking range: private and never routed.  No host has a default route.
SUBNET = "198.18.0.0/24"
#: Where named network namespaces are (``ip netns`` and pyroute2 agree on it).
NETNS_DIR = "/var/run/netns"
#: The oldest pyroute2 whose API this module uses.
PYROUTE2_MIN = (0, 7)
#: How long a probe's or a fault's ``nft`` may take, in seconds.
NFT_TIMEOUT = 10.0

# Interface names have at most 15 characters: the prefix, a letter and a host's number must fit.
_PREFIX_PATTERN = re.compile(r"[a-z0-9-]{2,10}")
_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")
#: The ruleset a probe loads in a fresh namespace: every kind of rule :mod:`.faults` adds.
_PROBE_RULES = """\
table inet toystore {
    chain input { type filter hook input priority filter; policy accept; }
    chain output { type filter hook output priority filter; policy accept; }
}
add rule inet toystore input ip saddr { 198.18.0.1, 198.18.0.2 } tcp dport 1 drop comment "probe"
add rule inet toystore input iifname "lo" numgen random mod 100 < 1 drop
add rule inet toystore output oifname "lo" ip daddr 198.18.0.1 drop
"""


class HostsUnavailable(Exception):
    """Hosts cannot be made on this machine; the message says what is missing and how to get it."""


def unavailable() -> str | None:
    """
    None if this machine can make hosts and put faults between them: root,
    network namespaces, a bridge and veth pairs in one, pyroute2, ``ip``,
    and ``nft`` working inside a namespace.  Otherwise the reason, with what
    to install or change.  It makes (and removes) a namespace to find out.
    """
    return _missing() or _probe()


def _missing() -> str | None:
    """What this machine lacks that can be seen without making anything, or None."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux's, and this is {sys.platform}"
    if os.geteuid() != 0:
        return "making network namespaces needs root: run as root (or under sudo)"
    if not os.path.exists("/proc/self/ns/net"):
        return "this kernel has no network namespaces (CONFIG_NET_NS)"
    try:
        version = metadata.version("pyroute2")
    except metadata.PackageNotFoundError:
        return "pyroute2 is not installed: pip install 'toystore[hosts]' (or 'pyroute2 >= 0.7')"
    if _version(version) < PYROUTE2_MIN:
        return f"pyroute2 {version} is too old: pip install 'pyroute2 >= 0.7'"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"'{tool}' is not on PATH: apt-get install {package}"
    return None


def _version(text: str) -> tuple[int, ...]:
    """The leading numbers of a version string: ``(0, 9, 7)`` for ``0.9.7``."""
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _probe() -> str | None:
    """Make a namespace with a bridge and a veth pair, load rules there with nft; what failed, or None."""
    from pyroute2 import NetNS, netns

    namespace = f"{PREFIX}probe-{os.getpid()}"
    try:
        netns.create(namespace)
    except OSError as e:
        return f"cannot make a network namespace: {e}"
    try:
        with NetNS(namespace, flags=0) as ns:
            ns.link("add", ifname="probe-br", kind="bridge")
            ns.link("add", ifname="probe-a", kind="veth", peer="probe-b")
        result = _nft(namespace, _PROBE_RULES)
        if result.returncode != 0:
            return f"nft fails in a network namespace: {result.stderr.strip() or result.returncode}"
    except Exception as e:
        return f"cannot make a bridge and a veth pair in a network namespace: {e}"
    finally:
        netns.remove(namespace)
    return None


def _nft(namespace: str, rules: str) -> subprocess.CompletedProcess[str]:
    """Load ``rules`` with ``nft -f -`` inside ``namespace``."""
    return subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "-f", "-"],
        input=rules,
        capture_output=True,
        text=True,
        timeout=NFT_TIMEOUT,
    )


def check_prefix(prefix: str) -> str:
    """
    ``prefix``, if it is safe to name (and to clean) namespaces and
    interfaces by: 2 to 10 characters of ``a-z``, ``0-9`` and ``-``, with
    at least one ``-`` (so that no prefix matches ``eth0`` or ``lo``).

    :raises ValueError: otherwise.
    """
    if not _PREFIX_PATTERN.fullmatch(prefix) or "-" not in prefix:
        raise ValueError(f"prefix {prefix!r}: 2 to 10 characters of a-z, 0-9 and '-', with a '-' among them")
    return prefix


def clean(prefix: str = PREFIX) -> list[str]:
    """
    Remove every network namespace whose name starts with ``prefix`` (what
    a crashed run left: its hosts, their interfaces and rules go with them)
    and every interface so named in the calling process's own namespace
    (the machine's, unless the process entered a host); what it removed,
    as ``namespace NAME`` and ``interface NAME``.

    :raises HostsUnavailable: where hosts cannot be made (nor removed).
    """
    check_prefix(prefix)
    reason = _missing()
    if reason is not None:
        raise HostsUnavailable(reason)
    from pyroute2 import IPRoute, netns

    removed = []
    for namespace in sorted(netns.listnetns()):
        if namespace.startswith(prefix):
            _remove_namespace(namespace)
            removed.append(f"namespace {namespace}")
    with IPRoute() as ip:
        for link in ip.get_links():
            name = link.get_attr("IFLA_IFNAME")
            if name and name.startswith(prefix):
                ip.link("del", index=link["index"])
                removed.append(f"interface {name}")
    return removed


def _remove_namespace(namespace: str) -> None:
    """Unmount and unlink a named namespace if it is there; the kernel frees it (and its interfaces) once unused."""
    from pyroute2 import netns

    try:
        netns.remove(namespace)
    except FileNotFoundError:
        pass


class Hosts:
    """
    Hosts named ``names`` (``"catalog"``, ``"order-1"``, ``"clients"``),
    each a network namespace ``<prefix><name>`` with one address in
    :data:`SUBNET`, all joined by a bridge in the namespace
    ``<prefix>net``.  Nothing exists until :meth:`create`; :meth:`remove`
    (or leaving a ``with`` block) deletes it all.

    :raises ValueError: for a bad prefix, a bad or repeated name, or more
        names than the subnet has addresses.
    """

    def __init__(self, names: Sequence[str], prefix: str = PREFIX) -> None:
        self.prefix = check_prefix(prefix)
        self.names = list(names)
        network = ipaddress.ip_network(SUBNET)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"host names repeat: {self.names}")
        if len(self.names) > network.num_addresses - 2:
            raise ValueError(f"{len(self.names)} hosts do not fit in {SUBNET}")
        for name in self.names:
            if not _NAME_PATTERN.fullmatch(name) or name == "net":
                raise ValueError(f"host name {name!r}: a-z, 0-9 and '-', and not 'net' (the bridge's namespace)")
        self._addresses = {name: str(network[i + 1]) for i, name in enumerate(self.names)}
        self.prefixlen = network.prefixlen

    # -- names and addresses ----------------------------------------------------

    def address(self, name: str) -> str:
        """The address of host ``name`` (``198.18.0.1`` for the first)."""
        return self._addresses[self._known(name)]

    def namespace(self, name: str) -> str:
        """The network namespace of host ``name`` (``tsh-catalog``)."""
        return f"{self.prefix}{self._known(name)}"

    def interface(self, name: str) -> str:
        """The name of host ``name``'s one interface (besides ``lo``), inside its namespace."""
        return f"{self.prefix}h{self.names.index(self._known(name)) + 1}"

    @property
    def bridge_namespace(self) -> str:
        """The namespace that holds the bridge and the bridge's end of every veth pair."""
        return f"{self.prefix}net"

    @property
    def namespaces(self) -> list[str]:
        """Every namespace these hosts use: the bridge's, then one per host."""
        return [self.bridge_namespace, *(self.namespace(name) for name in self.names)]

    def wrap(self, name: str) -> list[str]:
        """The command line prefix that runs a command inside host ``name``: ``ip netns exec <namespace>``."""
        return ["ip", "netns", "exec", self.namespace(name)]

    def _known(self, name: str) -> str:
        if name not in self._addresses:
            raise KeyError(f"no host {name!r} (hosts: {', '.join(self.names)})")
        return name

    # -- making and removing ----------------------------------------------------

    def create(self) -> None:
        """
        Remove what an earlier run with this prefix left (:func:`clean`),
        then make the bridge's namespace and the bridge, and per host its
        namespace, its veth pair (made in the bridge's namespace, one end
        moved to the host), its address and its loopback, all up.  On a
        failure, whatever was made is removed again.

        :raises HostsUnavailable: where hosts cannot be made (see :func:`unavailable`).
        """
        reason = _missing()
        if reason is not None:
            raise HostsUnavailable(reason)
        clean(self.prefix)
        try:
            self._make()
        except BaseException:
            self.remove()
            raise

    def _make(self) -> None:
        from pyroute2 import NetNS, netns

        for namespace in self.namespaces:
            netns.create(namespace)
        with NetNS(self.bridge_namespace, flags=0) as bridge_ns:
            bridge = self._bridge(bridge_ns)
            for number, name in enumerate(self.names, start=1):
                self._join(bridge_ns, bridge, number, name)
        for name in self.names:
            with NetNS(self.namespace(name), flags=0) as ns:
                self._configure(ns, name)

    def _bridge(self, ns: Any) -> int:
        """Make the bridge, up; its index."""
        ns.link("add", ifname=f"{self.prefix}br", kind="bridge")
        index = ns.link_lookup(ifname=f"{self.prefix}br")[0]
        ns.link("set", index=index, state="up")
        return index

    def _join(self, ns: Any, bridge: int, number: int, name: str) -> None:
        """Make host ``name``'s veth pair in the bridge's namespace: one end a bridge port (up), one in the host."""
        port, end = f"{self.prefix}p{number}", self.interface(name)
        ns.link("add", ifname=port, kind="veth", peer=end)
        ns.link("set", index=ns.link_lookup(ifname=end)[0], net_ns_fd=self.namespace(name))
        ns.link("set", index=ns.link_lookup(ifname=port)[0], master=bridge, state="up")

    def _configure(self, ns: Any, name: str) -> None:
        """Inside host ``name``: loopback up, the address on its interface, up."""
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        index = ns.link_lookup(ifname=self.interface(name))[0]
        ns.addr("add", index=index, address=self.address(name), prefixlen=self.prefixlen)
        ns.link("set", index=index, state="up")

    def remove(self) -> None:
        """
        Remove every namespace these hosts use, and with them their
        interfaces and rules; idempotent.  A namespace that a process still
        runs in lives on, nameless, until that process exits: stop the
        processes first.
        """
        for namespace in self.namespaces:
            _remove_namespace(namespace)

    def exists(self) -> bool:
        """Whether every namespace of these hosts is there."""
        return all(os.path.exists(os.path.join(NETNS_DIR, namespace)) for namespace in self.namespaces)

    # -- moving in --------------------------------------------------------------

    def enter(self, name: str) -> None:
        """
        Move the calling thread into host ``name``'s namespace (``setns``).
        Called before the process makes threads or sockets, it moves the
        whole process: threads made later start there too, and so do the
        sockets of a reactor started afterwards.  Sockets made before stay
        where they were made.
        """
        from pyroute2 import netns

        netns.setns(self.namespace(name), flags=0)

    def __enter__(self) -> Hosts:
        self.create()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.remove()


def entered(names: Sequence[str], prefix: str = PREFIX, host: str = "clients") -> Hosts:
    """
    Hosts ``names`` made, and this process moved into ``host`` (one of
    them): for a tool that drives a store on hosts from its clients' host.
    Call it before the reactor makes a socket; :meth:`Hosts.remove` them
    when done.

    :raises HostsUnavailable: where hosts cannot be made (see :func:`unavailable`).
    """
    reason = unavailable()
    if reason is not None:
        raise HostsUnavailable(reason)
    hosts = Hosts(names, prefix)
    hosts.create()
    try:
        hosts.enter(host)
    except BaseException:
        hosts.remove()
        raise
    return hosts
