"""Tests for :mod:`toystore.measure`."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from toystore.measure import delta, mean, parse_metrics, percentile, table


class MeasureTests(SynchronousTestCase):
    """Percentiles, tables and metrics arithmetic."""

    def test_percentile(self) -> None:
        """Nearest rank: p50 of 1..100 is 51, p99 is 100; empty is NaN."""
        values = list(range(100, 0, -1))
        self.assertEqual((percentile(values, 0.5), percentile(values, 0.99), percentile(values, 0)), (51, 100, 1))
        self.assertNotEqual(percentile([], 0.5), percentile([], 0.5))

    def test_table(self) -> None:
        """Columns are aligned; the first ``left`` to the left."""
        self.assertEqual(table(("mode", "n"), [("a", "1"), ("bbb", "10")], left=1), "mode   n\na      1\nbbb   10")

    def test_metrics_arithmetic(self) -> None:
        """Samples are parsed with their labels; a histogram's mean is taken over what grew between scrapes."""
        before = parse_metrics('# HELP x\nh_sum 1.0\nh_count 2.0\nc_total{type="buy"} 3.0\n')
        after = parse_metrics('h_sum 4.0\nh_count 5.0\nc_total{type="buy"} 7.0\n')
        grown = delta(before, after)
        self.assertEqual(grown['c_total{type="buy"}'], 4.0)
        self.assertEqual(mean(grown, "h"), 1.0)
        self.assertNotEqual(mean({}, "h"), mean({}, "h"))
