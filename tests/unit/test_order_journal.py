"""Tests for the order log file and its in-memory view, :mod:`toystore.order.journal` (no reactor)."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from toystore.order import journal
from toystore.order.journal import CorruptJournal, Log, decode, encode, open_journal, scan
from toystore.order.records import order_line


def sample_log() -> Log:
    """A log of one epoch record and three orders over two epochs."""
    log = Log()
    log.append_leader(1, 3)
    log.append_order(1, "Tux", 2, "k0")
    log.append_order(1, "Fox", 1, "k1")
    log.append_leader(2, 2)
    log.append_order(2, "Kite", 5, "k2")
    return log


class EncodingTests(SynchronousTestCase):
    """Lines are deterministic and checked."""

    def test_deterministic(self) -> None:
        """The same record gives the same bytes, whatever the key order."""
        a = encode({"index": 0, "epoch": 1, "leader": 3})
        b = encode({"leader": 3, "epoch": 1, "index": 0})
        self.assertEqual(a, b)
        self.assertRegex(a, rb"^[0-9a-f]{8} \{.*\}\n$")
        self.assertEqual(decode(a), {"index": 0, "epoch": 1, "leader": 3})

    def test_bad_lines(self) -> None:
        """A flipped byte, a bad checksum or a non-record is refused."""
        line = encode({"index": 0, "epoch": 1, "leader": 3})
        flipped = line.replace(b'"leader":3', b'"leader":4')
        for bad in (flipped, b"zzzzzzzz {}\n", b"{}\n", encode({"index": "0", "epoch": 1})):
            with self.subTest(bad=bad):
                self.assertRaises(ValueError, decode, bad)

    def test_order_lines_written_out(self) -> None:
        """
        A leader's order lines, written out directly, are the bytes the
        generic encoder gives: for any text (quotes, backslashes, control
        and non-ASCII characters), with and without a seq.
        """
        texts = ["Tux", 'say "hi"', "back\\slash", "tab\there\n", "ключ", "🦊 fox", "\u2028", "\x7f\x00"]
        for name in texts:
            for key in (texts[0], name):
                for seq in (None, 0, 41, 2**62):
                    order = {"number": 5, "name": name, "quantity": 100, "key": key}
                    if seq is not None:
                        order["seq"] = seq
                    expected = encode({"index": 7, "epoch": 3, "order": order})
                    with self.subTest(name=name, key=key, seq=seq):
                        self.assertEqual(order_line(3, 7, 5, name, 100, key, seq), expected)
                        self.assertEqual(decode(expected)["order"], order)

    def test_order_lines_refuse_other_types(self) -> None:
        """A number that is not an int (a bool, a float, a string) or a text that is not a str is refused."""
        good = {"epoch": 1, "index": 0, "number": 0, "name": "Tux", "quantity": 1, "key": "k", "seq": 1}
        for field, bad in [("quantity", True), ("quantity", 1.5), ("seq", "1"), ("epoch", 1.0), ("name", b"Tux")]:
            with self.subTest(field=field, bad=bad):
                self.assertRaises(ValueError, order_line, **{**good, field: bad})


class ScanTests(SynchronousTestCase):
    """Start-up reading: torn tails are cut, corruption before good records stops the start."""

    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.log = sample_log()
        self.data = b"".join(self.log.lines)

    def test_missing_file_is_empty(self) -> None:
        """A replica starting for the first time has an empty log, and the file is created."""
        opened = open_journal(self.path)
        self.addCleanup(opened.file.close)
        self.assertEqual((len(opened.order_log), opened.torn_bytes), (0, 0))
        self.assertTrue(self.path.exists())

    def test_torn_tail_at_every_offset(self) -> None:
        """Cut anywhere inside the last record, the log opens with the records before it, and the file is trimmed."""
        last = self.log.lines[-1]
        keep = self.data[: -len(last)]
        for cut in range(len(last)):
            with self.subTest(cut=cut):
                self.path.write_bytes(keep + last[:cut])
                opened = open_journal(self.path)
                opened.file.close()
                self.assertEqual(opened.order_log.lines, self.log.lines[:-1])
                self.assertEqual(opened.torn_bytes, cut)
                self.assertEqual(self.path.read_bytes(), keep)

    def test_garbage_tail(self) -> None:
        """Zeros after the last record (a crash that extended the file) are cut off too."""
        self.path.write_bytes(self.data + b"\x00" * 100)
        opened = open_journal(self.path)
        opened.file.close()
        self.assertEqual(len(opened.order_log), len(self.log))
        self.assertEqual(self.path.read_bytes(), self.data)

    def test_corrupt_middle_record(self) -> None:
        """A bad record followed by good ones stops the start, naming the record."""
        lines = list(self.log.lines)
        lines[2] = lines[2].replace(b'"Fox"', b'"Fax"')
        self.path.write_bytes(b"".join(lines))
        error = self.assertRaises(CorruptJournal, scan, self.path)
        self.assertIn("record 3", str(error))
        self.assertIn("checksum mismatch", str(error))
        self.assertIn("good records follow it", str(error))
        self.assertRaises(CorruptJournal, open_journal, self.path)
        self.assertEqual(self.path.read_bytes(), b"".join(lines), "a corrupt journal must not be modified")

    def test_empty_line_in_the_middle(self) -> None:
        """An empty line is a bad record too, and its offset counts its newline."""
        self.path.write_bytes(self.log.lines[0] + b"\n" + self.log.lines[1])
        error = str(self.assertRaises(CorruptJournal, scan, self.path))
        self.assertIn(f"record 2 (byte {len(self.log.lines[0])})", error)

    def test_read_in_small_chunks(self) -> None:
        """Lines cut across the reading chunks are joined again; a torn tail is found in the last chunk."""
        self.patch(journal, "READ_CHUNK", 7)
        self.path.write_bytes(self.data + self.log.lines[0][:5])
        opened = open_journal(self.path)
        opened.file.close()
        self.assertEqual((opened.order_log.lines, opened.torn_bytes), (self.log.lines, 5))

    def test_records_out_of_order(self) -> None:
        """A well-formed record with the wrong index is corruption."""
        lines = list(self.log.lines)
        lines[1], lines[2] = lines[2], lines[1]
        self.path.write_bytes(b"".join(lines))
        self.assertIn("expected 1", str(self.assertRaises(CorruptJournal, scan, self.path)))

    def test_order_number_out_of_sequence(self) -> None:
        """A well-formed record that does not continue the log (an order number skipped) stops the start."""
        log = Log()
        log.append_order(1, "Tux", 1, "k0")
        skipped = encode({"index": 1, "epoch": 1, "order": {"number": 2, "name": "Tux", "quantity": 1, "key": "k2"}})
        self.path.write_bytes(log.lines[0] + skipped)
        self.assertIn("record 2", str(self.assertRaises(CorruptJournal, open_journal, self.path)))

    def test_write_and_reopen(self) -> None:
        """Appends and truncations reach the file; reopening reads the same log."""
        journal = open_journal(self.path).file
        sizes = journal.write([("append", line) for line in self.log.lines])
        self.assertEqual(sizes[-1], len(self.data))
        self.assertEqual(journal.write([("truncate", self.log.offsets[3])]), [self.log.offsets[3]])
        journal.write([("append", self.log.lines[3])])
        journal.close()
        self.assertEqual(scan(self.path).lines, self.log.lines[:4])


class LogTests(SynchronousTestCase):
    """The in-memory log: numbering, keys, truncation, and where two logs part."""

    def test_numbering(self) -> None:
        """Records are indexed by position; orders are numbered without gaps, skipping leader records."""
        log = sample_log()
        self.assertEqual([r["index"] for r in log.records], [0, 1, 2, 3, 4])
        self.assertEqual(log.orders, [1, 2, 4])
        self.assertEqual([log.order_index(n) for n in (-1, 0, 1, 2, 3)], [None, 1, 2, 4, None])
        self.assertEqual(log.order(2), {"number": 2, "name": "Kite", "quantity": 5, "key": "k2"})
        self.assertIsNone(log.order(3))
        self.assertEqual(log.keys, {"k0": 0, "k1": 1, "k2": 2})
        self.assertEqual(log.last_epoch, 2)

    def test_rebuilt_from_lines(self) -> None:
        """A log rebuilt from its lines is the same log."""
        log = sample_log()
        again = Log(log.lines)
        self.assertEqual(
            (again.records, again.orders, again.keys, again.offsets), (log.records, log.orders, log.keys, log.offsets)
        )

    def test_appended_orders_as_peers_see_them(self) -> None:
        """A log that appends orders itself and one that receives their lines hold the same records and indexes."""
        log = sample_log()
        log.append_order(2, "Tux", 3, "k3", seq=7)
        log.append_order(2, "Fox", 1, "k4", seq=8)
        copy = Log()
        for line in log.lines:
            copy.append_line(line)
        self.assertEqual(
            (copy.lines, copy.orders, copy.keys, copy.runs(), copy.reconciled()),
            (log.lines, log.orders, log.keys, log.runs(), log.reconciled()),
        )
        self.assertRaises(ValueError, log.append_order, 2, "Tux", 1.0, "k5")
        self.assertEqual((len(log), log.order_count), (len(copy), copy.order_count))

    def test_append_line_checks_continuity(self) -> None:
        """A peer's line must be the next record of this log."""
        log = sample_log()
        copy = Log(log.lines[:3])
        self.assertRaises(ValueError, copy.append_line, log.lines[4])
        copy.append_line(log.lines[3])
        self.assertEqual(len(copy), 4)

    def test_append_line_checks_what_memory_keeps(self) -> None:
        """
        A well-formed line whose toy or quantity the log could not keep is
        refused whole: nothing of it is added, not even its key; at start it
        is a corrupt journal.
        """
        for field, bad in [
            ("quantity", 1.5),
            ("quantity", True),
            ("quantity", 1 << 63),
            ("name", None),
            ("name", ["a"]),
        ]:
            order = {"number": 0, "name": "Tux", "quantity": 1, "key": "k", field: bad}
            line = encode({"index": 0, "epoch": 1, "order": order})
            with self.subTest(field=field, bad=bad):
                log = Log()
                self.assertRaises(ValueError, log.append_line, line)
                self.assertEqual((len(log), log.order_count, log.may_hold("k")), (0, 0, False))
                path = Path(self.mktemp())
                path.write_bytes(line)
                self.assertRaises(CorruptJournal, open_journal, path)

    def test_truncate(self) -> None:
        """Truncation drops records, their orders and keys, and gives the new file size."""
        log = sample_log()
        self.assertEqual(log.truncate(2), len(log.lines[0]) + len(log.lines[1]))
        self.assertEqual((len(log), log.orders, log.keys), (2, [1], {"k0": 0}))
        log.append_order(3, "Whale", 1, "k9")
        self.assertEqual(log.order(1)["key"], "k9")

    def test_summaries(self) -> None:
        """Every order's toy and quantity stay answerable from memory, through appends, reloads and truncation."""
        log = sample_log()
        expected = [(o["name"], o["quantity"]) for o in (log.order(n) for n in range(log.order_count))]
        self.assertEqual([log.summary(n) for n in range(log.order_count)], expected)
        self.assertEqual(Log(log.lines).summary(1), expected[1])  # decoded from lines, as at a restart
        self.assertIsNone(log.summary(log.order_count))
        self.assertIsNone(log.summary(-1))
        log.truncate(2)
        self.assertEqual((log.summary(0), log.summary(1)), (expected[0], None))
        log.append_order(3, "Robot", 7, "k9")
        self.assertEqual(log.summary(1), ("Robot", 7))

    def test_runs(self) -> None:
        """runs() lists where each epoch starts."""
        self.assertEqual(sample_log().runs(), [[0, 1], [3, 2]])
        self.assertEqual(Log().runs(), [])

    def test_common_length(self) -> None:
        """Two logs share records up to the first index whose epochs differ."""
        leader = sample_log()
        same = Log(leader.lines[:4])
        self.assertEqual(leader.common_length(same.runs(), len(same)), 4)
        diverged = Log(leader.lines[:3])
        diverged.append_order(1, "Tux", 1, "old")  # index 3 written in epoch 1 by a leader that died
        diverged.append_order(1, "Tux", 1, "old2")
        self.assertEqual(leader.common_length(diverged.runs(), len(diverged)), 3)
        self.assertEqual(diverged.common_length(leader.runs(), len(leader)), 3)
        self.assertEqual(leader.common_length([], 0), 0)

    def test_reconciled(self) -> None:
        """The last leader record's seq, carried on by the orders after it up to the first gap."""
        log = Log()
        self.assertEqual(log.reconciled(), 0)
        log.append_order(1, "Tux", 1, "a", seq=1)
        log.append_leader(2, 1, reconciled=5)
        log.append_order(2, "Tux", 1, "b", seq=6)
        log.append_order(2, "Tux", 1, "c", seq=8)
        log.append_order(2, "Tux", 1, "d", seq=7)
        log.append_order(2, "Tux", 1, "e", seq=10)
        self.assertEqual(log.reconciled(), 8)
        log.append_order(2, "Tux", 1, "f")  # a record without seq changes nothing
        self.assertEqual(log.reconciled(), 8)
        log.append_leader(3, 2, reconciled=12)
        self.assertEqual(log.reconciled(), 12)
