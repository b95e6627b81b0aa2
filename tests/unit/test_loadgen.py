"""Tests for the load generator's logic, :mod:`toystore.loadgen` (no network)."""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from toystore.loadgen import Report, Sample, Shopper, verify


class ShopperTests(SynchronousTestCase):
    """Choices follow the probability and the seed."""

    def test_same_seed_same_choices(self) -> None:
        """Two shoppers with one seed make the same choices."""
        a, b = Shopper(random.Random(7), 0.5), Shopper(random.Random(7), 0.5)
        self.assertEqual([(a.pick(), a.buy(10)) for _ in range(50)], [(b.pick(), b.buy(10)) for _ in range(50)])

    def test_probability(self) -> None:
        """p=0 never buys, p=1 always does (1 to 5), nobody buys a sold-out toy, and p=0.3 buys about 30%."""
        never, always, some = (Shopper(random.Random(1), p) for p in (0.0, 1.0, 0.3))
        self.assertEqual({never.buy(10) for _ in range(200)}, {None})
        self.assertEqual({always.buy(10) for _ in range(500)}, {1, 2, 3, 4, 5})
        self.assertEqual({always.buy(0) for _ in range(50)}, {None})
        bought = sum(1 for _ in range(10_000) if some.buy(10) is not None)
        self.assertTrue(2700 < bought < 3300, bought)

    def test_picks_every_toy(self) -> None:
        """Over many iterations every toy is queried."""
        shopper = Shopper(random.Random(3), 0.5)
        self.assertEqual({shopper.pick() for _ in range(2000)}, set(shopper.toys))

    def test_bad_probability(self) -> None:
        """A probability outside 0..1 is refused."""
        self.assertRaises(ValueError, Shopper, random.Random(), 1.5)


class VerifyTests(SynchronousTestCase):
    """verify() finds every order that does not read back as placed."""

    def test_verify(self) -> None:
        placed = {
            0: {"name": "Tux", "quantity": 2},
            1: {"name": "Fox", "quantity": 1},
            2: {"name": "Kite", "quantity": 3},
        }
        read = {
            0: {"number": 0, "name": "Tux", "quantity": 2},
            1: {"number": 1, "name": "Fox", "quantity": 5},
            2: {"error": {"code": 404, "message": "order 2 not found"}},
        }
        problems = verify(placed, read)
        self.assertEqual(len(problems), 2)
        self.assertTrue(problems[0].startswith("order 1:"))
        self.assertTrue(problems[1].startswith("order 2:"))


class ReportTests(SynchronousTestCase):
    """The summary counts errors and refusals apart and takes latency of answered requests only."""

    def test_summary(self) -> None:
        report = Report(
            samples=[
                Sample("query", 0, 0.002, 200),
                Sample("query", 0, 0.004, 200),
                Sample("query", 0, 9.0, 0, "ConnectionRefusedError"),
                Sample("buy", 0, 0.010, 409),
            ]
        )
        rows = {r["type"]: r for r in report.summary()}
        self.assertEqual((rows["query"]["count"], rows["query"]["errors"], rows["query"]["p50_ms"]), (3, 1, 4.0))
        self.assertEqual((rows["buy"]["errors"], rows["buy"]["refused"]), (0, 1))
        self.assertEqual(len(report.errors()), 1)
        self.assertIn("query", report.table())
