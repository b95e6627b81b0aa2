"""
:class:`WireProtocol`, one JSON-lines connection, as server and client at
once, and :class:`WireFactory`, which serves a handler on a lines port.
The package's docstring (:mod:`toystore.wire`) describes the wire.
"""

from __future__ import annotations

import hmac
import itertools
import re
from inspect import iscoroutine
from typing import Any, Callable

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from ..config import WireConfig
from ..envelope import ApiError, BadRequest, Encoded, Unauthorized, Unavailable, dumps, loads

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


class NotConnected(Unavailable):
    """The peer could not be reached in time."""


class CallTimeout(Unavailable):
    """The peer did not answer a call in time."""


class ConnectionDropped(Unavailable):
    """The connection closed while the call was pending."""


def no_delay(transport: Any) -> None:
    """
    Turn Nagle's algorithm off on a TCP transport: small writes (a line, a
    reply's header then its body) go out at once instead of waiting up to
    40 ms for the peer's delayed acknowledgement.
    """
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)


def require(message: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """
    The field ``name`` of a request, checked to be of ``kind``.

    Booleans are not accepted where integers are expected.

    :raises BadRequest: naming the field, when it is missing or ill-typed.
    """
    if name not in message:
        raise BadRequest(f"field {name!r} is missing")
    value = message[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise BadRequest(f"field {name!r} must be of type {expected}, not {value!r}")
    return value


class WireProtocol(LineOnlyReceiver):
    """
    One JSON-lines connection, as server and client at once.

    :ivar handler: the object whose ``call_*`` and ``push_*`` methods serve
        incoming requests and pushes.
    :ivar trusted: whether the peer may send anything: at once on the
        connecting side (``client``) or without a secret, else once it has
        authenticated.
    """

    delimiter = b"\n"
    log = Logger()

    def __init__(self, handler: object, clock: IReactorTime, config: WireConfig, client: bool = False) -> None:
        self.handler = handler
        self.clock = clock
        self.call_timeout = config.call_timeout
        self.MAX_LENGTH = config.max_line
        self.connected = False
        self._secret = config.secret
        self.trusted = client or not config.secret
        self._admission: IDelayedCall | None = None
        self._ids = itertools.count(1)
        # id -> (its Deferred, deadline, type, timeout, encoded) of each call awaiting its reply
        self._pending: dict[int, tuple[Deferred[Any], float, str, float, bool]] = {}
        self._expiry: IDelayedCall | None = None  # one timer for every pending call's deadline
        self._call_finished = getattr(handler, "call_finished", None)
        self._stall_timeout: float | None = None
        self._stall: IDelayedCall | None = None

    # -- connection events ------------------------------------------------

    def connectionMade(self) -> None:
        self.connected = True
        no_delay(self.transport)
        # As a streaming producer we hear pauseProducing when the peer stops
        # reading and our write buffer fills: that is how stalls are seen.
        self.transport.registerProducer(self, True)
        if not self.trusted:
            self._admission = self.clock.callLater(self.call_timeout, self._refuse, None, "no auth call in time")
        self._hook("connection_made", self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.connected = False
        self._cancel_stall()
        if self._admission is not None and self._admission.active():
            self._admission.cancel()
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        pending, self._pending = self._pending, {}
        for d, *_ in pending.values():
            d.errback(ConnectionDropped(f"connection to {self.peer} closed with the call pending"))
        self._hook("connection_lost", self, reason)

    @property
    def connection(self) -> WireProtocol:
        """This connection itself, also when reached through a proxy (as ClientService hands it out)."""
        return self

    @property
    def peer(self) -> str:
        """The peer's address, for messages."""
        if self.transport is None:
            return "peer"
        address = self.transport.getPeer()
        host, port = getattr(address, "host", None), getattr(address, "port", None)
        return f"{host}:{port}" if host is not None else str(address)

    def _hook(self, name: str, *args: object) -> None:
        hook = getattr(self.handler, name, None)
        if hook is not None:
            with self.log.failuresHandled("in {hook} of {handler!r}", hook=name, handler=self.handler):
                hook(*args)

    # -- producer: stall detection -----------------------------------------

    def drop_if_stalled(self, timeout: float) -> None:
        """
        Close this connection if the peer stops reading for ``timeout``
        seconds (our write buffer stays full that long).
        """
        self._stall_timeout = timeout

    def pauseProducing(self) -> None:
        if self._stall_timeout is not None and self._stall is None:
            self._stall = self.clock.callLater(self._stall_timeout, self._stalled)

    def resumeProducing(self) -> None:
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

    # -- sending ------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Write one message as a line, unless the connection is gone."""
        if self.connected:
            self.sendLine(dumps(message))

    def push(self, type: str, **fields: Any) -> None:
        """Send a push: a message with a type and no id."""
        self.send({"type": type, **fields})

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
        self._expire_at(deadline)
        return d

    def _expire_at(self, deadline: float) -> None:
        """
        Make sure the timer runs by ``deadline``.  One timer serves every
        pending call: it runs at the earliest deadline known when it was
        set, fails the calls whose time is up, and sets itself again for the
        next deadline (:meth:`_expire`).  Calls answered in time leave
        nothing to cancel.
        """
        timer = self._expiry
        if timer is None:
            self._expiry = self.clock.callLater(max(0.0, deadline - self.clock.seconds()), self._expire)
        elif deadline < timer.getTime():
            timer.reset(max(0.0, deadline - self.clock.seconds()))

    def _expire(self) -> None:
        self._expiry = None
        now = self.clock.seconds() + 1e-6  # (a microsecond for rounding)
        late = [call_id for call_id, (_, deadline, *_) in self._pending.items() if deadline <= now]
        expired = [(call_id, self._pending.pop(call_id)) for call_id in late]
        if self._pending:
            self._expire_at(min(deadline for _, deadline, *_ in self._pending.values()))
        for _, (d, _, type, limit, _) in expired:
            d.errback(CallTimeout(f"{type!r} call to {self.peer} got no reply in {limit} s"))

    # -- authentication -------------------------------------------------------

    def authenticate(self) -> Deferred[Any]:
        """
        Give the peer the cluster secret, if there is one (an ``auth`` call,
        the first on a connection): a Deferred that fires once the peer
        trusts this connection, or fails with its ``Unauthorized`` error.
        """
        return self.call("auth", {"secret": self._secret}) if self._secret else succeed(None)

    def _auth(self, message: dict[str, Any], connection: WireProtocol) -> dict[str, bool]:
        """Serve an ``auth`` call: the secret must match (any will do on a port without one)."""
        given = message.get("secret")
        given = given.encode() if isinstance(given, str) else b""
        if self._secret and not hmac.compare_digest(given, self._secret.encode()):
            raise Unauthorized("wrong secret")
        return {"authenticated": True}

    def _admit(self, line: bytes) -> None:
        """The first line from a peer that must authenticate: a right ``auth`` call, or the end."""
        try:
            message = loads(line)
        except BadRequest:
            message = None
        call_id = message.get("id") if isinstance(message, dict) else None
        if not _usable_id(call_id):
            call_id = None
        try:
            if call_id is None or message.get("type") != "auth":
                raise Unauthorized("authenticate first: the first line must be an auth call with the cluster secret")
            reply = self._auth(message, self)
        except Unauthorized as e:
            self._refuse(call_id, e.message)
            return
        self.trusted = True
        self._admission.cancel()  # pending: nothing is read once _refuse has run
        self.send({"id": call_id, "data": reply})
        self._finished("auth", "ok", 0.0)

    def _refuse(self, call_id: Any, reason: str) -> None:
        if self._admission.active():  # not when it is what calls
            self._admission.cancel()
        self.log.warn("refusing {peer}: {reason}", peer=self.peer, reason=reason)
        self.send({"id": call_id, **Unauthorized(reason).to_json()})
        self.transport.loseConnection()
        self._finished("auth", "401", 0.0)

    # -- receiving ----------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        if not self.trusted:
            self._admit(line)
            return
        if line.startswith(b'{"data":') and self._encoded_reply(line):
            return
        try:
            message = loads(line)
            if not isinstance(message, dict):
                raise BadRequest("a message must be a JSON object")
        except BadRequest as e:
            self.send({"id": None, **e.to_json()})
            return
        if "type" in message:
            self._dispatch(message)
        elif "id" in message:
            self._reply_received(message)
        else:
            self.send({"id": None, **BadRequest("a message needs a type or an id").to_json()})

    def lineLengthExceeded(self, line: bytes) -> None:
        self.send({"id": None, **BadRequest(f"line longer than {self.MAX_LENGTH} bytes").to_json()})
        self.transport.loseConnection()

    def _dispatch(self, message: dict[str, Any]) -> None:
        call_id = message.get("id")
        is_request = "id" in message
        if is_request and not _usable_id(call_id):
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
        if failure.check(ApiError):
            return failure.value
        self.log.failure("while serving {kind!r} from {peer}", failure, kind=kind, peer=self.peer)
        return ApiError(f"internal error while serving {kind!r}", 500)

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


def _usable_id(value: Any) -> bool:
    """Whether a request's ``id`` is an integer or a string (not a boolean), as a reply can echo it."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _pong(message: dict[str, Any], connection: WireProtocol) -> dict[str, bool]:
    return {"pong": True}


class WireFactory(Factory):
    """
    Builds :class:`WireProtocol` connections that share one handler.

    :param client: True for connections this process makes: those do not ask
        the peer for the secret (they give it, with ``authenticate``).
    """

    noisy = False

    def __init__(self, handler: object, clock: IReactorTime, config: WireConfig, client: bool = False) -> None:
        self.handler = handler
        self.clock = clock
        self.config = config
        self.client = client

    def buildProtocol(self, addr: object) -> WireProtocol:
        return WireProtocol(self.handler, self.clock, self.config, self.client)
