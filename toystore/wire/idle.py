"""
The idle watch: keepalive pings, and closing a connection that hears nothing.

A peer can vanish without a word: its machine stops, a cable or a route goes,
a firewall forgets the flow.  Its connection is then *half-open*: this side
sees nothing wrong until it writes and the kernel gives up, minutes later, and
a connection nobody writes to stays open for ever.  So each side closes
(``abortConnection``) a connection on which it has heard nothing for
``wire.idle_timeout`` seconds, and the connecting side, whose
:class:`~toystore.wire.WireClient` then connects again, keeps a healthy
connection from falling silent: when, since its last look, it has sent
nothing or heard nothing, it sends a ``ping``, which every lines port answers.
Its peer hears the ping; it hears the ``pong``.

Per line this costs a flag: receiving data sets one, sending a line another
(:class:`~toystore.wire.WireProtocol`'s ``dataReceived`` and ``sendLine``).
The connection's one timer (:mod:`~toystore.wire.calls`) has the watch look
every ``wire.keepalive`` seconds: the look reads and clears the flags, pings,
and closes the connection after ``ceil(idle_timeout / keepalive)`` looks in a
row that found nothing heard, so between ``idle_timeout`` and ``idle_timeout
+ keepalive`` seconds after the last byte.  Counting looks, not comparing
times, is deliberate: after a reactor that was held up (a long GC pause, a
busy turn), the first timer to run comes before the data waiting in the
socket is read, and counts as one look, not as the whole silence.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, ITransport
from twisted.logger import Logger


class IdleWatch:
    """
    The idle watch of a connection (a mixin of
    :class:`~toystore.wire.WireProtocol`, which gives it ``clock``,
    ``connected``, ``transport``, ``peer``, ``log``, and the ``call`` and
    ``_wake_by`` of :class:`~toystore.wire.calls.Calls`).
    """

    clock: IReactorTime
    connected: bool
    transport: ITransport
    peer: str
    log: Logger
    call: Callable[..., Deferred[Any]]
    _wake_by: Callable[[float], None]

    def _init_idle(self, keepalive: float, idle_timeout: float, pings: bool) -> None:
        """
        Nothing heard or said yet.

        :param pings: whether this side sends the keepalive pings (the
            connecting side does).
        """
        self._keepalive = keepalive
        self._idle_timeout = idle_timeout
        self._quiet_looks = max(1, math.ceil(idle_timeout / keepalive))  # looks in a row that close it
        self._pings = pings
        self._heard = False  # data received since the last look
        self._said = False  # a line sent since the last look
        self._quiet = 0  # looks in a row that found nothing heard
        self._next_look: float | None = None  # None: not watching

    @property
    def hearing(self) -> bool:
        """
        Whether the peer has been heard lately: of the watch's last two
        looks, one found something heard.  One look that heard nothing is
        only a quiet link (a ping goes out then, and its pong comes before
        the next look); two are a peer that did not answer a ping for
        ``wire.keepalive`` seconds, long before the connection is closed as
        idle: a peer whose packets are dropped is silent, not disconnected.
        """
        return self._quiet < 2

    def _watch_idle(self) -> None:
        """The connection is made: look first ``keepalive`` seconds from now."""
        self._next_look = self.clock.seconds() + self._keepalive
        self._wake_by(self._next_look)

    def _end_idle_watch(self) -> None:
        """The connection is gone: look no more."""
        self._next_look = None

    def _look(self, now: float) -> float | None:
        """
        The watch's turn when the connection's timer runs (which may be for
        a call's deadline, before the look is due): if a look is due, count
        a look that heard nothing, close the connection after too many in
        a row, else ping if this side pings and, since the last look, it
        said or heard nothing.

        :return: when the watch wants the timer to run next; None once it
            is no longer watching.
        """
        look = self._next_look
        if look is None or now + 1e-6 < look:  # (a microsecond for rounding)
            return look
        self._quiet = 0 if self._heard else self._quiet + 1
        if self._quiet >= self._quiet_looks:
            self._next_look = None
            self.log.warn(
                "dropping {peer}: heard nothing from it for {timeout} s", peer=self.peer, timeout=self._idle_timeout
            )
            self.transport.abortConnection()
            return None
        if self._pings and not (self._heard and self._said) and self.connected:
            # No need to wait for the pong: hearing it is what counts.  Lost, the look finds nothing heard.
            self.call("ping", timeout=self._idle_timeout).addErrback(lambda _: None)
        self._heard = self._said = False
        self._next_look = now + self._keepalive
        return self._next_look
