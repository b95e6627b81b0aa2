"""Tests for RequestStats and Observations: plain numbers that scrape like prometheus_client's metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from twisted.trial.unittest import SynchronousTestCase

from toystore.stats import SECONDS, Observations, RequestStats

OBSERVED = [
    ("product", "200", 0.0001),
    ("product", "200", 0.0005),  # exactly on a bound: counted in that bucket, as Prometheus does
    ("product", "404", 0.003),
    ("order", "200", 0.02),
    ("order", "503", 7.0),  # beyond the last bound: +Inf only
]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``registry`` but ``_created``, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


class RequestStatsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.registry = CollectorRegistry()
        self.stats = RequestStats(self.registry, ("t_requests", "Requests"), ("t_seconds", "Time"))
        # What prometheus_client's own metrics make of the same observations.
        self.reference = CollectorRegistry()
        counter = Counter("t_requests", "Requests", ["kind", "code"], registry=self.reference)
        histogram = Histogram("t_seconds", "Time", ["kind"], buckets=SECONDS, registry=self.reference)
        for kind, code, seconds in OBSERVED:
            self.stats.record(kind, code, seconds)
            counter.labels(kind, code).inc()
            histogram.labels(kind).observe(seconds)

    def test_same_samples_as_prometheus_metrics(self) -> None:
        """Every count, bucket, sum and count sample equals what Counter and Histogram give."""
        mine, theirs = samples(self.registry), samples(self.reference)
        self.assertEqual(mine.keys(), theirs.keys())
        for key, value in theirs.items():
            self.assertAlmostEqual(mine[key], value, places=9, msg=key)

    def test_exposition(self) -> None:
        """The text format names the families as the front-end's tests and scripts read them."""
        text = generate_latest(self.registry).decode()
        self.assertIn('t_requests_total{code="200",kind="product"} 2.0', text)
        self.assertIn('t_seconds_bucket{kind="product",le="0.0005"} 2.0', text)
        self.assertIn('t_seconds_bucket{kind="order",le="+Inf"} 2.0', text)
        self.assertIn('t_seconds_count{kind="order"} 2.0', text)

    def test_count_and_label_names(self) -> None:
        """count() reads one counter; other label names are used when given."""
        self.assertEqual((self.stats.count("product", "200"), self.stats.count("product", "500")), (2, 0))
        registry = CollectorRegistry()
        calls = RequestStats(registry, ("c", "Calls"), ("c_seconds", "Time"), labels=("type", "outcome"))
        calls.record("buy", "ok", 0.001)
        self.assertEqual(registry.get_sample_value("c_total", {"type": "buy", "outcome": "ok"}), 1.0)
        self.assertEqual(registry.get_sample_value("c_seconds_count", {"type": "buy"}), 1.0)


class ObservationsTests(SynchronousTestCase):
    """A histogram without labels kept in plain numbers gives the samples of prometheus_client's Histogram."""

    def test_same_samples_as_a_histogram(self) -> None:
        """Buckets (a value on a bound counts in it), +Inf, sum and count all match."""
        buckets = (0.001, 0.01, 0.1)
        mine, theirs = CollectorRegistry(), CollectorRegistry()
        observations = Observations(mine, "t_seconds", "Time", buckets)
        histogram = Histogram("t_seconds", "Time", buckets=buckets, registry=theirs)
        for value in (0.0005, 0.001, 0.002, 0.05, 0.1, 7.0):
            observations.observe(value)
            histogram.observe(value)
        self.assertEqual(samples(mine).keys(), samples(theirs).keys())
        for key, value in samples(theirs).items():
            self.assertAlmostEqual(samples(mine)[key], value, places=9, msg=key)
        self.assertIn(b't_seconds_bucket{le="0.001"} 2.0', generate_latest(mine))
