"""Tests for the replica's metrics (:mod:`toystore.order.metrics`): plain numbers, scraped as Prometheus families."""

from __future__ import annotations

from prometheus_client.exposition import generate_latest
from twisted.trial.unittest import SynchronousTestCase

from toystore.order.metrics import ReplicaMetrics


class ReplicaMetricsTests(SynchronousTestCase):
    """The families a replica exports, its state read from status() at scrape time only."""

    def test_families(self) -> None:
        """Calls by type and outcome with their times, the histograms, and the state's gauges."""
        reads = []
        status = {
            "role": "pre-candidate",
            "epoch": 4,
            "length": 9,
            "durable": 8,
            "commit": 7,
            "serving": False,
            "voter": True,
            "lag": {"1": 0, "2": 3},
            "elections": 5,
            "prevotes_refused": 2,
            "handovers": 1,
        }
        metrics = ReplicaMetrics(lambda: reads.append(1) or status)
        metrics.calls.record("order", "ok", 0.003)
        metrics.commit_seconds.observe(0.004)
        self.assertEqual(reads, [])
        text = generate_latest(metrics.registry).decode()
        self.assertEqual(reads, [1])
        for line in (
            'toystore_order_calls_total{outcome="ok",type="order"} 1.0',
            'toystore_order_call_seconds_count{type="order"} 1.0',
            "toystore_order_commit_seconds_count 1.0",
            "toystore_order_fsync_seconds_count 0.0",
            'toystore_order_role{role="pre-candidate"} 1.0',
            'toystore_order_role{role="leader"} 0.0',
            "toystore_order_epoch 4.0",
            "toystore_order_log_records 9.0",
            "toystore_order_log_durable 8.0",
            "toystore_order_log_committed 7.0",
            "toystore_order_serving 0.0",
            "toystore_order_voter 1.0",
            "toystore_order_elections_total 5.0",
            "toystore_order_prevotes_refused_total 2.0",
            "toystore_order_handovers_total 1.0",
            'toystore_order_follower_lag{replica="2"} 3.0',
        ):
            self.assertIn(line, text.splitlines())
