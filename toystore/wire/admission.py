"""
Admission to a connection: the cluster secret.

With a secret (``wire.secret``), the accepting side of a connection serves
nothing until the peer's first line, an ``auth`` call carrying the secret
(compared with ``hmac.compare_digest``), has succeeded; any other first line,
a wrong secret, or no line within ``wire.call_timeout`` is answered 401 and
the connection closed.  The connecting side is trusted at once and gives the
secret with :meth:`Admission.authenticate`.
"""

from __future__ import annotations

import hmac
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport
from twisted.logger import Logger

from ..contract import parse
from ..envelope import BadRequest, Unauthorized, loads
from .dispatch import usable_id


class Admission:
    """
    The secret's gate on a connection (a mixin of
    :class:`~toystore.wire.WireProtocol`, which gives it ``clock``,
    ``call_timeout``, ``peer``, ``transport``, ``call``, ``send``, ``log``
    and the ``_finished`` count of :class:`~toystore.wire.dispatch.Dispatch`).

    :ivar trusted: whether the peer may send anything: at once on the
        connecting side (``client``) or without a secret, else once it has
        authenticated.
    """

    clock: IReactorTime
    call_timeout: float
    peer: str
    transport: ITransport
    call: Callable[..., Deferred[Any]]
    send: Callable[[dict[str, Any]], None]
    log: Logger
    _finished: Callable[[str, str, float], None]

    def _init_admission(self, secret: str, client: bool) -> None:
        """Trust the peer at once on the connecting side or without a secret."""
        self._secret = secret
        self.trusted = client or not secret
        self._admission: IDelayedCall | None = None

    def _await_admission(self) -> None:
        """The connection is made: an untrusted peer has ``call_timeout`` seconds to authenticate."""
        if not self.trusted:
            self._admission = self.clock.callLater(self.call_timeout, self._refuse, None, "no auth call in time")

    def _end_admission(self) -> None:
        """The connection is gone: stop waiting for the peer to authenticate."""
        if self._admission is not None and self._admission.active():
            self._admission.cancel()

    def authenticate(self) -> Deferred[Any]:
        """
        Give the peer the cluster secret, if there is one (an ``auth`` call,
        the first on a connection): a Deferred that fires once the peer
        trusts this connection, or fails with its ``Unauthorized`` error.
        """
        return self.call("auth", {"secret": self._secret}) if self._secret else succeed(None)

    def _auth(self, message: dict[str, Any], connection: Any) -> dict[str, bool]:
        """Serve an ``auth`` call: the secret must match (any will do on a port without one)."""
        given = parse(message, "secret").encode()
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
        if not usable_id(call_id):
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
        """Answer 401 with ``reason`` and close the connection."""
        if self._admission.active():  # not when it is what calls
            self._admission.cancel()
        self.log.warn("refusing {peer}: {reason}", peer=self.peer, reason=reason)
        self.send({"id": call_id, **Unauthorized(reason).to_json()})
        self.transport.loseConnection()
        self._finished("auth", "401", 0.0)
