"""
In-memory wire connections for tests: the real framing and dispatch, no sockets.

As treq's ``StubTreq`` drives a real resource, this module connects real wire
endpoints to one another in memory, so that a test wires a real front-end to
a real catalog service and to real order replicas, and every message goes
through :class:`~toystore.wire.WireProtocol` on both sides: its framing, ids,
timeouts, error replies and handler dispatch.

- :class:`Network`: what a test serves (:meth:`Network.listen`), the
  connections made to it (each a :class:`Pipe`), and :meth:`Network.flush`,
  which delivers until nothing moves.  Nothing is delivered before: what a
  side writes waits in its transport.  No reactor, no threads; time is the
  test's ``task.Clock``.
- :class:`LoopbackClient` (:meth:`Network.client`): the stand-in for
  :class:`~toystore.wire.WireClient`, the connection a service holds to a
  peer and makes its calls through.
- :meth:`Network.endpoint`: a client endpoint, for code that builds its own
  ``WireClient`` (a follower's stream to its leader).

Faults: :meth:`Network.cut` takes a service off the network (its connections
drop, new ones are refused) until :meth:`Network.restore`;
:meth:`LoopbackClient.cut` does it to one client's link; :meth:`Pipe.hold`
and :meth:`LoopbackClient.hold` hold deliveries back (a peer that stopped
answering: calls on the connection time out, and once the clock has moved
``wire.idle_timeout`` on in steps of ``wire.keepalive`` (one long advance
is one look of the idle watch), each side closes the connection, as it
closes a half-open one).

::

    clock = Clock()
    network = Network(clock, config.wire)
    network.listen("catalog", CatalogService(config.catalog, clock, run_inline))
    catalog = network.client("catalog")
    d = catalog.call("query", {"name": "Tux"})
    network.flush()
    self.successResultOf(d)  # {"name": "Tux", ...}, through both protocols
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.error import (
    ConnectError,
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..config import WireConfig
from . import NotConnected, WireFactory, WireProtocol
from .client import prepare_connection

#: Rounds of delivery after which :meth:`Network.flush` gives up: the sides never stop talking.
MAX_ROUNDS = 100_000


class PipeTransport(StringTransport):
    """
    One end of a :class:`Pipe`: what its protocol writes waits here until
    the network delivers it.  ``loseConnection`` ends the connection once
    what was written has been delivered (and the end reads no more);
    ``abortConnection`` ends it at the next delivery, with nothing more
    delivered.  Writes after the end are dropped, as on a real transport.
    """

    def __init__(self, host: IPv4Address, peer: IPv4Address) -> None:
        super().__init__(hostAddress=host, peerAddress=peer)
        self.aborting = False
        self.no_delay = False

    def write(self, data: bytes) -> None:
        if self.connected:
            super().write(data)

    def writeSequence(self, data: Any) -> None:
        if self.connected:
            super().writeSequence(data)

    def abortConnection(self) -> None:
        self.aborting = True
        self.loseConnection()

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = bool(enabled)

    def getTcpNoDelay(self) -> bool:
        return self.no_delay


class Pipe:
    """
    One connection between two protocols.  What either side writes reaches
    the other's ``dataReceived`` when the pipe is pumped (:meth:`pump`;
    :meth:`Network.flush` pumps every pipe).

    :ivar client: the connecting side's protocol, as its factory built it.
    :ivar server: the accepting side's protocol.
    :ivar target: the name the client connected to.
    :ivar source: the name of the connecting side, when its endpoint gave one.
    :ivar held: whether deliveries are held back (:meth:`hold`).
    :ivar closed: whether the connection has ended.
    """

    def __init__(
        self,
        client: IProtocol,
        server: IProtocol,
        target: Hashable,
        near: IPv4Address,
        far: IPv4Address,
        source: Hashable = None,
    ):
        self.client = client
        self.server = server
        self.target = target
        self.source = source
        self.held = False
        self.closed = False
        self.client_transport = PipeTransport(near, far)
        self.server_transport = PipeTransport(far, near)

    def open(self) -> None:
        """Make the connection: the accepting side first, as a listening port does."""
        self.server.makeConnection(self.server_transport)
        self.client.makeConnection(self.client_transport)

    def hold(self) -> None:
        """Deliver nothing, either way, until :meth:`release`: a peer that stopped reading and answering."""
        self.held = True

    def release(self) -> None:
        """Deliver again, what was held back first, at the next pump."""
        self.held = False

    def drop(self) -> None:
        """End the connection now, as a network failure does: each side loses it, and nothing more is delivered."""
        self._end(ConnectionLost("the connection was cut"), ConnectionLost("the connection was cut"))

    def pump(self) -> bool:
        """
        Deliver what each side wrote to the other, once, and end the
        connection if a side closed it: whether anything happened.
        """
        if self.closed:
            return False
        near, far = self.client_transport, self.server_transport
        if near.aborting or far.aborting:
            self._end(
                ConnectionAborted() if near.aborting else ConnectionLost("the peer aborted the connection"),
                ConnectionAborted() if far.aborting else ConnectionLost("the peer aborted the connection"),
            )
            return True
        if self.held:
            return False
        moved = self._deliver(near, self.server, far)
        if not self.closed:
            moved = self._deliver(far, self.client, near) or moved
        if not self.closed and (near.disconnecting or far.disconnecting) and not near.value() and not far.value():
            self._end(ConnectionDone(), ConnectionDone())
            moved = True
        return moved

    @staticmethod
    def _deliver(source: PipeTransport, receiver: IProtocol, receiving: PipeTransport) -> bool:
        data = source.value()
        if not data:
            return False
        source.clear()
        if not receiving.disconnecting:  # a side that closed the connection reads no more
            receiver.dataReceived(data)
        return True

    def _end(self, client_reason: Exception, server_reason: Exception) -> None:
        if self.closed:
            return
        self.closed = True
        for transport in (self.client_transport, self.server_transport):
            transport.connected = False
            transport.clear()
        for transport, protocol, reason in (
            (self.client_transport, self.client, client_reason),
            (self.server_transport, self.server, server_reason),
        ):
            # As a real transport does: its producer is stopped, then its protocol told.
            producer, transport.producer = transport.producer, None
            if producer is not None:
                producer.stopProducing()
            protocol.connectionLost(Failure(reason))


@implementer(IStreamClientEndpoint)
class NetworkEndpoint:
    """
    A client endpoint to what serves ``name`` on a :class:`Network`: it
    connects at once, or fails with ``ConnectionRefusedError``.  ``source``
    names the side that connects (so that cutting it off cuts its own
    connections too).
    """

    def __init__(self, network: Network, name: Hashable, source: Hashable = None) -> None:
        self.network = network
        self.name = name
        self.source = source

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        try:
            pipe = self.network.connect(factory, self.name, self.source)
        except ConnectError:
            return fail()
        return succeed(pipe.client)


class Network:
    """
    Services served in memory, and the connections made to them.

    :param clock: the test's clock: every protocol's timers run on it, and
        :meth:`flush` runs the calls that are due.
    :param config: the wire knobs of every connection; with a secret, the
        accepting side asks for it, as a lines port does.
    :ivar pipes: the open connections, oldest first.
    """

    def __init__(self, clock: Clock, config: WireConfig) -> None:
        self.clock = clock
        self.config = config
        self.pipes: list[Pipe] = []
        self._served: dict[Hashable, IProtocolFactory] = {}
        self._addresses: dict[Hashable, IPv4Address] = {}
        self._cut: set[Hashable] = set()
        self._ports = itertools.count(40000)

    def _address(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", next(self._ports))

    def listen(self, name: Hashable, served: object) -> None:
        """
        Serve ``served`` as ``name`` (any hashable the test chooses): a
        handler, through a :class:`~toystore.wire.WireFactory` as a lines
        port serves it, or a protocol factory, as it is (a peer that
        misbehaves).  Listening again under a name replaces what was served
        (a restarted service); connections already made are left as they are.
        """
        factory = served if IProtocolFactory.providedBy(served) else WireFactory(served, self.clock, self.config)
        self._served[name] = factory
        self._addresses.setdefault(name, self._address())

    def connect(self, factory: IProtocolFactory, name: Hashable, source: Hashable = None) -> Pipe:
        """
        Connect a protocol built by ``factory`` to what serves ``name``
        (from ``source``, when the connecting side has a name).

        :return: the new connection, open on both sides.
        :raises ConnectionRefusedError: when nothing serves ``name``, or it or ``source`` is cut off.
        """
        served = self._served.get(name)
        if served is None or name in self._cut or (source is not None and source in self._cut):
            raise ConnectionRefusedError(string=f"{name!r} is {'cut off' if served else 'not served'}")
        near, far = self._address(), self._addresses[name]
        client = factory.buildProtocol(far)
        server = served.buildProtocol(near)
        if client is None or server is None:
            raise ConnectionRefusedError(string=f"a factory refused the connection to {name!r}")
        pipe = Pipe(client, server, name, near, far, source)
        self.pipes.append(pipe)
        pipe.open()
        return pipe

    def endpoint(self, name: Hashable, source: Hashable = None) -> NetworkEndpoint:
        """
        A client endpoint to ``name``, for code that makes its own connections
        (a real ``WireClient``), from ``source`` if it is served here too.
        """
        return NetworkEndpoint(self, name, source)

    def client(
        self,
        name: Hashable,
        handler: object = None,
        prepare: Callable[[WireProtocol], object] | None = None,
        label: str | None = None,
        config: WireConfig | None = None,
    ) -> LoopbackClient:
        """A started :class:`LoopbackClient` of ``name``, as a service's parent would have started its WireClient."""
        client = LoopbackClient(self, name, handler, prepare, label, config)
        client.startService()
        return client

    def to(self, name: Hashable) -> list[Pipe]:
        """The open connections to ``name``."""
        return [pipe for pipe in self.pipes if pipe.target == name and not pipe.closed]

    def drop(self, name: Hashable) -> None:
        """Drop every connection to ``name`` now, as when its process restarts; new ones may connect."""
        for pipe in self.to(name):
            pipe.drop()

    def cut(self, name: Hashable) -> None:
        """
        Take ``name`` off the network: the connections to it, and those it
        made through endpoints that name it as their source, drop now; new
        ones are refused until :meth:`restore`.
        """
        self._cut.add(name)
        self.drop(name)
        for pipe in self.pipes:
            if pipe.source == name and not pipe.closed:
                pipe.drop()

    def restore(self, name: Hashable) -> None:
        """Put ``name`` back on the network: connections to it may be made again."""
        self._cut.discard(name)

    def flush(self) -> bool:
        """
        Deliver until quiet: pump every connection, and run the clock's calls
        that are due now (work left for the end of a reactor turn), over and
        over until nothing moves.  Time does not pass: the test advances the
        clock.

        :return: whether anything was delivered or run.
        :raises RuntimeError: when the sides never stop (after :data:`MAX_ROUNDS`).
        """
        moved_any = False
        for _ in range(MAX_ROUNDS):
            moved = False
            for pipe in list(self.pipes):
                moved = pipe.pump() or moved
            self.pipes[:] = [pipe for pipe in self.pipes if not pipe.closed]
            now = self.clock.seconds()
            if any(call.getTime() <= now for call in self.clock.getDelayedCalls()):
                self.clock.advance(0)
                moved = True
            if not moved:
                return moved_any
            moved_any = True
        raise RuntimeError(f"the network was still busy after {MAX_ROUNDS} rounds of delivery")


class LoopbackClient(Service):
    """
    The stand-in for :class:`~toystore.wire.WireClient`: a service's
    connection to one peer on a :class:`Network`, with its ``call`` and
    ``connection`` and its failures (the peer's error, ``NotConnected``,
    ``CallTimeout``, ``ConnectionDropped``).

    Like a WireClient, it connects when started; authenticates each new
    connection when there is a secret; then runs ``prepare`` on it before
    any call may use it.  Unlike one, it waits out no backoff delay: after
    a drop it connects again on demand, at the next call (or at
    :meth:`restore`), and a peer it cannot reach fails the call with
    ``NotConnected`` at once.

    :param target: the name the peer is served under.
    :param handler: serves what the peer sends this side (pushes, requests).
    :param prepare: called with each new connection before any call may use it.
    :param label: the peer's name in messages (the target's, by default).
    :param config: this side's wire knobs, the network's by default (another
        secret, to see it refused).
    :ivar calls: every call made through this client, ``(type, fields)``,
        in order, answered or not.
    :ivar pipe: the connection last made, or None.
    """

    log = Logger()

    def __init__(
        self,
        network: Network,
        target: Hashable,
        handler: object = None,
        prepare: Callable[[WireProtocol], object] | None = None,
        label: str | None = None,
        config: WireConfig | None = None,
    ) -> None:
        self.network = network
        self.target = target
        self.name = label or str(target)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.pipe: Pipe | None = None
        self._config = config or network.config
        self._factory = WireFactory(handler, network.clock, self._config, client=True)
        self._prepare = prepare
        self._cut = False
        self._held = False
        self._current: WireProtocol | None = None  # the connection calls use, once prepared
        self._waiting: list[Deferred[WireProtocol]] = []  # for the attempt under way, if any

    @property
    def connected(self) -> bool:
        """Whether a prepared connection is up now (as :attr:`WireClient.connected`)."""
        return self._current is not None and self._current.connected and not self._cut

    @property
    def hearing(self) -> bool:
        """Whether a prepared connection is up now and its peer was heard lately (as :attr:`WireClient.hearing`)."""
        current = self._current
        return self.connected and current is not None and current.hearing

    def startService(self) -> None:
        super().startService()
        self._connect_now()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._current = None
        if self.pipe is not None:
            self.pipe.client_transport.loseConnection()
        return succeed(None)

    # -- faults ------------------------------------------------------------------

    def cut(self) -> None:
        """
        Cut this link: its connection drops now (calls pending on it fail
        with ``ConnectionDropped``), and calls fail with ``NotConnected``
        until :meth:`restore`.
        """
        self._cut = True
        self._current = None
        if self.pipe is not None:
            self.pipe.drop()

    def restore(self) -> None:
        """Mend the link and connect again now (``prepare`` runs), as a WireClient's next attempt would."""
        self._cut = False
        if self.running and not (self._current is not None and self._current.connected):
            self._connect_now()

    def hold(self) -> None:
        """
        Hold this link's deliveries back, on its connection and on any it
        makes, until :meth:`release`: a peer that stopped answering (calls
        time out with ``CallTimeout``; after ``wire.idle_timeout`` the
        connection is closed, and the next call connects again).
        """
        self._held = True
        if self.pipe is not None:
            self.pipe.hold()

    def release(self) -> None:
        """Deliver again, what was held back first, at the next flush."""
        self._held = False
        if self.pipe is not None:
            self.pipe.release()

    # -- calls ---------------------------------------------------------------------

    async def connection(self, timeout: float | None = None) -> WireProtocol:
        """
        The current connection, or the next one made within ``timeout``.

        :raises NotConnected: when the peer cannot be reached, or time runs out.
        """
        current = self._current
        if current is not None and current.connected:
            return current
        limit = self._config.call_timeout if timeout is None else timeout
        try:
            return await self._next_connection().addTimeout(limit, self.network.clock)
        except TimeoutError:
            raise NotConnected(f"no connection to {self.name} within {limit} s") from None

    def call(
        self, type: str, fields: dict[str, Any] | None = None, timeout: float | None = None, encoded: bool = False
    ) -> Deferred[Any]:
        """
        Make a call over the connection, connecting first if need be: a
        Deferred of the reply's data, or of the failures a WireClient's
        call has (the peer's error, ``NotConnected``, ``CallTimeout``,
        ``ConnectionDropped``).
        """
        self.calls.append((type, dict(fields or {})))
        return Deferred.fromCoroutine(self._call(type, fields, timeout, encoded))

    async def _call(self, type: str, fields: dict[str, Any] | None, timeout: float | None, encoded: bool) -> Any:
        connection = await self.connection(timeout)
        return await connection.call(type, fields, timeout, encoded)

    # -- connecting ------------------------------------------------------------------

    def _connect_now(self) -> None:
        """Connect in the background; a failure waits for the next call."""
        self._next_connection().addErrback(
            lambda f: self.log.info("no connection to {name} yet: {error}", name=self.name, error=f.getErrorMessage())
        )

    def _next_connection(self) -> Deferred[WireProtocol]:
        """A Deferred of the connection being made, starting an attempt if none is under way."""
        waiter: Deferred[WireProtocol] = Deferred()
        self._waiting.append(waiter)
        if len(self._waiting) == 1:
            Deferred.fromCoroutine(self._connect()).addBoth(self._attempt_done)
        return waiter

    def _attempt_done(self, result: WireProtocol | Failure) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if waiter.called:  # given up on (timed out)
                continue
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _connect(self) -> WireProtocol:
        if not self.running:
            raise NotConnected(f"connection to {self.name} is stopped")
        if self._cut:
            raise NotConnected(f"cannot connect to {self.name}: the link is cut")
        try:
            pipe = self.network.connect(self._factory, self.target)
        except ConnectError as e:
            raise NotConnected(f"cannot connect to {self.name}: {e}") from None
        self.pipe = pipe
        if self._held:
            pipe.hold()
        connection: WireProtocol = pipe.client  # type: ignore[assignment]
        try:
            await prepare_connection(connection, self.name, self._prepare)
            if not self.running:
                raise NotConnected(f"connection to {self.name} is stopped")
        except BaseException:
            pipe.client_transport.loseConnection()
            raise
        if not connection.connected:
            raise NotConnected(f"the connection to {self.name} dropped while it was prepared")
        self._current = connection
        return connection
