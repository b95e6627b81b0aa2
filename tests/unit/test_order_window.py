"""
Tests for the order log's memory (no reactor): the window of recent lines
(:mod:`toystore.order.window`), a log larger than its window read back from
its file (:mod:`toystore.order.log`, ``journal``), restart, truncation
across the window's edge, and ``reconciled()`` kept up to date record by
record (:mod:`toystore.order.reconcile`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from toystore.order import reconcile
from toystore.order.journal import CorruptJournal, JournalReader, Log, NotInMemory, open_journal, record_of
from toystore.order.log import OFFSET_STEP
from toystore.order.window import LINE_OVERHEAD, Window

#: A window this size holds about a dozen of the lines below.
SMALL = 2000


def big_log() -> Log:
    """Two leaderships, 400 orders with seqs (one pair out of order), all in memory."""
    log = Log()
    log.append_leader(1, 3)
    for n in range(300):
        log.append_order(1, "Tux", 1 + n % 3, f"k{n}", seq=n + 1)
    log.append_leader(2, 1, reconciled=300)
    for n in range(300, 400):
        seq = {350: 352, 352: 351, 351: 350}.get(n, n)
        log.append_order(2, "Fox", 2, f"k{n}", seq=seq + 1)
    return log


def reference_reconciled(records: list[dict[str, Any]]) -> int:
    """``reconciled()`` as it was first written: walk back to the last leader record."""
    seqs = set()
    through = 0
    for record in reversed(records):
        if "leader" in record:
            through = record.get("reconciled", 0)
            break
        seq = record.get("order", {}).get("seq")
        if seq is not None:
            seqs.add(seq)
    while through + 1 in seqs:
        through += 1
    return through


class WindowTests(SynchronousTestCase):
    """Recent lines within a byte budget; lines not yet durable whatever their size."""

    def fill(self, budget: int, count: int) -> Window:
        w = Window(budget)
        for i in range(count):
            w.append(b"%09d\n" % i)
        return w

    def test_lines_not_durable_stay(self) -> None:
        """Past its budget, a window drops nothing that is not on disk yet."""
        w = self.fill(budget=100, count=20)
        self.assertEqual((w.first, w.end, w.nbytes), (0, 20, 20 * (10 + LINE_OVERHEAD)))

    def test_durable_lines_leave_oldest_first(self) -> None:
        """Once durable, the oldest lines go until the window is within its budget."""
        w = self.fill(budget=3 * (10 + LINE_OVERHEAD), count=20)
        w.mark_durable(5)
        self.assertEqual((w.first, w.end), (5, 20))
        w.mark_durable(20)
        self.assertEqual((w.first, w.end), (17, 20))
        self.assertEqual((w.get(16), w.get(17), w.get(19), w.get(20)), (None, b"000000017\n", b"000000019\n", None))
        self.assertEqual(
            (w.lines(16, 18), w.lines(17, 19), w.lines(18, 21)), (None, [b"000000017\n", b"000000018\n"], None)
        )

    def test_truncate(self) -> None:
        """Inside the window the lines after the cut go; below it, all of them, and the window starts at the cut."""
        w = self.fill(budget=3 * (10 + LINE_OVERHEAD), count=10)
        w.mark_durable(10)
        w.truncate(9)
        self.assertEqual((w.first, w.end, w.durable, w.nbytes), (7, 9, 9, 2 * (10 + LINE_OVERHEAD)))
        self.assertEqual((w.get(8), w.get(9)), (b"000000008\n", None))
        w.truncate(3)
        self.assertEqual((w.first, w.end, w.durable, w.nbytes, w.get(2)), (3, 3, 3, 0, None))


class DiskLogTests(SynchronousTestCase):
    """A log larger than its window: what it keeps, what is read back from its file."""

    def setUp(self) -> None:
        self.full = big_log()
        self.path = Path(self.mktemp())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(b"".join(self.full.lines))
        self.opened = open_journal(self.path, window_bytes=SMALL)
        self.addCleanup(self.opened.file.close)
        self.log = self.opened.order_log
        self.reader = JournalReader(self.path)
        self.addCleanup(self.reader.close)

    def read(self, start: int, end: int) -> list[bytes]:
        return self.reader.read_lines(self.log.offsets[start], self.log.offsets[end], end - start)

    def test_restart_builds_the_same_indexes(self) -> None:
        """Opened a chunk at a time, the log has the indexes of the whole log and only the window's lines."""
        log, full = self.log, self.full
        self.assertEqual(len(log), 402)
        self.assertEqual((log.offsets, log.runs(), log.last_epoch), (full.offsets, full.runs(), 2))
        self.assertEqual([log.order_index(n) for n in range(400)], list(full.orders))
        self.assertEqual([log.unindexed_order(f"k{n}") for n in range(400)], list(range(400)))  # no key store: kept
        self.assertEqual((log.reconciled(), full.reconciled()), (400, 400))
        self.assertGreater(log.first_in_memory, 380)
        self.assertLessEqual(log.window.nbytes, SMALL + SMALL // 16)

    def test_old_records_read_back(self) -> None:
        """Records before the window are only on disk, and read back, checked, as they were written."""
        old = self.log.first_in_memory - 1
        self.assertIsNone(self.log.line(old))
        self.assertRaises(NotInMemory, self.log.record, old)
        self.assertRaises(NotInMemory, self.log.order, 5)
        self.assertEqual(self.read(0, old + 1), self.full.lines[: old + 1])
        self.assertEqual(self.log.lines_in_memory(old + 1, 402), self.full.lines[old + 1 :])
        self.assertEqual(record_of(self.read(7, 8)[0])["order"]["key"], "k6")

    def test_reader_checks_what_it_reads(self) -> None:
        """A flipped byte on disk, or a range that is not the records asked for, is CorruptJournal."""
        self.assertRaises(CorruptJournal, self.reader.read_lines, 0, self.log.offsets[3], 2)
        self.assertRaises(CorruptJournal, self.reader.read_lines, 1, self.log.offsets[3], 3)
        data = bytearray(self.path.read_bytes())
        data[self.log.offsets[5] + 20] ^= 1
        self.path.write_bytes(bytes(data))
        self.assertRaises(CorruptJournal, self.read, 4, 6)

    def test_new_lines_stay_until_durable(self) -> None:
        """Appended lines stay in memory until marked durable, then the window shrinks back to its budget."""
        lines = [self.log.append_order(3, "Kite", 1, f"new{n}") for n in range(50)]
        self.assertEqual(self.log.lines_in_memory(402, 452), lines)
        self.opened.file.write([("append", b"".join(lines))])
        self.log.mark_durable(452)
        self.assertGreater(self.log.first_in_memory, 402)
        self.assertEqual(self.read(400, 452), self.full.lines[400:] + lines)

    def test_truncate_across_the_window_edge(self) -> None:
        """Cut below the window: indexes as if the log had only the first records; appends carry on from there."""
        log = self.log
        log.truncate(200)
        reference = Log(self.full.lines[:200])
        self.assertEqual((len(log), log.size, log.offsets), (200, reference.size, reference.offsets))
        self.assertEqual((log.runs(), log.order_count, log.first_in_memory), (reference.runs(), 199, 200))
        self.assertEqual(log.unindexed_order("k198"), 198)
        self.assertEqual([log.unindexed_order(f"k{n}") for n in (199, 300, 399)], [None, None, None])
        self.assertLessEqual(log.reconciled(), reference.reconciled())  # lower is safe: see Reconciled
        self.assertEqual(
            log.append_order(3, "Whale", 1, "k199", seq=999), reference.append_order(3, "Whale", 1, "k199", seq=999)
        )
        self.assertEqual(log.unindexed_order("k199"), 199)

    def test_truncate_in_the_window_is_exact(self) -> None:
        """Cut where the records since the last snapshot are all in the window, reconciled() is exact."""
        self.patch(reconcile, "CHECKPOINT_EVERY", 4)
        opened = open_journal(self.path, window_bytes=SMALL)
        opened.file.close()
        opened.order_log.truncate(398)
        reference = Log(self.full.lines[:398])
        self.assertEqual((opened.order_log.reconciled(), opened.order_log.order_count), (reference.reconciled(), 396))
        self.assertEqual(reference.reconciled(), 396)
        self.assertEqual([opened.order_log.unindexed_order(f"k{n}") for n in (395, 396, 397)], [395, None, None])

    def test_offsets_from_line_lengths(self) -> None:
        """Offsets computed from line lengths and a mark every OFFSET_STEP records, across truncations and appends."""
        log = Log(self.full.lines)
        expected = [0]
        for line in self.full.lines:
            expected.append(expected[-1] + len(line))
        self.assertEqual(list(log.offsets), expected)
        for cut in (OFFSET_STEP * 3, OFFSET_STEP * 3 + 1, OFFSET_STEP * 2 - 1, 0):
            with self.subTest(cut=cut):
                self.assertEqual(log.truncate(cut), expected[cut])
                self.assertEqual(list(log.offsets), expected[: cut + 1])
                for line in self.full.lines[cut : cut + OFFSET_STEP + 5]:
                    log.append_line(line)
                self.assertEqual(list(log.offsets), expected[: cut + OFFSET_STEP + 6])


class ReconciledTests(SynchronousTestCase):
    """reconciled(), kept record by record, is the walk back to the last leader record."""

    def test_random_logs(self) -> None:
        """Random orders, seqs out of order, gaps, leader records and truncations: always the reference value."""
        rng = random.Random(7)
        self.patch(reconcile, "CHECKPOINT_EVERY", 16)
        for _ in range(20):
            log, epoch, seq = Log(), 1, 0
            for _ in range(300):
                roll = rng.random()
                if roll < 0.05:
                    epoch += 1
                    log.append_leader(epoch, 1, reconciled=max(0, seq - rng.randrange(3)))
                elif roll < 0.08 and len(log):
                    log.truncate(rng.randrange(len(log)))
                else:
                    seq += 1
                    log.append_order(epoch, "Tux", 1, f"k{len(log)}", seq=seq + rng.choice((0, 0, 0, 1, -1, 3)))
                self.assertEqual(log.reconciled(), reference_reconciled(list(log.records)))

    def test_pending_seqs_are_bounded(self) -> None:
        """Seqs waiting for a gap are bounded; dropping some can only make the value lower."""
        self.patch(reconcile, "MAX_PENDING", 8)
        log = Log()
        for seq in range(3, 40):
            log.append_order(1, "Tux", 1, f"k{seq}", seq=seq)
        log.append_order(1, "Tux", 1, "late", seq=1)
        self.assertEqual(log.reconciled(), 1)
        log.append_order(1, "Tux", 1, "later", seq=2)
        self.assertTrue(2 < log.reconciled() < reference_reconciled(list(log.records)) == 39)
