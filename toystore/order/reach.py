"""
Who reaches the catalog: a leader that cannot buy hands over to a replica
that can.

Every replica asks its peers' ``status`` twice per election timeout and
tells the protocol which of them cannot reach the catalog
(:attr:`~toystore.order.core.Node.unfit`: the seed's rule, the highest id
leads, then passes them by, so that leadership does not go back to a replica
cut from the catalog).  A leader that has had no catalog connection for an
election timeout hands over to the most up-to-date voter that has one.  A
connection counts only while the catalog is heard on it
(:attr:`~toystore.wire.WireClient.hearing`): where packets are dropped, a
connection stays open, silent, until the idle watch closes it seconds later.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .consensus import Consensus
from .core import Node, Role, Timing
from .peering import PeerLinks


class Replica(Protocol):
    """What the watch needs of the replica."""

    id: int
    catalog: Any
    clock: IReactorTime
    links: PeerLinks
    timing: Timing
    node: Node | None
    consensus: Consensus | None


class CatalogReach:
    """The watch of one replica (see the module's docstring)."""

    log = Logger()

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.lost_at: float | None = None  # since when this replica has not heard the catalog
        self.peers: dict[int, bool] = {}  # whether each peer reaches the catalog, as it last said
        self._loop = LoopingCall(self.look)
        self._loop.clock = replica.clock

    def start(self) -> None:
        self._loop.start(self.replica.timing.election / 2, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def look(self) -> None:
        """Ask the peers, tell the protocol who is unfit, and hand over if this leader has been cut off too long."""
        replica = self.replica
        node, consensus, timing = replica.node, replica.consensus, replica.timing
        if node is None or consensus is None or consensus.stopped:
            return
        now = replica.clock.seconds()
        if replica.catalog.hearing:
            self.lost_at = None
        elif self.lost_at is None:
            self.lost_at = now
        for peer in replica.links.clients:
            if replica.links.up(peer):
                asked = replica.links.call(peer, "status", {}, timeout=timing.election / 2)
                asked.addCallbacks(self._heard, lambda failure, p=peer: self.peers.pop(p, None), (peer,))
            else:
                self.peers.pop(peer, None)
        node.unfit = frozenset(peer for peer, reaches in self.peers.items() if not reaches)
        lost = self.lost_at
        if node.role is not Role.LEADER or node.handover_to is not None or lost is None:
            return
        if now - lost < timing.election:
            return
        fit = [p for p, progress in node.progress.items() if progress.voter and self.peers.get(p)]
        if fit:
            target = max(fit, key=lambda p: (node.progress[p].match, p))
            self.log.warn(
                "replica {id} has not reached the catalog for {s:.1f} s: handing over to replica {to}, which does",
                id=replica.id,
                s=now - lost,
                to=target,
            )
            consensus.run(node.hand_over(now, to=target))

    def _heard(self, status: dict[str, Any], peer: int) -> None:
        self.peers[peer] = bool(status.get("catalog"))
