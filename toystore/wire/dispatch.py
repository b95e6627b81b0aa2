"""
Serving a connection's requests and pushes with a handler's methods.

:class:`Dispatch` sends a request of type T to ``handler.call_T(message,
connection)`` and a push to ``handler.push_T``, answers the request with
what the handler returns (at once when it is plain data, once it fires when
it is a Deferred or coroutine, then runs a :class:`Reply`'s ``after``), turns
an :class:`~toystore.envelope.ApiError` into an error reply and anything else
into a logged 500, and tells the handler's hooks (``connection_made``,
``connection_lost``, ``call_finished``).  A handler checks the fields of a
request with its description in :mod:`toystore.contract`.
"""

from __future__ import annotations

import re
from inspect import iscoroutine
from typing import Any, Callable

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..envelope import ApiError, BadRequest, dumps

_TYPE = re.compile(r"[a-z][a-z_]{0,63}\Z")


class Reply:
    """
    What a handler returns to send ``data`` as its reply and then run
    ``after()``: for a request that starts a stream whose pushes must come
    after the reply.
    """

    def __init__(self, data: Any, after: Callable[[], None]) -> None:
        self.data = data
        self.after = after


def usable_id(value: Any) -> bool:
    """Whether a request's ``id`` is an integer or a string (not a boolean), as a reply can echo it."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _pong(message: dict[str, Any], connection: Any) -> dict[str, bool]:
    return {"pong": True}


class Dispatch:
    """
    The serving side of a connection (a mixin of
    :class:`~toystore.wire.WireProtocol`, which gives it ``clock``,
    ``connected``, ``peer``, ``send``, ``sendLine``, ``log`` and the
    ``_auth`` call of :class:`~toystore.wire.admission.Admission`).

    :ivar handler: the object whose ``call_*`` and ``push_*`` methods serve
        incoming requests and pushes.
    """

    clock: IReactorTime
    connected: bool
    peer: str
    send: Callable[[dict[str, Any]], None]
    sendLine: Callable[[bytes], Any]
    log: Logger
    _auth: Callable[[dict[str, Any], Any], dict[str, bool]]

    def _init_dispatch(self, handler: object) -> None:
        """Serve with ``handler``."""
        self.handler = handler
        self._call_finished = getattr(handler, "call_finished", None)

    def _hook(self, name: str, *args: object) -> None:
        """Call the handler's hook ``name``, if it has one, logging what it raises."""
        hook = getattr(self.handler, name, None)
        if hook is not None:
            with self.log.failuresHandled("in {hook} of {handler!r}", hook=name, handler=self.handler):
                hook(*args)

    def _dispatch(self, message: dict[str, Any]) -> None:
        """Serve a request or push (a message with a ``type``)."""
        call_id = message.get("id")
        is_request = "id" in message
        if is_request and not usable_id(call_id):
            self.send({"id": None, **BadRequest(f"id must be an integer or string, not {call_id!r}").to_json()})
            return
        kind = message["type"]
        handler = None
        if isinstance(kind, str) and _TYPE.match(kind):
            prefix = "call_" if is_request else "push_"
            handler = getattr(self.handler, prefix + kind, None)
            if handler is None and kind == "ping" and is_request:
                handler = _pong
            if handler is None and kind == "auth" and is_request:
                handler = self._auth
        if handler is None:
            what = "request" if is_request else "push"
            self.send({"id": call_id, **BadRequest(f"unknown {what} type {kind!r}").to_json()})
            return
        started = self.clock.seconds()
        reply_id = call_id if is_request else None
        try:
            result = handler(message, self)
        except Exception:
            result = Failure()
        if isinstance(result, Deferred) or iscoroutine(result):
            ensureDeferred(result).addBoth(self._answer, reply_id, kind, is_request, started)
        else:  # the common case, a plain return: no Deferred in the way
            self._answer(result, reply_id, kind, is_request, started)

    def _answer(self, result: Any, call_id: Any, kind: str, is_request: bool, started: float) -> None:
        """Reply with a handler's ``result`` (to a request; a push gets none), then count it."""
        if isinstance(result, Failure):
            error = self._error(result, kind)
            self.send({"id": call_id, **error.to_json()})
            outcome = str(error.code)
        else:
            after = None
            if isinstance(result, Reply):
                result, after = result.data, result.after
            if is_request:
                try:
                    line = dumps({"id": call_id, "data": result})
                except (TypeError, ValueError):
                    self._answer(Failure(), call_id, kind, is_request, started)
                    return
                if self.connected:
                    self.sendLine(line)
            if after is not None:
                with self.log.failuresHandled("after replying to {kind!r}", kind=kind):
                    after()
            outcome = "ok"
        self._finished(kind, outcome, self.clock.seconds() - started)

    def _finished(self, kind: str, outcome: str, seconds: float) -> None:
        """Tell the handler's ``call_finished`` hook, if it has one, about a request or push served."""
        if self._call_finished is not None:
            try:
                self._call_finished(kind, outcome, seconds)
            except Exception:
                self.log.failure("in call_finished of {handler!r}", handler=self.handler)

    def _error(self, failure: Failure, kind: str) -> ApiError:
        """The error to reply with: an ApiError as it is, anything else a logged 500."""
        if failure.check(ApiError):
            return failure.value
        self.log.failure("while serving {kind!r} from {peer}", failure, kind=kind, peer=self.peer)
        return ApiError(f"internal error while serving {kind!r}", 500)
