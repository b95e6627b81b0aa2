"""
``twistd -n toystore-catalog``: the catalog process.

Listens on the lines port (``catalog.lines``, 8101) for the wire calls of
:mod:`toystore.wire` and on the operator port (``catalog.http``, 8100) for
``GET /health`` and ``GET /metrics``.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService

from ..config import ServiceOptions
from ..runtime import Listener, ProcessService, ThreadPoolService
from ..web import make_site, operator_root
from ..wire import WireFactory
from .service import CatalogService

COMMAND = "toystore-catalog"


class Options(ServiceOptions):
    """The catalog's command line."""

    command = COMMAND
    synopsis = "[--config FILE] [options]"
    longdesc = "Run the toystore catalog: stock in SQLite, buys, restocks and the invalidation feed."

    optParameters = ServiceOptions.optParameters + [
        ["data-dir", "d", None, "Directory of the catalog's database. [default: catalog.data_dir]"],
        ["lines", None, None, "Endpoint of the lines port. [default: catalog.lines]"],
        ["http", None, None, "Endpoint of the operator HTTP port. [default: catalog.http]"],
        ["initial-stock", None, None, "Stock of every toy in a new database."],
        ["restock-interval", None, None, "Seconds between restocks."],
        ["restock-quantity", None, None, "Stock a sold-out toy is restocked to."],
    ]
    overrides = {
        "data-dir": ("catalog", "data_dir", str),
        "lines": ("catalog", "lines", str),
        "http": ("catalog", "http", str),
        "initial-stock": ("catalog", "initial_stock", int),
        "restock-interval": ("catalog", "restock_interval", float),
        "restock-quantity": ("catalog", "restock_quantity", int),
    }


def makeService(options: Options, reactor: Any = None) -> IService:
    """Assemble the catalog process from its parsed command line."""
    if reactor is None:
        from twisted.internet import reactor
    config = options.config
    top = ProcessService(reactor, COMMAND, options["exit-on-stdin-close"])
    pool = ThreadPoolService(reactor, "catalog-db", size=1)
    pool.setServiceParent(top)
    catalog = CatalogService(config.catalog, reactor, pool.run)
    catalog.setServiceParent(top)
    Listener(reactor, "lines", config.catalog.lines, WireFactory(catalog, reactor, config.wire)).setServiceParent(top)
    site = make_site(operator_root(catalog.status, catalog.metrics.registry), timeouts=config.frontend, reactor=reactor)
    Listener(reactor, "http", config.catalog.http, site).setServiceParent(top)
    return top
