"""
The framing of a wire connection: one JSON object per ``\\n``-terminated line.

:class:`Framing` is the line protocol every :class:`~toystore.wire.WireProtocol`
is built on: Twisted's ``LineOnlyReceiver`` with ``\\n`` as delimiter and
``wire.max_line`` as the longest line, a line over that limit answered with
an error and the connection closed (its framing is lost), and the sending of
a message as one line.  :func:`no_delay` turns Nagle's algorithm off, for
wire connections and HTTP channels alike.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from ..envelope import BadRequest, dumps


def no_delay(transport: Any) -> None:
    """
    Turn Nagle's algorithm off on a TCP transport: small writes (a line, a
    reply's header then its body) go out at once instead of waiting up to
    40 ms for the peer's delayed acknowledgement.
    """
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)


class Framing(LineOnlyReceiver):
    """
    Lines in and out of one connection: a message is written as one line,
    and a line longer than ``MAX_LENGTH`` (set from ``wire.max_line``) ends
    the connection.

    :ivar connected: whether the connection is up; nothing is written once
        it is down.
    """

    delimiter = b"\n"
    log = Logger()
    connected = False

    def send(self, message: dict[str, Any]) -> None:
        """Write one message as a line, unless the connection is gone."""
        if self.connected:
            self.sendLine(dumps(message))

    def push(self, type: str, **fields: Any) -> None:
        """Send a push: a message with a type and no id."""
        self.send({"type": type, **fields})

    def lineLengthExceeded(self, line: bytes) -> None:
        self.send({"id": None, **BadRequest(f"line longer than {self.MAX_LENGTH} bytes").to_json()})
        self.transport.loseConnection()

    @property
    def connection(self) -> Framing:
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
