"""
Request statistics kept in plain integers, exported to Prometheus.

A prometheus_client ``Counter`` and ``Histogram`` with labels cost a lock, a
label lookup and a loop over the buckets in Python on every request: a few
microseconds that showed in the profile of every request the front-end and
the catalog serve.  :class:`RequestStats` counts the same things in a dict
of ints and a list per kind, on the reactor thread, and turns them into a
counter family and a histogram family only when ``/metrics`` is scraped, so
the exposition is what the two metrics would have shown.  :class:`Observations`
does the same for a histogram without labels.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

#: The histogram's default bucket bounds, in seconds.
SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Buckets:
    """Observations counted per histogram bucket, and their sum: what one histogram series holds."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, then beyond the last bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """One observation of ``value``."""
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """The buckets as Prometheus exports them: ``(le, observations up to it)``, ending with ``+Inf``."""
        buckets, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((floatToGoString(bound), running))
        return buckets


class Observations:
    """
    A histogram without labels, kept in plain numbers on the reactor thread
    and exported as a Prometheus histogram family at scrape time (the
    samples prometheus_client's ``Histogram`` gives for the same values,
    without ``_created``).
    """

    def __init__(self, registry: CollectorRegistry, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self._name = name
        self._documentation = documentation
        self._buckets = Buckets(tuple(buckets))
        self.observe = self._buckets.observe
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        """The histogram family, for the registry."""
        buckets = self._buckets
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=buckets.cumulative(), sum_value=buckets.sum
        )

    def describe(self) -> list[Metric]:
        """Nothing up front: the registry then calls :meth:`collect` at scrape time only."""
        return []


class RequestStats:
    """
    How many requests of each kind ended in each outcome, and how long
    each kind took.

    Exported as ``<counter>_total{<kind>, <outcome>}`` and
    ``<histogram>_bucket/_sum/_count{<kind>}``.  Not thread-safe: record
    and scrape on one thread (the reactor's).

    :param labels: the label names of the kind and of the outcome.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        counter: tuple[str, str],
        histogram: tuple[str, str],
        labels: tuple[str, str] = ("kind", "code"),
        buckets: Sequence[float] = SECONDS,
    ) -> None:
        self._counter = counter
        self._histogram = histogram
        self._labels = labels
        self._bounds = tuple(buckets)
        self._counts: dict[tuple[str, str], int] = {}
        self._observed: dict[str, Buckets] = {}  # kind -> its times
        registry.register(self)

    def record(self, kind: str, outcome: str, seconds: float) -> None:
        """One request of ``kind``, ended in ``outcome`` after ``seconds``."""
        key = (kind, outcome)
        self._counts[key] = self._counts.get(key, 0) + 1
        observed = self._observed.get(kind)
        if observed is None:
            observed = self._observed[kind] = Buckets(self._bounds)
        observed.observe(seconds)

    def count(self, kind: str, outcome: str) -> int:
        """Requests of ``kind`` that ended in ``outcome`` so far."""
        return self._counts.get((kind, outcome), 0)

    @property
    def bounds(self) -> tuple[float, ...]:
        """The histogram's bucket bounds."""
        return self._bounds

    def totals(self) -> dict[str, tuple[int, int, Buckets]]:
        """
        Per kind, so far: requests, those whose outcome is a 5xx, and their
        times (the live object: copy what must be kept).
        """
        counts: dict[str, list[int]] = {}
        for (kind, outcome), count in self._counts.items():
            total = counts.setdefault(kind, [0, 0])
            total[0] += count
            if outcome.startswith("5"):
                total[1] += count
        return {kind: (total[0], total[1], self._observed[kind]) for kind, total in counts.items()}

    def collect(self) -> Iterator[Metric]:
        """The two families, for the registry (a custom collector's one method)."""
        kind_label, outcome_label = self._labels
        counter = CounterMetricFamily(*self._counter, labels=[kind_label, outcome_label])
        for (kind, outcome), count in sorted(self._counts.items()):
            counter.add_metric([kind, outcome], count)
        yield counter
        histogram = HistogramMetricFamily(*self._histogram, labels=[kind_label])
        for kind, observed in sorted(self._observed.items()):
            histogram.add_metric([kind], observed.cumulative(), observed.sum)
        yield histogram

    def describe(self) -> list[Metric]:
        """Nothing up front: the registry then calls :meth:`collect` at scrape time only."""
        return []
