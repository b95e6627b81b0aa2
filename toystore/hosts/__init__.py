"""
The store on several hosts of one machine: network namespaces joined by a
bridge, and packet-level faults between them.

* :mod:`.network`: :class:`Hosts` (a namespace, an address and a veth pair
  per host, the bridge in a namespace of its own), :func:`clean` (what a
  crashed run left), :func:`unavailable` (why hosts cannot be made here);
* :mod:`.faults`: :class:`PacketFaults`, nftables rules that drop packets
  between hosts (a cut, a blocked port, an isolated host, random loss),
  all removed at :meth:`~PacketFaults.heal`;
* :mod:`.up`: the store's processes started on hosts, for people
  (``python -m toystore.hosts up``).

Making hosts needs root, pyroute2 (``pip install 'toystore[hosts]'``),
``ip`` and ``nft`` (``apt-get install iproute2 nftables``);
``python -m toystore.hosts check`` says what is missing.
"""

from .faults import FaultFailed, PacketFaults
from .network import PREFIX, SUBNET, Hosts, HostsUnavailable, clean, entered, unavailable

__all__ = [
    "PREFIX",
    "SUBNET",
    "FaultFailed",
    "Hosts",
    "HostsUnavailable",
    "PacketFaults",
    "clean",
    "entered",
    "unavailable",
]
