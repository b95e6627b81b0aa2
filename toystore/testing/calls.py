"""
What the harness asks a running store, and the one way it waits.

Each question makes its own connection: a wire connection to a lines port
(:func:`connect`, :func:`replica_status`) or an HTTP request (:func:`health`,
:func:`wait_for_leader`).  Polls wait with :func:`sleep`, the one timed pause
of the harness, the fault suite and the scripts, for where no signal says
when to look again.
"""

from __future__ import annotations

from typing import Any

import treq
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.task import deferLater

from ..config import WireConfig, load
from ..wire import WireFactory, WireProtocol


def sleep(reactor: Any, seconds: float) -> Deferred[None]:
    """A Deferred that fires after ``seconds`` of reactor time (at once if not positive; never ``time.sleep``)."""
    return deferLater(reactor, max(0.0, seconds), lambda: None)


async def connect(reactor: Any, port: int, wire: WireConfig | None = None, host: str = "127.0.0.1") -> WireProtocol:
    """
    A wire connection to the lines port ``host:port``, authenticated with
    ``wire.secret`` when there is one (``wire`` defaults to the packaged
    file's, with ``TOYSTORE_SECRET`` applied).
    """
    endpoint = clientFromString(reactor, f"tcp:host={host}:port={port}")
    connection = await endpoint.connect(WireFactory(None, reactor, wire or load().wire, client=True))
    try:
        await connection.authenticate()
    except Exception:
        connection.transport.loseConnection()
        raise
    return connection


async def replica_status(
    reactor: Any, port: int, timeout: float = 1.0, wire: WireConfig | None = None, host: str = "127.0.0.1"
) -> dict[str, Any] | None:
    """
    The ``status`` of the replica on lines port ``host:port``, over a
    connection of its own, or None if it cannot be reached or does not answer
    within ``timeout`` seconds (down, paused, or cut off: to a poller, all
    alike).
    """
    try:
        connection = await connect(reactor, port, wire, host)
    except Exception:
        return None
    try:
        return await connection.call("status", timeout=timeout)
    except Exception:
        return None
    finally:
        connection.transport.loseConnection()


async def health(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """What ``GET <url>/health`` says (every process serves it), or None if it does not answer."""
    try:
        response = await treq.get(f"{url}/health", timeout=timeout, persistent=False)
        return (await response.json())["data"]
    except Exception:
        return None


async def wait_for_leader(reactor: Any, url: str, timeout: float = 30.0, leader: int | None = None) -> dict[str, int]:
    """``GET /leader`` of the front-end at ``url`` until it names one (``leader``, if given, served directly)."""
    deadline = reactor.seconds() + timeout
    last: Any = None
    while reactor.seconds() < deadline:
        try:
            response = await treq.get(f"{url}/leader", timeout=2.0, persistent=False)
            last = await response.json()
            if response.code == 200 and (leader is None or last["data"]["via"] == last["data"]["leader"] == leader):
                return last["data"]
        except Exception as e:  # not up yet, or busy: look again
            last = f"{type(e).__name__}: {e}"
        await sleep(reactor, 0.05)
    raise TimeoutError(
        f"no leader{'' if leader is None else f' {leader}'} named within {timeout} s (last answer: {last})"
    )
