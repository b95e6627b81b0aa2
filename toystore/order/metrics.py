"""The order replica's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ROLES = ("follower", "promoting", "leader", "stopping")


class ReplicaMetrics:
    """Counters, gauges and histograms of one replica."""

    def __init__(self, replica_id: int) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter("toystore_order_calls", "Wire calls served", ["type", "outcome"], registry=r)
        self.order_seconds = Histogram(
            "toystore_order_commit_seconds",
            "Time from an order's arrival at the leader to its commitment on a majority",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.fsync_seconds = Histogram(
            "toystore_order_fsync_seconds",
            "Time of one log write batch, fsync included",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.batch_size = Histogram(
            "toystore_order_fsync_batch_size",
            "Log writes that shared one fsync",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.role = Gauge("toystore_order_role", "1 for the role this replica has", ["role"], registry=r)
        self.epoch = Gauge("toystore_order_epoch", "The highest epoch accepted", registry=r)
        self.records = Gauge("toystore_order_log_records", "Records in the log", registry=r)
        self.durable = Gauge("toystore_order_log_durable", "Records on disk", registry=r)
        self.commit = Gauge("toystore_order_log_committed", "Records known to be on a majority", registry=r)
        self.in_sync = Gauge("toystore_order_followers_in_sync", "Followers in the in-sync set", registry=r)

    def update(self, replica: Any) -> None:
        """Bring the gauges up to date with ``replica``."""
        for role in ROLES:
            self.role.labels(role).set(1 if replica.role == role else 0)
        self.epoch.set(replica.epoch)
        self.records.set(len(replica.log_))
        self.durable.set(replica.durable)
        self.commit.set(replica.commit)
        self.in_sync.set(len(replica.streams.in_sync()) if replica.role == "leader" else 0)
