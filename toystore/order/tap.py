"""
``twistd -n toystore-order --id N``: one order replica.

Listens on its lines port (``8300+N``) for the wire calls of
:mod:`toystore.wire` and on its operator port (``8200+N``) for ``GET
/health``, ``GET /metrics`` and ``GET /orders/<n>``.

The replica has two private threads: one writes its log (every batch ends
in an fsync) and looks keys up in its key store, the other reads back
records its log no longer holds in memory (the appends of a follower far
behind).  Reads use a descriptor of their own, so they
need not wait behind the fsyncs.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.internet.endpoints import clientFromString
from twisted.python import usage

from ..config import ConfigError, ServiceOptions, check_internal_listen
from ..runtime import Listener, ProcessService, ThreadPoolService
from ..web import make_site
from ..wire import WireClient, WireFactory
from .replica import Replica
from .resources import replica_root

COMMAND = "toystore-order"


class Options(ServiceOptions):
    """An order replica's command line."""

    command = COMMAND
    synopsis = "--id N [--config FILE] [options]"
    longdesc = "Run one toystore order replica: a durable, replicated order log."

    optParameters = ServiceOptions.optParameters + [
        ["id", "i", None, "This replica's id, one of order.replicas (required)."],
        ["data-dir", "d", None, "Directory of this replica's log. [default: order.data_dir]"],
        ["lines", None, None, "Endpoint of the lines port. [default: the replica's lines]"],
        ["http", None, None, "Endpoint of the operator HTTP port. [default: the replica's http]"],
    ]
    optFlags = ServiceOptions.optFlags + [
        [
            "replaces",
            None,
            "This replica starts on a new or emptied disk in a store that has run before "
            "(a lost disk replaced): it does not vote until it has caught up from the leader.",
        ],
    ]

    def postOptions(self) -> None:
        if self["id"] is None:
            raise usage.UsageError("--id is required")
        try:
            self["id"] = int(self["id"])
        except ValueError:
            raise usage.UsageError(f"--id must be an integer, not {self['id']!r}") from None
        super().postOptions()
        try:
            me = self.config.order.replica(self["id"])
            if self["lines"]:
                check_internal_listen("--lines", self["lines"], self.config.wire)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        self.me = me


def makeService(options: Options, reactor: Any = None) -> IService:
    """Assemble an order replica from its parsed command line."""
    if reactor is None:
        from twisted.internet import reactor
    config = options.config
    me = options.me
    replicas = {r.id: r for r in config.order.replicas}

    def connect(replica_id: int) -> Any:
        return clientFromString(reactor, replicas[replica_id].peer_address)

    top = ProcessService(reactor, COMMAND, options["exit-on-stdin-close"])
    # Before the replica, so stopped after it: it drains its writes and closes its reader in them.
    write_thread = ThreadPoolService(reactor, f"order-{me.id}-log", size=1)
    write_thread.setServiceParent(top)
    # One thread: the reader's descriptor is closed in it, after any read queued before.
    read_thread = ThreadPoolService(reactor, f"order-{me.id}-reads", size=1)
    read_thread.setServiceParent(top)
    catalog = WireClient(clientFromString(reactor, config.catalog.connect), reactor, config.wire, name="catalog")
    catalog.setServiceParent(top)
    if options["data-dir"]:
        config = _with_data_dir(config, options["data-dir"])
    replica = Replica(
        me,
        config,
        reactor,
        write_thread.run,
        catalog,
        connect,
        read_in_thread=read_thread.run,
        replaces=options["replaces"],
    )
    replica.setServiceParent(top)
    lines = options["lines"] or me.lines
    http = options["http"] or me.http
    Listener(reactor, "lines", lines, WireFactory(replica, reactor, config.wire)).setServiceParent(top)
    site = make_site(replica_root(replica), timeouts=config.frontend, reactor=reactor)
    Listener(reactor, "http", http, site).setServiceParent(top)
    return top


def _with_data_dir(config: Any, data_dir: str) -> Any:
    from dataclasses import replace

    return replace(config, order=replace(config.order, data_dir=data_dir))
