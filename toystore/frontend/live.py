"""
The live view of the store that the dashboard shows (reactor-free).

:class:`LiveView` is told, at each look, what the front-end knows already:
the replicas' last ``status`` answers (from the leader discovery), whether
the catalog's connection hears, the cache's entries and counters, and the
request counters' totals.  It keeps the state the page draws
(:meth:`LiveView.snapshot`) and works out what changed since the last look
(the sections that differ, and new timeline entries: a process down or up,
a leader change with how long orders were unavailable, a replica caught up,
a restock, a burst of cache invalidations).  Nothing here runs on a
request's path: the counters are read at a look, a few times a second, and
only while somebody watches.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

#: The request kinds shown, in order.
KINDS = ("product", "order", "order_query")
#: Timeline entries kept for a new page, and leader changes.
EVENTS_KEPT = 100
ELECTIONS_KEPT = 20
#: A look that finds at least this many cache invalidations notes a burst, at most once per BURST_QUIET seconds.
BURST = 5
BURST_QUIET = 5.0


@dataclass
class RequestTotals:
    """One kind of request, counted since start: how many, how many failed with a 5xx, and their times."""

    count: int
    errors: int
    buckets: list[int]


@dataclass
class Look:
    """What the front-end knows at one moment."""

    at: float
    leader: int | None  # the leader, as discovery found it
    via: int | None  # where calls go (the leader, or a replica that relays)
    epoch: int
    replicas: dict[int, dict[str, Any] | None]  # id -> its last status, None when it did not answer
    catalog_up: bool
    cache_size: int
    cache_keys: list[str]  # least recently used first
    cache_counts: dict[str, int]  # hits, misses, evictions, invalidations, clears
    cache_version: Callable[[str], Any]  # a token that changes when the name is invalidated
    requests: dict[str, RequestTotals]
    bounds: tuple[float, ...] = ()  # the histogram's bucket bounds, seconds
    outage: float | None = None  # seconds the front-end had no leader before it found this one, if it lost one


@dataclass
class LiveView:
    """
    The dashboard's state, and its changes look by look.

    :param window: seconds of requests that rates and percentiles cover.
    """

    window: float = 10.0
    state: dict[str, Any] = field(default_factory=dict)
    _events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    _new_events: list[dict[str, Any]] = field(default_factory=list)
    _elections: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=ELECTIONS_KEPT))
    _new_elections: list[dict[str, Any]] = field(default_factory=list)
    _totals: deque[tuple[float, dict[str, RequestTotals]]] = field(default_factory=deque)
    _up: dict[str, bool] = field(default_factory=dict)
    _catching: set[int] = field(default_factory=set)
    _leading: tuple[int | None, int] | None = None
    _since: float | None = None
    _leader_gone_at: float | None = None  # the first look that found the leader down or not serving
    _previous_keys: list[str] = field(default_factory=list)
    _previous_versions: dict[str, Any] = field(default_factory=dict)
    _last_burst: float | None = None
    _previous_invalidations: int | None = None
    _toys: list[dict[str, Any]] | None = None
    _restocks: int = 0

    def resume(self) -> None:
        """Somebody watches again after nobody did: rates start afresh, not averaged over the unwatched time."""
        self._totals.clear()

    # -- what the catalog says ---------------------------------------------------

    def stock(self, toys: list[dict[str, Any]]) -> None:
        """The catalog's toys, as its ``list`` call gives them."""
        self._toys = sorted(toys, key=lambda toy: toy["name"])

    def pushed(self, at: float, names: list[str], reason: str) -> None:
        """The catalog pushed an invalidation of ``names`` (``reason``: buy, restock ...)."""
        if reason == "restock":
            self._restocks += len(names)
            self._note(at, "restock", f"catalog restocked {', '.join(names)}")

    # -- a look ------------------------------------------------------------------

    def look(self, look: Look) -> dict[str, Any] | None:
        """
        Take in ``look``: the sections that changed and the new timeline
        entries and leader changes, or None if nothing did.
        """
        sections = {
            "frontend": {"name": "frontend", "leader": look.leader, "via": look.via, "epoch": look.epoch},
            "processes": self._processes(look),
            "leader": self._leader(look),
            "cache": self._cache(look),
            "catalog": {"up": look.catalog_up, "restocks": self._restocks, "toys": self._toys or []},
            "requests": self._requests(look),
        }
        changed = {name: value for name, value in sections.items() if self.state.get(name) != value}
        self.state.update(sections)
        self.state["at"] = look.at
        if self._new_events:
            changed["events"], self._new_events = self._new_events, []
        if self._new_elections:
            changed["elections"], self._new_elections = self._new_elections, []
        if not changed:
            return None
        changed["at"] = look.at
        return changed

    def snapshot(self) -> dict[str, Any]:
        """The whole state, for a page that has just connected."""
        return {**self.state, "events": list(self._events), "elections": list(self._elections)}

    # -- the sections ------------------------------------------------------------

    def _note(self, at: float, kind: str, text: str) -> None:
        entry = {"at": at, "kind": kind, "text": text}
        self._events.append(entry)
        self._new_events.append(entry)

    def _went(self, at: float, name: str, up: bool, down_text: str, up_text: str) -> None:
        """Note ``name`` going down or coming back (not its first state)."""
        before = self._up.get(name)
        self._up[name] = up
        if before is not None and before != up:
            self._note(at, "up" if up else "down", up_text if up else down_text)

    def _processes(self, look: Look) -> list[dict[str, Any]]:
        at = look.at
        self._went(at, "catalog", look.catalog_up, "catalog unreachable", "catalog reachable again")
        statuses = look.replicas
        leader_status = statuses.get(look.leader) if look.leader is not None else None
        leader_length = leader_status.get("length") if leader_status else None
        processes: list[dict[str, Any]] = [
            {"name": "frontend", "kind": "frontend", "up": True, "role": "front-end"},
            {"name": "catalog", "kind": "catalog", "up": look.catalog_up, "role": "catalog"},
        ]
        for i in sorted(statuses):
            status = statuses[i]
            name = f"order-{i}"
            was_up = self._up.get(name)
            self._went(at, name, status is not None, f"{name} does not answer", f"{name} answers again")
            if status is None:
                self._catching.discard(i)
                processes.append(
                    {
                        "name": name,
                        "kind": "order",
                        "id": i,
                        "up": False,
                        "role": "down",
                        "epoch": None,
                        "serving": False,
                        "length": None,
                        "commit": None,
                        "last_order": None,
                        "committed_order": None,
                        "lag": None,
                        "catching_up": None,
                    }
                )
                continue
            length = status.get("length")
            lag = max(0, leader_length - length) if leader_length is not None and length is not None else None
            if was_up is False and lag:
                self._catching.add(i)  # back after being down, and behind: catching up
            catching_up = None
            if i in self._catching:
                if not lag:
                    self._catching.discard(i)
                    self._note(at, "caught-up", f"{name} caught up with the leader ({length} records)")
                else:
                    catching_up = {"have": length, "of": leader_length}
            processes.append(
                {
                    "name": name,
                    "kind": "order",
                    "id": i,
                    "up": True,
                    "role": status.get("role"),
                    "epoch": status.get("epoch"),
                    "serving": bool(status.get("serving")),
                    "length": length,
                    "commit": status.get("commit"),
                    "last_order": status.get("last_order"),
                    "committed_order": status.get("committed_order"),
                    "lag": lag,
                    "catching_up": catching_up,
                }
            )
        return processes

    def _leader(self, look: Look) -> dict[str, Any]:
        leading = (look.leader, look.epoch)
        if self._leading is not None and self._leading[0] is not None:
            status = look.replicas.get(self._leading[0])
            if status is None or not status.get("serving"):
                if self._leader_gone_at is None:
                    self._leader_gone_at = look.at
            elif leading == self._leading:
                self._leader_gone_at = None  # it serves again: no change after all
        if look.leader is not None and leading != self._leading:
            previous = self._leading[0] if self._leading is not None else None
            if self._leading is not None:
                # From the first sign the old leader was gone (the front-end's calls, or a look) to now.
                seen = look.at - self._leader_gone_at if self._leader_gone_at is not None else 0.0
                unavailable = max(look.outage or 0.0, seen)
                entry = {
                    "at": look.at,
                    "epoch": look.epoch,
                    "leader": look.leader,
                    "previous": previous,
                    "unavailable": round(unavailable, 3),
                }
                self._elections.append(entry)
                self._new_elections.append(entry)
                self._note(
                    look.at,
                    "election",
                    f"order-{look.leader} leads epoch {look.epoch} (orders unavailable {unavailable:.2f} s)",
                )
            self._leading, self._since, self._leader_gone_at = leading, look.at, None
        return {"id": look.leader, "epoch": look.epoch if look.leader is not None else None, "since": self._since}

    def _cache(self, look: Look) -> dict[str, Any]:
        keys, counts = look.cache_keys, look.cache_counts
        gone = [name for name in self._previous_keys if name not in set(keys)]
        # A name that left and whose version moved was invalidated; one whose version did not was evicted.
        invalidated = [name for name in gone if look.cache_version(name) != self._previous_versions.get(name)]
        evicted = [name for name in gone if name not in invalidated]
        self._previous_keys = list(keys)
        self._previous_versions = {name: look.cache_version(name) for name in keys}
        invalidations = counts.get("invalidations", 0)
        if self._previous_invalidations is not None:
            burst = invalidations - self._previous_invalidations
            quiet = self._last_burst is None or look.at - self._last_burst >= BURST_QUIET
            if burst >= BURST and quiet:
                self._last_burst = look.at
                self._note(look.at, "invalidations", f"{burst} cache entries invalidated at once")
        self._previous_invalidations = invalidations
        return {
            "capacity": look.cache_size,
            "keys": list(keys),
            **counts,
            "evicted": evicted,
            "invalidated": invalidated,
        }

    def _requests(self, look: Look) -> dict[str, Any]:
        totals = self._totals
        totals.append((look.at, look.requests))
        while len(totals) > 2 and look.at - totals[1][0] >= self.window:
            totals.popleft()
        then, old = totals[0]
        span = look.at - then
        kinds = {}
        for kind in KINDS:
            now = look.requests.get(kind)
            before = old.get(kind)
            count = (now.count if now else 0) - (before.count if before else 0)
            if now is None or span <= 0 or count <= 0:
                kinds[kind] = {"rate": 0.0, "p50": None, "p99": None, "errors": 0.0}
                continue
            counts = [a - b for a, b in zip(now.buckets, before.buckets, strict=True)] if before else now.buckets
            errors = now.errors - (before.errors if before else 0)
            kinds[kind] = {
                "rate": round(count / span, 1),
                "p50": _rounded(quantile(look.bounds, counts, 0.5)),
                "p99": _rounded(quantile(look.bounds, counts, 0.99)),
                "errors": round(errors / count, 4),
            }
        return {"window": self.window, "kinds": kinds}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def quantile(bounds: tuple[float, ...], counts: list[int], q: float) -> float | None:
    """
    The ``q`` quantile of observations counted per bucket (``counts[i]`` in
    ``(bounds[i-1], bounds[i]]``, the last beyond every bound), interpolated
    linearly inside its bucket, as Prometheus's ``histogram_quantile`` does;
    beyond the last bound, the last bound.  None with no observation.
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]


def request_totals(stats: Any) -> dict[str, RequestTotals]:
    """Per kind, the totals of a :class:`~toystore.stats.RequestStats` now (copied: the look keeps them)."""
    return {
        kind: RequestTotals(count, errors, list(buckets.counts))
        for kind, (count, errors, buckets) in stats.totals().items()
    }
