"""Shared test doubles for the unit tests."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from toystore.config import WireConfig
from toystore.contract import int_field
from toystore.envelope import Conflict
from toystore.wire import Reply, WireProtocol

WIRE = WireConfig(call_timeout=5.0, max_line=4096, reconnect_initial=1.0, reconnect_max=8.0)


def connect(
    handler: object, clock: Clock | None = None, config: WireConfig = WIRE
) -> tuple[WireProtocol, StringTransport]:
    """A wire protocol connected to a StringTransport."""
    protocol = WireProtocol(handler, clock or Clock(), config)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def sent(transport: StringTransport) -> list[dict[str, Any]]:
    """Every message written to ``transport`` so far, decoded; the buffer is cleared."""
    lines = transport.value().split(b"\n")
    transport.clear()
    assert lines[-1] == b"", "a message was not newline-terminated"
    return [json.loads(line) for line in lines[:-1]]


def feed(protocol: WireProtocol, *messages: dict[str, Any]) -> None:
    """Deliver ``messages`` to ``protocol`` as lines."""
    protocol.dataReceived(b"".join(json.dumps(m).encode() + b"\n" for m in messages))


@implementer(IStreamClientEndpoint)
class ScriptedEndpoint:
    """
    A client endpoint whose connection attempts fail or succeed as the test
    says; successful ones are attached to StringTransports.
    """

    def __init__(self) -> None:
        self.attempts: list[Deferred[Any]] = []
        self.connected: list[tuple[Any, StringTransport]] = []
        self.refuse = False

    def connect(self, factory: Any) -> Deferred[Any]:
        if self.refuse:
            from twisted.internet.error import ConnectionRefusedError

            return fail(ConnectionRefusedError("refused"))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connected.append((protocol, transport))
        return succeed(protocol)


class Handler:
    """A handler that records what it serves."""

    def __init__(self) -> None:
        self.pushes: list[dict[str, Any]] = []
        self.waiting: dict[str, Deferred[Any]] = {}
        self.finished: list[tuple[str, str]] = []
        self.lost: list[WireProtocol] = []

    def call_add(self, message: dict[str, Any], connection: WireProtocol) -> dict[str, int]:
        return {"sum": int_field(message, "a", 0, 100) + int_field(message, "b", 0, 100)}

    def call_wait(self, message: dict[str, Any], connection: WireProtocol) -> Deferred[Any]:
        self.waiting[message["tag"]] = Deferred()
        return self.waiting[message["tag"]]

    async def call_echo(self, message: dict[str, Any], connection: WireProtocol) -> Any:
        return message["value"]

    def call_stream(self, message: dict[str, Any], connection: WireProtocol) -> Reply:
        return Reply({"streaming": True}, lambda: connection.push("note", n=1))

    def call_refuse(self, message: dict[str, Any], connection: WireProtocol) -> None:
        raise Conflict("no stock")

    def call_crash(self, message: dict[str, Any], connection: WireProtocol) -> None:
        raise ZeroDivisionError("oops")

    def call_unencodable(self, message: dict[str, Any], connection: WireProtocol) -> dict[str, float]:
        return {"price": float("nan")}  # not JSON

    def push_note(self, message: dict[str, Any], connection: WireProtocol) -> None:
        self.pushes.append(message)

    def call_finished(self, kind: str, outcome: str, seconds: float) -> None:
        self.finished.append((kind, outcome))

    def connection_lost(self, connection: WireProtocol, reason: Failure) -> None:
        self.lost.append(connection)
