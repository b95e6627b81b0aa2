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
from toystore.contract import (
    APPEND,
    APPENDED,
    BUY,
    FIELDS,
    GET,
    HANDOVER,
    MESSAGES,
    ORDER,
    RECONCILE,
    VOTE,
    VOTED,
    Message,
    check_text,
)
from toystore.envelope import BadRequest, loads
from toystore.frontend.service import FrontendService
from toystore.order.replica import Replica
from toystore.wire import WireProtocol

from .helpers import WIRE

WIRE_RST = Path(contract.__file__).parent.parent / "docs" / "wire.rst"

#: A replica list's digest, as every protocol message carries it.
DIGEST = "d749a7d5d4f60ed5"
#: An append with no records (a heartbeat).
APPEND_FIELDS: dict[str, Any] = {
    "epoch": 8,
    "replica": 2,
    "digest": DIGEST,
    "start": 12,
    "prev_epoch": 7,
    "runs": [],
    "lines": [],
    "commit": 12,
    "round": 3,
}

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
        """An append's runs are [index, epoch] pairs of integers; its lines are strings."""
        good = dict(APPEND_FIELDS, runs=[[12, 7], [13, 8]], lines=["a", "b"])
        self.assertEqual(APPEND.parse(good), (8, 2, DIGEST, 12, 7, [[12, 7], [13, 8]], ["a", "b"], 12, 3))
        self.assertEqual(APPEND.parse(APPEND_FIELDS)[5:7], ([], []), "a heartbeat: no runs, no lines")
        for runs in ([[0]], [[0, 1, 2]], [[0, "1"]], [[0, True]], [[0, 1.0]], "[[0, 1]]", [None], None):
            with self.subTest(runs=runs):
                error = self.assertRaises(BadRequest, APPEND.parse, {**good, "runs": runs})
                self.assertIn("'runs'", error.message)
        for lines in (["a", 1], "a", [None], None):
            with self.subTest(lines=lines):
                error = self.assertRaises(BadRequest, APPEND.parse, {**good, "lines": lines})
                self.assertIn("'lines'", error.message)

    def test_protocol_messages(self) -> None:
        """Each push between replicas gives its fields in the description's order."""
        common: dict[str, Any] = {"epoch": 8, "replica": 2, "digest": DIGEST}
        vote: dict[str, Any] = {**common, "last_epoch": 7, "length": 12, "pre": True, "handover": False}
        self.assertEqual(VOTE.parse(vote), (8, 2, DIGEST, 7, 12, True, False))
        self.assertEqual(VOTED.parse({**common, "granted": False, "pre": True}), (8, 2, DIGEST, False, True))
        appended = {**common, "accepted": True, "length": 13, "last_epoch": 7, "round": 3, "voter": False}
        self.assertEqual(APPENDED.parse(appended), (8, 2, DIGEST, True, 13, 7, 3, False))
        self.assertEqual(HANDOVER.parse(common), (8, 2, DIGEST))
        for message, fields in [(VOTE, vote), (HANDOVER, common)]:
            change: dict[str, Any]
            for change in ({"digest": ""}, {"digest": "d" * 65}, {"digest": 5}, {"replica": -1}, {"epoch": "8"}):
                with self.subTest(type=message.type, change=change):
                    name = next(iter(change))
                    error = self.assertRaises(BadRequest, message.parse, {**fields, **change})
                    self.assertIn(repr(name), error.message)

    def test_flags_are_booleans(self) -> None:
        """A flag is JSON true or false: not 0 or 1, a string or null, and never left out unless optional."""
        common: dict[str, Any] = {"epoch": 8, "replica": 2, "digest": DIGEST}
        cases: list[tuple[Message, dict[str, Any], tuple[str, ...]]] = [
            (VOTE, {**common, "last_epoch": 7, "length": 12, "pre": False, "handover": False}, ("pre", "handover")),
            (VOTED, {**common, "granted": True, "pre": False}, ("granted", "pre")),
            (
                APPENDED,
                {**common, "accepted": False, "length": 0, "last_epoch": 0, "round": 0, "voter": True},
                ("accepted", "voter"),
            ),
            (ORDER, {"name": "Tux", "quantity": 1, "key": "k", "relayed": True}, ("relayed",)),
            (GET, {"number": 0, "relayed": False}, ("relayed",)),
        ]
        for message, good, flags in cases:
            message.parse(good)
            for flag in flags:
                bad: Any
                for bad in (0, 1, "true", "false", None, [], 1.0):
                    with self.subTest(type=message.type, flag=flag, value=bad):
                        error = self.assertRaises(BadRequest, message.parse, {**good, flag: bad})
                        self.assertEqual(error.message, f"field {flag!r} must be true or false, not {bad!r}")
                if flag not in message.optional:
                    with self.subTest(type=message.type, missing=flag):
                        missing = {k: v for k, v in good.items() if k != flag}
                        self.assertIn(repr(flag), self.assertRaises(BadRequest, message.parse, missing).message)

    def test_relayed_is_optional(self) -> None:
        """An order or a read from the front-end leaves ``relayed`` out (false); a replica that relays says true."""
        order = {"name": "Tux", "quantity": 2, "key": "k"}
        self.assertEqual(ORDER.parse(order), ("Tux", 2, "k", False))
        self.assertEqual(ORDER.parse({**order, "relayed": True}), ("Tux", 2, "k", True))
        self.assertEqual(GET.parse({"number": 4}), (4, False))
        self.assertEqual(GET.parse({"number": 4, "relayed": True}), (4, True))
        self.assertEqual(contract.DEFAULTS["relayed"], False)

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
        append = {"epoch", "replica", "digest", "start", "prev_epoch", "runs", "lines", "commit", "round"}
        self.assertIn(("order", "append", "push", True, frozenset(append)), lines)
        self.assertIn(("order", "order", "request", True, frozenset({"name", "quantity", "key", "relayed"})), lines)
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
