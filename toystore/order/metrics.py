"""
The order replica's Prometheus metrics, in a registry of its own.

Little here costs anything per order, and nothing per log write: the wire
calls are counted in plain ints (:class:`~toystore.stats.RequestStats`),
and so are the histograms (:class:`~toystore.stats.Observations`: a list index and an
addition per observation, where prometheus_client's ``Histogram`` takes a
lock and loops over its buckets); the gauges of the replica's state (role,
epoch, log lengths, followers in sync) are read from its ``status()`` when
``/metrics`` is scraped (:class:`StateCollector`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..stats import Observations, RequestStats

ROLES = ("follower", "pre-candidate", "candidate", "leader", "stopping")


class StateCollector:
    """
    The replica's state as gauges, read at scrape time.

    :param status: the replica's ``status()``: ``role``, ``epoch``,
        ``length``, ``durable``, ``commit``, ``lag``, ``elections``,
        ``prevotes_refused`` and ``handovers``.
    """

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        """The gauges, from the status as it is now."""
        status = self._status()
        role = GaugeMetricFamily("toystore_order_role", "1 for the role this replica has", labels=["role"])
        for name in ROLES:
            role.add_metric([name], 1 if status["role"] == name else 0)
        yield role
        for name, documentation, value in (
            ("toystore_order_epoch", "The highest epoch accepted", status["epoch"]),
            ("toystore_order_log_records", "Records in the log", status["length"]),
            ("toystore_order_log_durable", "Records on disk", status["durable"]),
            ("toystore_order_log_committed", "Records known to be on a majority", status["commit"]),
            ("toystore_order_serving", "1 while this replica leads and takes orders", int(status["serving"])),
            ("toystore_order_voter", "1 while this replica's copies count toward a commit", int(status["voter"])),
        ):
            yield GaugeMetricFamily(name, documentation, value=value)
        for name, documentation, value in (
            ("toystore_order_elections", "Elections this replica ran (pre-votes not counted)", status["elections"]),
            ("toystore_order_prevotes_refused", "Pre-votes this replica refused", status["prevotes_refused"]),
            ("toystore_order_handovers", "Handovers this replica started as leader", status["handovers"]),
        ):
            yield CounterMetricFamily(name, documentation, value=value)
        lag = GaugeMetricFamily(
            "toystore_order_follower_lag", "Records a follower lacks, as its leader knows it", labels=["replica"]
        )
        for replica, records in status["lag"].items():
            lag.add_metric([replica], records)
        yield lag

    def describe(self) -> list[Metric]:
        """Nothing up front: the registry then calls :meth:`collect` at scrape time only."""
        return []


class ReplicaMetrics:
    """
    Counters, gauges and histograms of one replica.

    :param status: the replica's ``status()``, read for the gauges at scrape time.
    """

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = RequestStats(
            r,
            ("toystore_order_calls", "Wire calls served"),
            ("toystore_order_call_seconds", "Time to serve a wire call"),
            labels=("type", "outcome"),
        )
        self.commit_seconds = Observations(
            r,
            "toystore_order_commit_seconds",
            "Time from an order's arrival at the leader to its commitment on a majority",
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.fsync_seconds = Observations(
            r,
            "toystore_order_fsync_seconds",
            "Time of one log write batch, fsync and key store included",
            (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.batch_size = Observations(
            r, "toystore_order_fsync_batch_size", "Log writes that shared one fsync", (1, 2, 4, 8, 16, 32, 64, 128, 256)
        )
        r.register(StateCollector(status))
