"""
:class:`WireProtocol`, one JSON-lines connection, as server and client at
once, and :class:`WireFactory`, which serves a handler on a lines port.
The package's docstring (:mod:`toystore.wire`) describes the wire.

A connection is composed of one mixin per concern, each in a module of its
own: :mod:`~toystore.wire.framing` (lines in and out),
:mod:`~toystore.wire.calls` (the calls it makes, and the connection's one
timer), :mod:`~toystore.wire.dispatch` (the requests and pushes it serves),
:mod:`~toystore.wire.admission` (the cluster secret),
:mod:`~toystore.wire.idle` (keepalive pings, and a peer that falls silent)
and :mod:`~toystore.wire.stall` (a peer that stops reading).  This module
ties them together: the connection's events, and where each line received
goes.
The mixins are plain classes, so a line costs the same method calls as it
would in one class.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from ..config import WireConfig
from ..envelope import BadRequest, loads
from .admission import Admission
from .calls import Calls
from .dispatch import Dispatch
from .framing import Framing, no_delay
from .idle import IdleWatch
from .stall import StallDetection


class WireProtocol(Admission, Dispatch, Calls, IdleWatch, StallDetection, Framing):
    """
    One JSON-lines connection, as server and client at once.

    :ivar handler: the object whose ``call_*`` and ``push_*`` methods serve
        incoming requests and pushes.
    :ivar trusted: whether the peer may send anything: at once on the
        connecting side (``client``) or without a secret, else once it has
        authenticated.
    """

    def __init__(self, handler: object, clock: IReactorTime, config: WireConfig, client: bool = False) -> None:
        self.clock = clock
        self.MAX_LENGTH = config.max_line
        self.connected = False
        self._init_dispatch(handler)
        self._init_calls(config.call_timeout)
        self._init_idle(config.keepalive, config.idle_timeout, pings=client)
        self._init_admission(config.secret, client)

    def connectionMade(self) -> None:
        self.connected = True
        no_delay(self.transport)
        self._watch_stalls()
        self._watch_idle()
        self._await_admission()
        self._hook("connection_made", self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.connected = False
        self._cancel_stall()
        self._end_admission()
        self._end_idle_watch()
        self._fail_pending()
        self._hook("connection_lost", self, reason)

    def dataReceived(self, data: bytes) -> None:
        self._heard = True  # for the idle watch: a flag is all a read costs it
        Framing.dataReceived(self, data)

    def sendLine(self, line: bytes) -> None:
        self._said = True  # for the idle watch
        self.transport.writeSequence((line, self.delimiter))

    def lineReceived(self, line: bytes) -> None:
        """
        Route a line: the first line of an untrusted peer to admission, a
        reply to the call it answers (an encoded one without decoding it),
        a request or push to the handler, anything else back as a 400.
        """
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


class WireFactory(Factory):
    """
    Builds :class:`WireProtocol` connections that share one handler.

    :param client: True for connections this process makes: those do not ask
        the peer for the secret (they give it, with ``authenticate``), and
        they send the keepalive pings (:mod:`~toystore.wire.idle`).
    """

    noisy = False

    def __init__(self, handler: object, clock: IReactorTime, config: WireConfig, client: bool = False) -> None:
        self.handler = handler
        self.clock = clock
        self.config = config
        self.client = client

    def buildProtocol(self, addr: object) -> WireProtocol:
        return WireProtocol(self.handler, self.clock, self.config, self.client)
