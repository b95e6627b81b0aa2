"""
A Server-Sent Events stream (``text/event-stream``) from a twisted.web
resource: :class:`EventStream`.

Each client that opens it gets a snapshot at once, then every event
published after that, until it leaves.  An event is framed once and the same
bytes are written to every client, so a hundred watchers cost a hundred
writes, not a hundred encodings.

A client that stops reading is dropped, as the catalog drops a feed
subscriber that stalls (:mod:`toystore.wire.stall`): each client is a push
producer registered with its request, so the transport pauses it once its
buffer is full; if it is still paused ``stall_timeout`` seconds later, its
connection is aborted.  Until then it holds at most that many seconds of
events.

While the stream is written the client sends nothing, so the channel's idle
timeout is reset at each write: a stream that is read is not idle.  A
comment line goes out every ``keepalive`` seconds when no event did, so that
a client (or a proxy) that vanished is noticed, and none takes the stream
for dead.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from .resource import JSONResource, write_not_allowed

#: How soon a browser reconnects after the stream ends, in milliseconds (the ``retry`` field).
RETRY_MS = 1000


def frame(event: str, data: bytes) -> bytes:
    """One event as the stream carries it: ``event:`` and ``data:`` lines and a blank line (``data`` has no newline)."""
    return b"event: %s\ndata: %s\n\n" % (event.encode("ascii"), data)


@implementer(IPushProducer)
class Watcher:
    """One client of the stream: its request, and whether its transport has paused it."""

    def __init__(self, stream: EventStream, request: Request) -> None:
        self.stream = stream
        self.request = request
        self.paused = False
        self.gone = False
        self._stalled: IDelayedCall | None = None

    def send(self, data: bytes) -> None:
        """Write ``data`` (it is buffered while the client does not read)."""
        if self.gone:
            return
        self.request.write(data)
        if not self.paused:
            self.request.channel.resetTimeout()

    # IPushProducer: the transport's word on the client's reading.

    def pauseProducing(self) -> None:
        self.paused = True
        if self._stalled is None and not self.gone:
            self._stalled = self.stream.clock.callLater(self.stream.stall_timeout, self.drop)

    def resumeProducing(self) -> None:
        self.paused = False
        if self._stalled is not None and self._stalled.active():
            self._stalled.cancel()
        self._stalled = None

    def stopProducing(self) -> None:
        self.ended()

    def drop(self) -> None:
        """The client has read nothing for ``stall_timeout`` seconds: cut it off."""
        self._stalled = None
        if self.gone:
            return
        self.stream.dropped += 1
        self.stream.log.info(
            "dropping a stream client that read nothing for {timeout} s", timeout=self.stream.stall_timeout
        )
        transport = self.request.channel.transport if self.request.channel is not None else None
        self.ended()
        if transport is not None:
            transport.abortConnection()

    def ended(self) -> None:
        """The client left, or was dropped: forget it."""
        if self.gone:
            return
        self.gone = True
        if self._stalled is not None and self._stalled.active():
            self._stalled.cancel()
        self._stalled = None
        self.stream.left(self)


class EventStream(JSONResource):
    """
    ``GET``: a ``text/event-stream`` that begins with the event
    ``snapshot()`` gives and goes on with every :meth:`publish`.

    :param snapshot: the first event for a new client: ``(event name, data)``.
    :param watched: told ``True`` when the first client arrives and
        ``False`` when the last one leaves, so that whoever publishes does
        nothing while nobody watches.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        snapshot: Callable[[], tuple[str, bytes]],
        watched: Callable[[bool], None] = lambda watching: None,
        stall_timeout: float = 5.0,
        keepalive: float = 15.0,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.stall_timeout = stall_timeout
        self.watchers: set[Watcher] = set()
        self.dropped = 0  # clients cut off for not reading
        self._snapshot = snapshot
        self._watched = watched
        self._sent = False  # whether anything was written since the last keepalive look
        self._keepalive = LoopingCall(self._keep_alive)
        self._keepalive.clock = clock
        self._keepalive_interval = keepalive

    def render(self, request: Request) -> bytes | int:
        if request.method != b"GET":
            return write_not_allowed(request, ["GET"])
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")  # a proxy in front must not hold events back
        if not self.watchers:  # the first: whoever publishes starts (and is current before the snapshot)
            self._watched(True)
            self._keepalive.start(self._keepalive_interval, now=False)
        watcher = Watcher(self, request)
        request.registerProducer(watcher, True)
        request.notifyFinish().addBoth(lambda _: watcher.ended())
        self.watchers.add(watcher)
        event, data = self._snapshot()
        watcher.send(b"retry: %d\n" % RETRY_MS + frame(event, data))
        return NOT_DONE_YET

    def publish(self, event: str, data: bytes) -> None:
        """Send one event to every client (``data``: one line, JSON say)."""
        framed = frame(event, data)
        for watcher in list(self.watchers):
            watcher.send(framed)
        self._sent = True

    def left(self, watcher: Watcher) -> None:
        """``watcher`` has gone (it left, or was dropped)."""
        self.watchers.discard(watcher)
        request = watcher.request
        if request.producer is watcher and request.channel is not None:
            request.unregisterProducer()
        if not self.watchers:
            if self._keepalive.running:
                self._keepalive.stop()
            self._watched(False)

    def close(self) -> None:
        """End every stream (the service is stopping)."""
        for watcher in list(self.watchers):
            request = watcher.request
            watcher.ended()
            if not request.finished and request.channel is not None:
                request.finish()

    def _keep_alive(self) -> None:
        if not self._sent:
            for watcher in list(self.watchers):
                watcher.send(b": keepalive\n\n")
        self._sent = False
