"""
Tests for :mod:`toystore.contract`: the field parsers, and the agreement of
the message descriptions, ``docs/wire.rst`` and the services' handlers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from toystore import contract
from toystore.catalog.service import CatalogService
from toystore.contract import BUY, FIELDS, MESSAGES, RECONCILE, SYNC, Message, check_text
from toystore.envelope import BadRequest, loads
from toystore.frontend.service import FrontendService
from toystore.order.replica import Replica
from toystore.wire import WireProtocol

from .helpers import WIRE

WIRE_RST = Path(contract.__file__).parent.parent / "docs" / "wire.rst"

#: Which handler serves the messages of each lines port, and which handler (on
#: the connecting side) receives the pushes its owner sends.
OWNERS = {"catalog": CatalogService, "order": Replica}
CONNECTING = {"catalog": FrontendService, "order": Replica}


class FieldTests(SynchronousTestCase):
    """Each field has one parser, and a wrong value is a 400 that names the field."""

    GOOD = {"name": "Tux", "quantity": 2, "key": "k", "epoch": 0}

    def test_buy(self) -> None:
        """A well-formed buy gives its fields in the description's order."""
        self.assertEqual(BUY.parse(self.GOOD), ("Tux", 2, "k", 0))

    def test_bad_fields(self) -> None:
        """Each bad field is a 400 naming it; booleans, floats and strings are not integers."""
        cases = [
            ({"name": None}, "'name'"),
            ({"name": ""}, "'name'"),
            ({"name": "x" * 101}, "at most 100 printable characters"),
            ({"name": "T\nux"}, "printable"),
            ({"quantity": 0}, "'quantity' must be an integer from 1"),
            ({"quantity": -1}, "'quantity'"),
            ({"quantity": True}, "'quantity'"),
            ({"quantity": 2.0}, "'quantity'"),
            ({"quantity": "2"}, "'quantity'"),
            ({"quantity": 10**9}, "'quantity'"),
            ({"key": 5}, "'key'"),
            ({"key": "k" * 201}, "'key'"),
            ({"epoch": -1}, "'epoch'"),
            ({"epoch": None}, "'epoch'"),
            ({"epoch": 2**63}, "'epoch'"),
        ]
        for change, words in cases:
            with self.subTest(change=change):
                error = self.assertRaises(BadRequest, BUY.parse, {**self.GOOD, **change})
                self.assertIn(words, error.message)
        missing = {k: v for k, v in self.GOOD.items() if k != "key"}
        self.assertIn("'key'", self.assertRaises(BadRequest, BUY.parse, missing).message)

    def test_optional_field(self) -> None:
        """A reconcile's limit is optional, with its default; when given it is checked."""
        self.assertEqual(RECONCILE.parse({"epoch": 2, "after": 5}), (2, 5, contract.DEFAULT_RECONCILE))
        self.assertEqual(RECONCILE.parse({"epoch": 2, "after": 5, "limit": 3}), (2, 5, 3))
        for bad in ({"after": 5}, {"epoch": 2}, {"epoch": 2, "after": -1}, {"epoch": 2, "after": 0, "limit": 0}):
            with self.subTest(bad=bad):
                self.assertRaises(BadRequest, RECONCILE.parse, bad)

    def test_runs(self) -> None:
        """A log summary's runs are [index, epoch] pairs of integers."""
        good = {"replica": 1, "epoch": 7, "length": 12, "runs": [[0, 1], [5, 7]]}
        self.assertEqual(SYNC.parse(good), (1, 7, 12, [[0, 1], [5, 7]]))
        for runs in ([[0]], [[0, "1"]], [[0, True]], "[[0, 1]]", [None]):
            with self.subTest(runs=runs):
                error = self.assertRaises(BadRequest, SYNC.parse, {**good, "runs": runs})
                self.assertIn("'runs'", error.message)

    def test_text_from_outside_a_message(self) -> None:
        """A name from a URL or a key from a header is checked as the same field would be."""
        self.assertEqual(check_text("Tux", "a product name", contract.MAX_NAME), "Tux")
        self.assertEqual(self.assertRaises(BadRequest, check_text, "", "a key", 5).message, "a key is required")
        error = self.assertRaises(BadRequest, check_text, "x\x00", "a key", 5)
        self.assertEqual(error.message, "a key has at most 5 printable characters")

    def test_every_field_has_a_parser(self) -> None:
        """Every field a message names is in the one table of parsers, and has a default when optional."""
        for message in MESSAGES:
            with self.subTest(message=message.type):
                self.assertLessEqual(set(message.fields), set(FIELDS))
                self.assertLessEqual(set(message.optional), set(message.fields))
                self.assertLessEqual(set(message.optional), set(contract.DEFAULTS))


# -- docs/wire.rst -------------------------------------------------------------------------

_SECTION = re.compile(r"^(?P<title>[^\n]+)\n-{3,}\n", re.M)
_PORTS = {"Catalog": "catalog", "Order replica": "order", "Any service": "any"}


def _top_keys(text: str, start: int) -> tuple[dict[str, str | None], int]:
    """
    The keys of the JSON-like object that opens at ``text[start]`` (as the
    document writes them: ``{"id", "type": "buy", "name": "Tux"}``), each
    with its value when that is a string, and where the object ends.
    Nested objects, lists and quoted text are skipped.
    """
    keys: dict[str, str | None] = {}
    depth, i, expect_key, last_key = 0, start, False, None
    while i < len(text):
        c = text[i]
        if c == '"':
            end = i + 1
            while text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            word = text[i + 1 : end]
            if depth == 1 and expect_key:
                keys[word], last_key, expect_key = None, word, False
            elif depth == 1 and last_key is not None and keys[last_key] is None:
                keys[last_key] = word
            i = end
        elif c in "{[":
            depth += 1
            expect_key = depth == 1 and c == "{"
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return keys, i
        elif c == "," and depth == 1:
            expect_key = True
        i += 1
    raise ValueError(f"unclosed object at {start}")


def documented() -> set[tuple[str, str, str, bool, frozenset[str]]]:
    """
    Every message line of ``docs/wire.rst``: (port, type, kind, sent by the
    connecting side, fields), read from each ``->`` or ``<-`` line whose
    object has a ``type``.
    """
    text = WIRE_RST.read_text(encoding="utf-8")
    sections = list(_SECTION.finditer(text))
    found = set()
    for n, section in enumerate(sections):
        port = next((p for title, p in _PORTS.items() if section["title"].startswith(title)), None)
        if port is None:
            continue
        body = text[section.end() : sections[n + 1].start() if n + 1 < len(sections) else len(text)]
        for arrow in re.finditer(r"(->|<-) \{", body):
            keys, _ = _top_keys(body, arrow.end() - 1)
            if "type" in keys:
                fields = frozenset(keys) - {"id", "type"}
                kind = "request" if "id" in keys else "push"
                found.add((port, keys["type"], kind, arrow[1] == "->", fields))
    return found


def described(messages: tuple[Message, ...] = MESSAGES) -> set[tuple[str, str, str, bool, frozenset[str]]]:
    """The same for the contract's descriptions."""
    return {(m.port, m.type, m.kind, m.inbound, frozenset(m.fields)) for m in messages}


def handled() -> set[tuple[str, str, str, bool]]:
    """
    Every message the services' handlers serve, (port, type, kind, sent by
    the connecting side): ``call_<type>`` and ``push_<type>`` of the port's
    owner, and ``push_<type>`` of the connecting side for the pushes the
    owner sends (when one class is both, the contract says which way a push
    goes).
    """
    inbound = {(m.port, m.type): m.inbound for m in MESSAGES if m.kind == "push"}
    found = set()
    for port, owner in OWNERS.items():
        for name in dir(owner):
            if name.startswith("call_") and name != "call_finished":
                found.add((port, name[5:], "request", True))
            elif name.startswith("push_") and inbound.get((port, name[5:]), True):
                found.add((port, name[5:], "push", True))
        for name in dir(CONNECTING[port]):
            if name.startswith("push_") and not inbound.get((port, name[5:]), False):
                found.add((port, name[5:], "push", False))
    return found


class WireDocumentTests(SynchronousTestCase):
    """``docs/wire.rst``, the contract and the handlers list the same messages."""

    def test_the_document_reads_as_expected(self) -> None:
        """The reader of the document finds every message with its fields (a check on the reader itself)."""
        lines = documented()
        self.assertIn(("catalog", "buy", "request", True, frozenset({"name", "quantity", "key", "epoch"})), lines)
        self.assertIn(("catalog", "invalidate", "push", False, frozenset({"names", "reason"})), lines)
        self.assertIn(("order", "records", "push", False, frozenset({"epoch", "start", "lines"})), lines)
        self.assertIn(("any", "ping", "request", True, frozenset()), lines)

    def test_document_and_contract_agree(self) -> None:
        """Every message documented is described with the same fields, and every one described is documented."""
        doc, contract_ = documented(), described()
        self.assertEqual(sorted(doc - contract_), [], "documented in docs/wire.rst but not in toystore.contract")
        self.assertEqual(sorted(contract_ - doc), [], "in toystore.contract but not documented in docs/wire.rst")

    def test_handlers_and_contract_agree(self) -> None:
        """Each service serves exactly the messages of its port: no handler for an undescribed message."""
        served = {(m.port, m.type, m.kind, m.inbound) for m in MESSAGES if m.port != "any"}
        self.assertEqual(sorted(handled() - served), [], "a handler serves a message the contract does not describe")
        self.assertEqual(sorted(served - handled()), [], "the contract describes a message no handler serves")

    def test_an_undocumented_message_is_caught(self) -> None:
        """A message added to the contract (and its handler) but not to the document shows in the comparison."""
        extra = Message("refund", "catalog", "request", ("key",))
        self.assertEqual(
            described((*MESSAGES, extra)) - documented(), {("catalog", "refund", "request", True, frozenset({"key"}))}
        )

    def test_every_port_serves_the_common_messages(self) -> None:
        """The messages of any lines port are served by the wire itself, whatever the handler."""
        connection = WireProtocol(object(), Clock(), WIRE)
        transport = StringTransport()
        connection.makeConnection(transport)
        for n, message in enumerate(m for m in MESSAGES if m.port == "any"):
            with self.subTest(type=message.type):
                fields: dict[str, Any] = {name: "x" for name in message.fields}
                transport.clear()
                connection.lineReceived(
                    b'{"id":%d,"type":"%s"%s}'
                    % (
                        n,
                        message.type.encode(),
                        b"".join(b',"%s":"%s"' % (k.encode(), v.encode()) for k, v in fields.items()),
                    )
                )
                reply = loads(transport.value().strip())
                self.assertEqual((reply["id"], "data" in reply), (n, True), reply)
