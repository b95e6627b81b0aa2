"""
A bare forwarder for ``python -m scripts.bench``: the least a front-end that
asks another process can do, measured beside the ceiling.

Two processes of this script: a back end (``--role back``) that answers each
JSON line ``{"id": N, "type": "query", "name": ...}`` with the line
``{"data": <the product>, "id": N}``, and a front (``--role front``): a
twisted.web server, set up as the ceiling's (``ceiling.py``), whose one leaf
Resource sends each request to the back end as a JSON line over one
persistent connection, decodes the answer and writes its ``data`` as the
reply's body.  No envelope checks, metrics, deadlines, cache or failover:
what is left is the cost of the second hop, and of JSON on both sides.  The
front-end's uncached product queries and order queries do that hop and
everything the design asks for around it; this is the ceiling for them.

Each process listens on 127.0.0.1, prints one line::

    bench-forwarder ready: {"http": 40123}      (or {"lines": 40124} for the back end)

and stops when its standard input closes (its parent is gone) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from scripts.bench.ceiling import QuietSite, watch_stdin


def dumps(value: Any) -> bytes:
    """JSON as the store writes it (sorted keys, no spaces), so that replies are the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Back(LineOnlyReceiver):
    """The back end: one reply line per request line, from memory."""

    delimiter = b"\n"

    def __init__(self, data: Any) -> None:
        self.data = data

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)

    def lineReceived(self, line: bytes) -> None:
        call = json.loads(line)
        self.sendLine(dumps({"data": self.data, "id": call["id"]}))


class Link(LineOnlyReceiver):
    """The front's one connection to the back end: requests waiting by id."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.waiting: dict[int, Request] = {}
        self.next_id = 0

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)

    def ask(self, name: str, request: Request) -> None:
        self.next_id += 1
        self.waiting[self.next_id] = request
        self.sendLine(dumps({"id": self.next_id, "type": "query", "name": name}))

    def lineReceived(self, line: bytes) -> None:
        reply = json.loads(line)
        request = self.waiting.pop(reply["id"])
        body = dumps({"data": reply["data"]})
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        try:
            request.finish()
        except RuntimeError:
            pass  # the client left: nobody to answer


class Forward(Resource):
    """Every request: asked of the back end over the link, answered with what it says."""

    isLeaf = True

    def __init__(self, link: Link) -> None:
        super().__init__()
        self.link = link

    def render(self, request: Request) -> Any:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        self.link.ask(request.path.rsplit(b"/", 1)[-1].decode(), request)
        return NOT_DONE_YET


def main(argv: list[str]) -> None:
    """Listen (and, the front, connect), say ready, serve until told to stop."""
    parser = argparse.ArgumentParser(description="A bare forwarder: a twisted.web front and a JSON-lines back end.")
    parser.add_argument("--role", choices=("front", "back"), required=True)
    parser.add_argument("--body-file", help="back: the reply whose data it answers (a product reply)")
    parser.add_argument("--back-port", type=int, help="front: the back end's port on 127.0.0.1")
    args = parser.parse_args(argv)
    if args.role == "back":
        with open(args.body_file, "rb") as f:
            data = json.loads(f.read())["data"]
        port: Any = reactor.listenTCP(0, Factory.forProtocol(lambda: Back(data)), interface="127.0.0.1")
        print(f"bench-forwarder ready: {json.dumps({'lines': port.getHost().port})}", flush=True)
    else:
        link = Link()

        def listen(_: Any) -> None:
            port = reactor.listenTCP(0, QuietSite(Forward(link)), interface="127.0.0.1")
            print(f"bench-forwarder ready: {json.dumps({'http': port.getHost().port})}", flush=True)

        connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", args.back_port), link).addCallback(listen)
    watch_stdin()
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
