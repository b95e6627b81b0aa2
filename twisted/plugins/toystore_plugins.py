"""
The twistd commands of toystore.  Kept free of imports beyond Twisted's own:
twistd imports every plugin file on every run, and ServiceMaker loads each
tap module only when its command is used.
"""

from twisted.application.service import ServiceMaker

toystore_catalog = ServiceMaker(
    "toystore catalog",
    "toystore.catalog.tap",
    "The toystore catalog: toys, stock in SQLite, restocks and the invalidation feed.",
    "toystore-catalog",
)

toystore_order = ServiceMaker(
    "toystore order replica",
    "toystore.order.tap",
    "One toystore order replica: a durable, replicated order log (--id N).",
    "toystore-order",
)

toystore_frontend = ServiceMaker(
    "toystore front-end",
    "toystore.frontend.tap",
    "The toystore front-end: the public REST API, its cache and leader failover.",
    "toystore-frontend",
)
