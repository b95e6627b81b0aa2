"""
The ceiling of ``python -m scripts.bench``: a bare twisted.web server in one
process that answers every request with the same bytes, as fast as this
machine lets twisted.web go.

It serves one leaf Resource that sets the headers the front-end sets on a
JSON reply (``content-type``, ``cache-control``) and returns the body read
from ``--body-file``; Twisted adds the rest (``content-length``, ``date``,
``server``) as it does for the front-end.  Like the front-end, it runs on the
default reactor in one thread, turns Nagle's algorithm off, and keeps no
access log.  Nothing else happens per request.

It listens on ``--port`` (0: any free port) on 127.0.0.1, prints one line::

    bench-ceiling ready: {"http": 40123}

and stops when its standard input closes (its parent is gone) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from twisted.internet import reactor
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


class Same(Resource):
    """Every request: the same JSON bytes."""

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def render(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return self.body


class NoDelayChannel(HTTPChannel):
    """An HTTP channel with Nagle's algorithm off, as the front-end's."""

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        super().connectionMade()


class QuietSite(Site):
    """A Site without an access log, as the front-end's."""

    protocol = NoDelayChannel

    def log(self, request: Request) -> None:
        pass


def watch_stdin() -> None:
    """Stop the reactor once standard input reaches its end."""

    def wait() -> None:
        try:
            while sys.stdin.buffer.read(65536):
                pass
        except (OSError, ValueError):
            pass
        reactor.callFromThread(reactor.stop)

    threading.Thread(target=wait, name="stdin-watch", daemon=True).start()


def main(argv: list[str]) -> None:
    """Listen, say ready, serve until told to stop."""
    parser = argparse.ArgumentParser(description="A bare twisted.web server that answers the same bytes.")
    parser.add_argument("--body-file", required=True, help="the bytes of every reply")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    args = parser.parse_args(argv)
    with open(args.body_file, "rb") as f:
        body = f.read()
    port: Any = reactor.listenTCP(args.port, QuietSite(Same(body)), interface="127.0.0.1")
    print(f"bench-ceiling ready: {json.dumps({'http': port.getHost().port})}", flush=True)
    watch_stdin()
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
