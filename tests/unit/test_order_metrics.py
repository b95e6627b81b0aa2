"""Tests for the replica's metrics (:mod:`toystore.order.metrics`): plain numbers, scraped as Prometheus families."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from twisted.trial.unittest import SynchronousTestCase

from toystore.order.metrics import Observations, ReplicaMetrics

BUCKETS = (0.001, 0.01, 0.1)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


class ObservationsTests(SynchronousTestCase):
    """A histogram kept in plain numbers gives the samples of prometheus_client's Histogram."""

    def test_same_samples_as_a_histogram(self) -> None:
        """Buckets (a value on a bound counts in it), +Inf, sum and count all match."""
        mine, theirs = CollectorRegistry(), CollectorRegistry()
        observations = Observations(mine, "t_seconds", "Time", BUCKETS)
        histogram = Histogram("t_seconds", "Time", buckets=BUCKETS, registry=theirs)
        for value in (0.0005, 0.001, 0.002, 0.05, 0.1, 7.0):
            observations.observe(value)
            histogram.observe(value)
        self.assertEqual(samples(mine).keys(), samples(theirs).keys())
        for key, value in samples(theirs).items():
            self.assertAlmostEqual(samples(mine)[key], value, places=9, msg=key)
        self.assertIn(b't_seconds_bucket{le="0.001"} 2.0', generate_latest(mine))


class ReplicaMetricsTests(SynchronousTestCase):
    """The families a replica exports, its state read from status() at scrape time only."""

    def test_families(self) -> None:
        """Calls by type and outcome with their times, the histograms, and the state's gauges."""
        reads = []
        status = {"role": "leader", "epoch": 4, "length": 9, "durable": 8, "commit": 7, "in_sync": [1, 2]}
        metrics = ReplicaMetrics(lambda: reads.append(1) or status)
        metrics.calls.record("order", "ok", 0.003)
        metrics.order_seconds.observe(0.004)
        self.assertEqual(reads, [])
        text = generate_latest(metrics.registry).decode()
        self.assertEqual(reads, [1])
        for line in (
            'toystore_order_calls_total{outcome="ok",type="order"} 1.0',
            'toystore_order_call_seconds_count{type="order"} 1.0',
            "toystore_order_commit_seconds_count 1.0",
            "toystore_order_fsync_seconds_count 0.0",
            'toystore_order_role{role="leader"} 1.0',
            'toystore_order_role{role="follower"} 0.0',
            "toystore_order_epoch 4.0",
            "toystore_order_log_records 9.0",
            "toystore_order_log_durable 8.0",
            "toystore_order_log_committed 7.0",
            "toystore_order_followers_in_sync 2.0",
        ):
            self.assertIn(line, text.splitlines())
