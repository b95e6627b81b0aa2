"""
Open pages of the live dashboard, as load beside the benchmark: ``--feeds N``
opens N streams of ``GET /dashboard/events`` on the front-end, every one
read as it comes except the last, which never reads (a page left open on a
stalled machine).  The front-end must drop that one and serve buyers as
fast as without any.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol


class Feed(Protocol):
    """One open page's stream: counts the bytes and events it reads (or reads nothing, with ``reading`` off)."""

    def __init__(self, host: str, reading: bool = True) -> None:
        self.host = host
        self.reading = reading
        self.received = 0
        self.events = 0
        self.closed: Deferred[None] = Deferred()
        self.open = False

    def connectionMade(self) -> None:
        self.open = True
        self.transport.write(
            b"GET /dashboard/events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n" % self.host.encode()
        )
        if not self.reading:
            self.transport.pauseProducing()  # reads nothing more, ever: the kernel's buffers fill

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.events += data.count(b"\nevent: ") + data.startswith(b"event: ")

    def connectionLost(self, reason: Any) -> None:
        self.open = False
        self.closed.callback(None)


async def open_feeds(reactor: Any, url: str, count: int) -> list[Feed]:
    """``count`` streams of the dashboard at ``url``, the last of them not reading."""
    parts = urlsplit(url)
    feeds = []
    for n in range(count):
        feed = Feed(parts.netloc, reading=n < count - 1)
        await connectProtocol(TCP4ClientEndpoint(reactor, parts.hostname, parts.port or 80), feed)
        feeds.append(feed)
    return feeds


def close_feeds(feeds: list[Feed]) -> dict[str, Any]:
    """Close the streams; what they saw: events read, and whether the one not reading was dropped."""
    reading = [f for f in feeds if f.reading]
    stalled = [f for f in feeds if not f.reading]
    report = {
        "feeds": len(feeds),
        "events_read_per_feed": sorted(f.events for f in reading)[len(reading) // 2] if reading else 0,
        "still_open": sum(f.open for f in reading),
        "not_reading_dropped": [not f.open for f in stalled],
    }
    for feed in feeds:
        if feed.open:
            feed.transport.abortConnection()
    return report
