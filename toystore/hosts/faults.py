"""
Packet-level faults between :class:`~.network.Hosts`, with nftables.

Each fault is named by what it blocks, and every one drops: the sender
hears nothing back (no reset, no ICMP), as on a real network where a link
is cut; only timeouts and heartbeats notice.  Over TCP a drop in one
direction breaks a connection both ways; only :meth:`PacketFaults.block`,
scoped to one port, is one-sided.

The rules live in one table, ``inet toystore``, in each host's namespace,
with an ``input`` and an ``output`` chain; each rule carries a comment
naming its fault.  They are loaded with ``nft -f -`` run inside the
namespace (the hosts' :meth:`~.network.Hosts.wrap` prefix), and
:meth:`PacketFaults.heal` deletes the table in every host it touched.
(tc's ``gact`` and ``netem`` are missing from this kernel, so delay stays
with the harness's proxy.)
"""

from __future__ import annotations

import subprocess
from typing import Sequence

from .network import NFT_TIMEOUT, Hosts

#: The family and name of the table of rules in each host.
TABLE = "inet toystore"
#: Declares the table and its chains; loading it again changes nothing.
_DECLARE = f"""\
table {TABLE} {{
    chain input {{ type filter hook input priority filter; policy accept; }}
    chain output {{ type filter hook output priority filter; policy accept; }}
}}
"""


class FaultFailed(Exception):
    """``nft`` refused a rule or failed to run; the message has its error."""


class PacketFaults:
    """Packet drops between ``hosts``, added host by host, all removed by :meth:`heal`."""

    def __init__(self, hosts: Hosts) -> None:
        self.hosts = hosts
        self._touched: list[str] = []

    def cut(self, a: str, b: str) -> None:
        """
        Hosts ``a`` and ``b`` exchange no packet, either way; each still
        reaches every other host.  The hosts speak IPv4 (their addresses);
        their link-local IPv6 and ARP are left alone.
        """
        for here, there in ((a, b), (b, a)):
            address = self.hosts.address(there)
            comment = f"cut {a} {b}"
            self._add(here, [f"input ip saddr {address} drop", f"output ip daddr {address} drop"], comment)

    def block(self, host: str, port: int, sources: Sequence[str]) -> None:
        """
        Packets from ``sources`` to ``host``'s TCP ``port`` are dropped.
        One-sided: ``host`` still reaches them, and they still reach its
        other ports.
        """
        if not sources:
            raise ValueError("block needs at least one source host")
        addresses = ", ".join(self.hosts.address(source) for source in sources)
        comment = f"block {host}:{port} from {' '.join(sources)}"
        self._add(host, [f"input ip saddr {{ {addresses} }} tcp dport {_port(port)} drop"], comment)

    def isolate(self, host: str) -> None:
        """``host`` exchanges nothing with any other host (its own loopback still works)."""
        interface = self.hosts.interface(host)
        self._add(host, [f'input iifname "{interface}" drop', f'output oifname "{interface}" drop'], f"isolate {host}")

    def loss(self, host: str, percent: int) -> None:
        """
        Drop ``percent`` of the packets on ``host``'s link at random, each
        direction on its own (``numgen random mod 100 < percent``; at 100,
        every packet: nft's ``mod 100`` never reaches 100).
        """
        if not 0 <= percent <= 100:
            raise ValueError(f"loss of {percent}%: a percentage is from 0 to 100")
        interface = self.hosts.interface(host)
        drop = "drop" if percent == 100 else f"numgen random mod 100 < {percent} drop"
        rules = [f'input iifname "{interface}" {drop}', f'output oifname "{interface}" {drop}']
        self._add(host, rules, f"loss {host} {percent}%")

    def heal(self) -> None:
        """Remove every rule added, in every host: each one's table goes."""
        for host in self._touched:
            self._nft(host, f"table {TABLE}\ndelete table {TABLE}\n")
        self._touched.clear()

    def rules(self, host: str) -> str:
        """What ``nft list table inet toystore`` prints in ``host``: its rules ("" if it has none)."""
        result = subprocess.run(
            [*self.hosts.wrap(host), "nft", "list", "table", *TABLE.split()],
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT,
        )
        return result.stdout if result.returncode == 0 else ""

    def _add(self, host: str, rules: list[str], comment: str) -> None:
        """Add ``rules`` (``chain match... verdict``) to ``host``'s table in one transaction, each with ``comment``."""
        lines = [f'add rule {TABLE} {rule} comment "{comment}"' for rule in rules]
        self._nft(host, _DECLARE + "\n".join(lines) + "\n")
        if host not in self._touched:
            self._touched.append(host)

    def _nft(self, host: str, script: str) -> None:
        """Run ``nft -f -`` on ``script`` inside ``host``."""
        try:
            result = subprocess.run(
                [*self.hosts.wrap(host), "nft", "-f", "-"],
                input=script,
                capture_output=True,
                text=True,
                timeout=NFT_TIMEOUT,
            )
        except FileNotFoundError as e:
            raise FaultFailed(f"cannot run {e.filename!r}: apt-get install iproute2 nftables") from None
        if result.returncode != 0:
            raise FaultFailed(f"nft in {host} failed ({result.returncode}): {result.stderr.strip()}")


def _port(port: int) -> int:
    """``port`` if it is a TCP port number."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not a TCP port")
    return port
