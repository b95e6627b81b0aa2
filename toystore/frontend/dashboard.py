"""
The live page of the store, on the front-end's public port:

::

    GET /dashboard             the page (HTML; its style and script below)
    GET /dashboard/style.css
    GET /dashboard/app.js
    GET /dashboard/events      the live feed: Server-Sent Events, a snapshot, then changes

The page and its two files are in the package (``static/``), read once at
start and served with a Content-Security-Policy that allows nothing but
them and the feed: no inline script, nothing from elsewhere.  The page only
reads, except its Buy buttons, which use the public ``POST /orders``.

:class:`Dashboard` gathers what the front-end knows already (the leader
discovery's ``status`` answers, the catalog connection, the cache, the
request counters, the catalog's pushes and its ``list``) into a
:class:`~toystore.frontend.live.LiveView` every :data:`INTERVAL` seconds,
and publishes what changed.  It does so only while somebody watches: with
no page open, nothing runs, and no request path ever does extra work for
it.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from ..envelope import ApiError, dumps
from ..web import JSONNotFound, write_not_allowed
from ..web.events import EventStream
from .live import LiveView, Look, request_totals
from .service import FrontendService

#: Seconds between two looks while somebody watches: changes go out at most this often.
INTERVAL = 0.5
#: What the page may load and connect to: itself only.
POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: The page's files: path under /dashboard -> (file in static/, content type).
FILES = {
    b"": ("dashboard.html", b"text/html; charset=utf-8"),
    b"style.css": ("dashboard.css", b"text/css; charset=utf-8"),
    b"app.js": ("dashboard.js", b"text/javascript; charset=utf-8"),
}


class StaticFile(Resource):
    """One file of the page, kept in memory, served with the page's security headers."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: bytes) -> None:
        super().__init__()
        self.body = body
        self.content_type = content_type

    def render(self, request: Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            return write_not_allowed(request, ["GET", "HEAD"])
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"content-security-policy", POLICY)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"cache-control", b"no-cache")
        return self.body


class DashboardTree(Resource):
    """``/dashboard`` and its children; ``/dashboard`` and ``/dashboard/`` are both the page."""

    def __init__(self, page: StaticFile, children: dict[bytes, IResource]) -> None:
        super().__init__()
        self.page = page
        self.named = children

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"" and not request.postpath:
            return self.page
        child = self.named.get(path)
        if child is None or request.postpath:
            return JSONNotFound()
        return child

    def render(self, request: Request) -> bytes:
        return self.page.render(request)


def page_files() -> dict[bytes, bytes]:
    """The page's files as the package holds them: path under /dashboard -> bytes."""
    static = files(__package__).joinpath("static")
    return {path: static.joinpath(name).read_bytes() for path, (name, _) in FILES.items()}


class Dashboard(Service):
    """
    The live feed's source: looks at the front-end while somebody watches
    and publishes the changes on :attr:`stream`.

    :param frontend: the front-end it shows.
    :param clock: the reactor's clock.
    :param stall_timeout: seconds a page that reads nothing keeps its feed.
    """

    log = Logger()

    def __init__(self, frontend: FrontendService, clock: Any, stall_timeout: float = 5.0) -> None:
        self.frontend = frontend
        self.clock = clock
        self.view = LiveView()
        self.stream = EventStream(clock, self._snapshot, self._watched, stall_timeout)
        self._looking = LoopingCall(self._look_safely)
        self._looking.clock = clock
        self._stock_stale = True  # the catalog's list is to be asked (again)
        self._listing = False
        self._catalog_was_up = False

    # -- the web ---------------------------------------------------------------------

    def resource(self) -> IResource:
        """``/dashboard`` and everything under it."""
        bodies = page_files()
        served = {path: StaticFile(bodies[path], content_type) for path, (_, content_type) in FILES.items()}
        page = served.pop(b"")
        return DashboardTree(page, {**served, b"events": self.stream})

    # -- life ---------------------------------------------------------------------------

    def stopService(self) -> None:
        super().stopService()
        self.stream.close()

    def _watched(self, watching: bool) -> None:
        """The first page arrived (look now, then every :data:`INTERVAL`), or the last one left (stop)."""
        if watching:
            self.log.info("a dashboard is watching: looking every {interval} s", interval=INTERVAL)
            self.view.resume()
            self.frontend.on_push = self._pushed
            self._stock_stale = True
            self._looking.start(INTERVAL, now=True)
        else:
            self.log.info("no dashboard is watching any more")
            self.frontend.on_push = None
            if self._looking.running:
                self._looking.stop()

    def _snapshot(self) -> tuple[str, bytes]:
        return "snapshot", dumps(self.view.snapshot())

    # -- looking ------------------------------------------------------------------------

    def _look_safely(self) -> None:
        """A look that fails is logged, and the next one is made all the same."""
        with self.log.failuresHandled("looking at the store for the live page"):
            self.look()

    def look(self) -> None:
        """Gather what the front-end knows now; publish what changed."""
        frontend, tracker, cache = self.frontend, self.frontend.tracker, self.frontend.cache
        catalog_up = bool(frontend.catalog is not None and frontend.catalog.hearing)
        if catalog_up and not self._catalog_was_up:
            self._stock_stale = True  # (again) connected: pushes may have been missed
        self._catalog_was_up = catalog_up
        stats = cache.stats
        outage = tracker.outage
        requests = frontend.metrics.requests
        change = self.view.look(
            Look(
                at=self.clock.seconds(),
                leader=tracker.known,
                via=tracker.leader,
                epoch=tracker.epoch,
                # A replica whose connection is down is down now, whatever the last discovery heard.
                replicas={
                    i: tracker.statuses.get(i) if client.connected else None
                    for i, client in sorted(frontend.replicas.items())
                },
                catalog_up=catalog_up,
                cache_size=cache.size,
                cache_keys=cache.keys(),
                cache_counts={
                    "hits": stats.hits,
                    "misses": stats.misses,
                    "evictions": stats.evictions,
                    "invalidations": stats.invalidations,
                    "clears": stats.clears,
                },
                cache_version=cache.version,
                requests=request_totals(requests),
                bounds=requests.bounds,
                outage=outage[1] if outage is not None and outage[0] == tracker.epoch else None,
            )
        )
        if change is not None:
            self.stream.publish("change", dumps(change))
        if self._stock_stale and catalog_up and not self._listing:
            self._list()

    def _pushed(self, names: list[str], reason: str) -> None:
        """The catalog's push (while watched): the stock changed."""
        self.view.pushed(self.clock.seconds(), names, reason)
        self._stock_stale = True

    def _list(self) -> None:
        """Ask the catalog for every toy's stock; the next look shows it."""
        self._listing = True
        self._stock_stale = False

        def listed(reply: dict[str, Any]) -> None:
            self.view.stock(reply["toys"])

        def failed(failure: Any) -> None:
            failure.trap(ApiError)
            self._stock_stale = True  # asked again at a later look

        def done(_: object) -> None:
            self._listing = False

        self.frontend.catalog.call("list").addCallbacks(listed, failed).addBoth(done)
