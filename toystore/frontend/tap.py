"""
``twistd -n toystore-frontend``: the public front-end.

Listens on ``frontend.http`` (8000) for the public REST API; holds wire
connections to the catalog (queries, and the feed that invalidates the
cache) and to every order replica (orders go to the leader the replicas
elected, which it finds: :mod:`toystore.frontend.discovery`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.application.service import IService
from twisted.internet.endpoints import clientFromString

from ..config import ServiceOptions
from ..runtime import Listener, ProcessService
from ..web import make_site
from ..wire import WireClient
from .dashboard import Dashboard
from .resources import frontend_root
from .service import FrontendService

COMMAND = "toystore-frontend"


class Options(ServiceOptions):
    """The front-end's command line."""

    command = COMMAND
    synopsis = "[--config FILE] [options]"
    longdesc = "Run the toystore front-end: the public REST API, its cache, and leader failover."

    optFlags = ServiceOptions.optFlags + [["no-cache", None, "Turn the product cache off."]]
    optParameters = ServiceOptions.optParameters + [
        ["http", None, None, "Endpoint of the public HTTP port. [default: frontend.http]"],
        ["cache-size", None, None, "Product replies kept in the cache. [default: frontend.cache_size]"],
    ]
    overrides = {
        "http": ("frontend", "http", str),
        "cache-size": ("frontend", "cache_size", int),
    }

    def postOptions(self) -> None:
        super().postOptions()
        if self["no-cache"]:
            self.config = replace(self.config, frontend=replace(self.config.frontend, cache_size=0))


def makeService(options: Options, reactor: Any = None) -> IService:
    """Assemble the front-end from its parsed command line."""
    if reactor is None:
        from twisted.internet import reactor
    config = options.config
    top = ProcessService(reactor, COMMAND, options["exit-on-stdin-close"])
    replicas = {
        r.id: WireClient(clientFromString(reactor, r.connect), reactor, config.wire, name=f"replica {r.id}")
        for r in config.order.replicas
    }
    frontend = FrontendService(config, reactor, None, replicas)
    # The catalog connection carries the feed: the front-end handles its pushes
    # and subscribes (clearing the cache) on every new connection.
    catalog = WireClient(
        clientFromString(reactor, config.catalog.connect),
        reactor,
        config.wire,
        handler=frontend,
        prepare=frontend.subscribe,
        name="catalog",
    )
    frontend.catalog = catalog
    for client in (catalog, *replicas.values()):
        client.setServiceParent(top)
    frontend.setServiceParent(top)
    dashboard = Dashboard(frontend, reactor, config.catalog.stall_timeout)
    dashboard.setServiceParent(top)
    site = make_site(frontend_root(frontend, dashboard.resource()), config.frontend.max_body, config.frontend, reactor)
    Listener(reactor, "http", config.frontend.http, site).setServiceParent(top)
    return top
