"""
:class:`WireClient`: a persistent connection to one peer's lines port,
reconnected with backoff, through which a service makes its calls.

Twisted's ``ClientService`` keeps the connection.  A new connection is
authenticated and prepared (``prepare``: a subscription, a follower's sync)
here, once ``ClientService`` holds it as connected, not in its
``prepareConnection`` hook: a connection lost while that hook's Deferred is
pending reaches a state machine with no transition for it (Twisted 26.10
raises ``NoTransition`` from ``connectionLost``), and a client stopped then
cancels the hook but leaves the connection open.  Held as connected, a
drop during preparation is an ordinary drop (reconnected with backoff) and a
stop closes the connection.

Every connection attempt gives up after ``wire.connect_timeout`` seconds
(:class:`TimedEndpoint`), whatever the endpoint: a peer whose SYNs are
dropped would otherwise hold it for Twisted's default of 30 s (or for ever,
with an endpoint that sets none), during which ``ClientService`` makes no
other attempt.  A timed-out attempt is a failed one: it is retried after
the backoff delay.  A connection that falls silent later is the idle
watch's (:mod:`~toystore.wire.idle`): it is closed, and connected again.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, maybeDeferred
from twisted.internet.error import ConnectError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..config import WireConfig
from ..envelope import Unauthorized
from .calls import NotConnected
from .protocol import WireFactory, WireProtocol


@implementer(IStreamClientEndpoint)
class TimedEndpoint:
    """
    An endpoint whose connection attempts are cancelled after ``timeout``
    seconds and then fail with Twisted's ``error.TimeoutError`` (a
    ``ConnectError``, as an attempt that times out on its own fails).  It
    wraps any endpoint (TCP, TLS, UNIX, one a test makes); cancelling the
    attempt stops the connecting socket.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, clock: IReactorTime, timeout: float) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.timeout = timeout

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        attempt: Deferred[IProtocol] = self.endpoint.connect(factory)
        return attempt.addTimeout(self.timeout, self.clock, onTimeoutCancel=_timed_out)


def _timed_out(result: object, timeout: float) -> object:
    """An attempt cancelled for its timeout: its failure says so (a success that raced the timeout stands)."""
    if isinstance(result, Failure):
        return Failure(ConnectTimeout(string=f"no connection within {timeout} s"))
    return result


class WireClient(Service):
    """
    A persistent connection to one peer's lines port, reconnected with
    exponential backoff whenever it drops.

    :param endpoint: the peer, as an endpoint; each attempt through it is
        given ``wire.connect_timeout`` seconds.
    :param handler: serves the pushes (and requests) the peer sends us.
    :param prepare: called with each new connection before any call may use
        it (for example to subscribe); it may return a Deferred.  It runs
        once the connection has authenticated (when there is a secret).
    """

    log = Logger()

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        config: WireConfig,
        handler: object = None,
        prepare: Callable[[WireProtocol], object] | None = None,
        name: str = "peer",
        jitter: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self._clock = clock
        self._timeout = config.call_timeout
        # Twisted's default jitter adds up to a whole second to every delay; keep it
        # within the first delay, so reconnect_initial means what it says.
        spread = jitter or (lambda: random.uniform(0, config.reconnect_initial))
        policy = backoffPolicy(config.reconnect_initial, config.reconnect_max, jitter=spread)
        self._prepare = prepare
        self._current: WireProtocol | None = None  # the connection calls use, once prepared
        # Preparations failed in a row.  ClientService counts a connection made as a success, so
        # these are added to its count of failed attempts: a peer that keeps refusing is backed off.
        self._failed_preparations = 0
        # connection -> (its preparation, the callers waiting for it to end), while it runs
        self._preparing: dict[WireProtocol, tuple[Deferred[None], list[Deferred[WireProtocol]]]] = {}
        self._service = ClientService(
            TimedEndpoint(endpoint, clock, config.connect_timeout),
            WireFactory(handler, clock, config, client=True),
            retryPolicy=lambda attempt: policy(attempt + self._failed_preparations),
            clock=clock,
            prepareConnection=lambda proxy: self._begin(proxy.connection),
        )

    def _begin(self, connection: WireProtocol) -> None:
        """
        A new connection: prepare it in the background (see the module's
        docstring for why ``ClientService`` does not wait for that).
        """
        preparation = Deferred.fromCoroutine(prepare_connection(connection, self.name, self._prepare))
        self._preparing[connection] = (preparation, [])
        preparation.addBoth(self._prepared, connection)

    def _prepared(self, result: None | Failure, connection: WireProtocol) -> None:
        """
        A connection's preparation ended: it serves calls from now on, or,
        having failed (or ended with the connection gone or the client
        stopped), it is closed and ``ClientService`` connects again after
        its backoff delay.  Either way the callers waiting for it hear.
        """
        _, waiting = self._preparing.pop(connection, (None, []))
        if result is None and not (connection.connected and self.running):
            result = Failure(NotConnected(f"connection to {self.name} closed while it was being prepared"))
        if isinstance(result, Failure):
            if self.running:
                self._failed_preparations += 1
            if connection.connected:
                connection.transport.loseConnection()
            for d in waiting:
                d.errback(result)
            return
        self._failed_preparations = 0
        self._current = connection
        for d in waiting:
            d.callback(connection)

    def startService(self) -> None:
        super().startService()
        self._service.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._current = None
        for preparation, _ in list(self._preparing.values()):
            preparation.cancel()
        return self._service.stopService()

    @property
    def current(self) -> WireProtocol | None:
        """The prepared connection, if one is up now (for pushes that are dropped rather than waited for)."""
        current = self._current
        return current if current is not None and current.connected else None

    @property
    def connected(self) -> bool:
        """Whether a prepared connection is up now."""
        return self.current is not None

    @property
    def hearing(self) -> bool:
        """Whether a prepared connection is up now and its peer was heard lately (:attr:`IdleWatch.hearing`)."""
        current = self.current
        return current is not None and current.hearing

    async def connection(self, timeout: float | None = None) -> WireProtocol:
        """
        The current connection, or the next one made within ``timeout``.

        :raises NotConnected: when the next attempt fails or time runs out.
        """
        current = self._current
        if current is not None and current.connected:
            return current
        limit = self._timeout if timeout is None else timeout
        waiting = Deferred.fromCoroutine(self._next_prepared())
        try:
            return await waiting.addTimeout(limit, self._clock)
        except TimeoutError:
            raise NotConnected(f"no connection to {self.name} within {limit} s") from None
        except CancelledError:
            raise NotConnected(f"connection to {self.name} is stopped") from None
        except ConnectError as e:
            raise NotConnected(f"cannot connect to {self.name}: {e}") from None

    async def _next_prepared(self) -> WireProtocol:
        """The next connection made, once it is prepared; or its failure, or the attempt's."""
        # .connection: the protocol itself, whether ClientService hands it out bare or proxied
        connection: WireProtocol = (await self._service.whenConnected(failAfterFailures=1)).connection
        entry = self._preparing.get(connection)
        if entry is None:  # prepared already, or failed and closed
            if connection is self._current and connection.connected:
                return connection
            raise NotConnected(f"connection to {self.name} closed while it was being prepared")
        prepared: Deferred[WireProtocol] = Deferred()
        entry[1].append(prepared)
        return await prepared

    def call(
        self, type: str, fields: dict[str, Any] | None = None, timeout: float | None = None, encoded: bool = False
    ) -> Deferred[Any]:
        """
        Make a call over the connection (waiting for one, if need be).

        :param encoded: see :meth:`WireProtocol.call`.
        :return: a Deferred of the reply's ``data``.  It fails with the
            peer's error, or an :class:`Unavailable` one when the peer
            cannot be reached, does not answer in time, or the connection
            drops.
        """
        current = self._current
        if current is not None and current.connected:
            # The common case: straight onto the connection, with no waiting for one.
            return current.call(type, fields, timeout, encoded)
        return Deferred.fromCoroutine(self._call_when_connected(type, fields, timeout, encoded))

    async def _call_when_connected(
        self, type: str, fields: dict[str, Any] | None, timeout: float | None, encoded: bool
    ) -> Any:
        connection = await self.connection(timeout)
        return await connection.call(type, fields, timeout, encoded)


async def prepare_connection(
    connection: WireProtocol, name: str, prepare: Callable[[WireProtocol], object] | None
) -> None:
    """
    What a client does with a new connection before any call may use it:
    give the cluster secret (when there is one), then run ``prepare``.

    :raises NotConnected: when the peer ``name`` refuses the secret.
    """
    try:
        await connection.authenticate()
    except Unauthorized as e:  # the peer closes the connection
        WireClient.log.error("{name} refuses this process's cluster secret: {error}", name=name, error=e.message)
        raise NotConnected(f"{name} refuses this process's cluster secret ({e.message})") from None
    if prepare is not None:
        await maybeDeferred(prepare, connection)
