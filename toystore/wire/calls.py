"""
The calls a connection makes: their ids, the replies they wait for, and the
connection's one timer, which watches every call's deadline and runs the
idle watch's looks (:mod:`~toystore.wire.idle`).

:class:`Calls` gives each request an id of its own, keeps it pending until
its reply comes back (in any order), and fails it with :class:`CallTimeout`
when no reply comes in time, or with :class:`ConnectionDropped` when the
connection closes first.  A call made with ``encoded=True`` gets its reply's
success envelope as the peer's own bytes (:meth:`Calls._encoded_reply`).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ..envelope import ApiError, Encoded, Unavailable, dumps


class NotConnected(Unavailable):
    """The peer could not be reached in time."""


class CallTimeout(Unavailable):
    """The peer did not answer a call in time."""


class ConnectionDropped(Unavailable):
    """The connection closed while the call was pending."""


class Calls:
    """
    The calling side of a connection (a mixin of
    :class:`~toystore.wire.WireProtocol`, which gives it ``clock``,
    ``connected``, ``peer``, ``send``, ``log`` and the ``_look`` of
    :class:`~toystore.wire.idle.IdleWatch`).

    :ivar call_timeout: seconds a call waits for its reply by default
        (``wire.call_timeout``).
    """

    clock: IReactorTime
    connected: bool
    peer: str
    send: Callable[[dict[str, Any]], None]
    log: Logger
    _look: Callable[[float], float | None]

    def _init_calls(self, call_timeout: float) -> None:
        """No call made yet."""
        self.call_timeout = call_timeout
        self._ids = itertools.count(1)
        # id -> (its Deferred, deadline, type, timeout, encoded) of each call awaiting its reply
        self._pending: dict[int, tuple[Deferred[Any], float, str, float, bool]] = {}
        # the connection's one timer: every pending call's deadline, and the idle watch's next look
        self._timer: IDelayedCall | None = None

    def call(
        self, type: str, fields: dict[str, Any] | None = None, timeout: float | None = None, encoded: bool = False
    ) -> Deferred[Any]:
        """
        Send a request and wait for its reply.

        :param encoded: whether the reply's data is wanted as its success
            envelope, ``{"data": ...}``, in :class:`Encoded` bytes, rather
            than decoded: for a caller that only passes the data on, such as
            the front-end writing it as an HTTP body.  The bytes are the
            peer's own, cut out of its reply line, not decoded and checked:
            ask for them only from a peer of this cluster, which encodes as
            :func:`~toystore.envelope.dumps` does.
        :return: a Deferred that fires with the reply's ``data``, or fails
            with the reply's :class:`ApiError`, :class:`CallTimeout` after
            ``timeout`` seconds (default ``wire.call_timeout``), or
            :class:`ConnectionDropped`.
        """
        if not self.connected:
            raise NotConnected(f"not connected to {self.peer}")
        call_id = next(self._ids)
        d: Deferred[Any] = Deferred(lambda _: self._pending.pop(call_id, None))
        limit = self.call_timeout if timeout is None else timeout
        deadline = self.clock.seconds() + limit
        self._pending[call_id] = (d, deadline, type, limit, encoded)
        self.send({**(fields or {}), "id": call_id, "type": type})
        self._wake_by(deadline)
        return d

    def _wake_by(self, when: float) -> None:
        """
        Make sure the timer runs by ``when``.  One timer serves the whole
        connection: it runs at the earliest time known when it was set (a
        call's deadline, the idle watch's next look), fails the calls whose
        time is up, lets the idle watch look, and sets itself again for
        what comes next (:meth:`_wake`).  Calls answered in time leave
        nothing to cancel, and a line costs the timer nothing.
        """
        timer = self._timer
        if timer is None:
            self._timer = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._wake)
        elif when < timer.getTime():
            timer.reset(max(0.0, when - self.clock.seconds()))

    def _wake(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        cutoff = now + 1e-6  # (a microsecond for rounding)
        late = [call_id for call_id, (_, deadline, *_) in self._pending.items() if deadline <= cutoff]
        expired = [(call_id, self._pending.pop(call_id)) for call_id in late]
        look = self._look(now)  # (it may make a call: a ping)
        if look is not None:
            self._wake_by(look)
        if self._pending:
            self._wake_by(min(deadline for _, deadline, *_ in self._pending.values()))
        for _, (d, _, type, limit, _) in expired:
            d.errback(CallTimeout(f"{type!r} call to {self.peer} got no reply in {limit} s"))

    def _fail_pending(self) -> None:
        """The connection is gone: stop the timer and fail every pending call with :class:`ConnectionDropped`."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        pending, self._pending = self._pending, {}
        for d, *_ in pending.values():
            d.errback(ConnectionDropped(f"connection to {self.peer} closed with the call pending"))

    def _encoded_reply(self, line: bytes) -> bool:
        """
        Answer the call a success reply ``line`` is for, if that call wants
        its reply ``encoded``: with the line's data, cut out as it is, with
        no decoding.  Sorted keys put the reply's id last
        (``{"data":...,"id":7}``), so the last ``,"id":`` of the line is
        its own (the bytes cannot occur inside a JSON string, where a quote
        is escaped).  False, with nothing done, for any other line: it is
        decoded as usual.
        """
        cut = line.rfind(b',"id":')
        tail = line[cut + 6 : -1]
        if cut < 0 or not line.endswith(b"}") or not tail.isdigit():
            return False
        call_id = int(tail)
        pending = self._pending.get(call_id)
        if pending is None or not pending[4] or tail != b"%d" % call_id:
            return False
        del self._pending[call_id]
        pending[0].callback(Encoded(line[:cut] + b"}"))
        return True

    def _reply_received(self, message: dict[str, Any]) -> None:
        """Answer the pending call a decoded reply is for; log a reply for no call, and drop it."""
        pending = self._pending.pop(message["id"], None) if isinstance(message["id"], int) else None
        if pending is None:
            if "error" in message:
                self.log.warn("{peer} reports: {error}", peer=self.peer, error=message["error"])
            else:
                self.log.debug("late or unknown reply {id!r} from {peer}", id=message["id"], peer=self.peer)
            return
        d = pending[0]
        if "error" in message:
            d.errback(ApiError.from_json(message["error"]))
        elif "data" in message:
            d.callback(Encoded(dumps({"data": message["data"]})) if pending[4] else message["data"])
        else:
            d.errback(ApiError(f"reply from {self.peer} has neither data nor error", 502))
