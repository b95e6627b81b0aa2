"""
Stall detection: dropping a peer that stops reading.

A connection is its transport's streaming producer, so it hears
``pauseProducing`` when the peer stops reading and the write buffer fills,
and ``resumeProducing`` when it drains.  :class:`StallDetection` closes a
connection marked with :meth:`~StallDetection.drop_if_stalled` that stays
paused that long (a follower that no longer reads its log stream, say), so
that its unread writes do not pile up in memory.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport
from twisted.logger import Logger


class StallDetection:
    """
    A connection's producer side (a mixin of
    :class:`~toystore.wire.WireProtocol`, which gives it ``clock``,
    ``transport``, ``peer`` and ``log``).
    """

    clock: IReactorTime
    transport: ITransport
    peer: str
    log: Logger
    _stall_timeout: float | None = None  # set by drop_if_stalled
    _stall: IDelayedCall | None = None  # runs out while the transport is paused
    #: the peer reads too slowly: our write buffer is full (a sender may drop what can wait)
    write_paused: bool = False

    def _watch_stalls(self) -> None:
        """
        The connection is made: produce for its transport.  As a streaming
        producer we hear pauseProducing when the peer stops reading and our
        write buffer fills: that is how stalls are seen.
        """
        self.transport.registerProducer(self, True)

    def drop_if_stalled(self, timeout: float) -> None:
        """
        Close this connection if the peer stops reading for ``timeout``
        seconds (our write buffer stays full that long).
        """
        self._stall_timeout = timeout

    def pauseProducing(self) -> None:
        self.write_paused = True
        if self._stall_timeout is not None and self._stall is None:
            self._stall = self.clock.callLater(self._stall_timeout, self._stalled)

    def resumeProducing(self) -> None:
        self.write_paused = False
        self._cancel_stall()

    def stopProducing(self) -> None:
        self._cancel_stall()

    def _cancel_stall(self) -> None:
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        self.log.warn("dropping {peer}: it read nothing for {timeout} s", peer=self.peer, timeout=self._stall_timeout)
        self.transport.abortConnection()
