"""
The lines of the order log: one checksummed JSON record each.

Every line is ``<crc32 of the JSON, 8 hex digits> <JSON>\\n`` with the JSON
encoded deterministically (sorted keys, no spaces), so that replicas holding
the same records hold byte-identical files.  Records are numbered by their
position, ``index`` 0, 1, 2, ..., and carry the ``epoch`` of the leader that
wrote them.  Two kinds exist::

    {"epoch": 2, "index": 7, "order": {"key": "k", "name": "Tux", "number": 5, "quantity": 2, "seq": 41}}
    {"epoch": 3, "index": 8, "leader": 3, "reconciled": 41}

An *order* record holds one order; order numbers count order records only,
so they run 0, 1, 2, ... without gaps; ``seq`` numbers the catalog's buy
of it.  A *leader* record ends each leader's start: a new leader commits one
before it serves, which also commits every record before it
(:mod:`toystore.order.commitment` says why).  Its ``reconciled`` says that
every buy the catalog made up to that seq is an order of this log
(:mod:`toystore.order.reconcile`).

The log in memory is :mod:`toystore.order.log`, its file
:mod:`toystore.order.journal`.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from ..envelope import BadRequest, dumps, loads


class CorruptJournal(Exception):
    """A record that is not the torn tail of the file is bad."""


def encode(record: dict[str, Any]) -> bytes:
    """The line of ``record``: checksum, space, deterministic JSON, newline."""
    body = dumps(record)
    return b"%08x %s\n" % (zlib.crc32(body), body)


def order_line(epoch: int, index: int, number: int, name: str, quantity: int, key: str, seq: int | None) -> bytes:
    """
    The line of an order record: the bytes :func:`encode` gives for
    ``{"epoch", "index", "order": {"key", "name", "number", "quantity",
    "seq"}}``, written out directly (a leader writes one per order).

    :raises ValueError: when a number is not an int or a text not a str.
    """
    if seq is not None and type(seq) is not int:
        raise ValueError("an order's seq must be an integer")
    if not (type(epoch) is type(index) is type(number) is type(quantity) is int):
        raise ValueError("an order's epoch, index, number and quantity must be integers")
    if type(name) is not str or type(key) is not str:
        raise ValueError("an order's name and key must be strings")
    body = _ORDER % (epoch, index, _quote(key), _quote(name), number, quantity, "" if seq is None else f',"seq":{seq}')
    data = body.encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(data), data)


#: An order record's JSON, keys sorted as :func:`~toystore.envelope.dumps` sorts them.
_ORDER = '{"epoch":%d,"index":%d,"order":{"key":%s,"name":%s,"number":%d,"quantity":%d%s}}'
#: How json quotes a string when it keeps non-ASCII characters (``ensure_ascii=False``, as dumps does).
_quote = json.encoder.encode_basestring


def decode(line: bytes) -> dict[str, Any]:
    """
    The record of one line (with or without its newline).

    :raises ValueError: when the checksum, the JSON or the shape is wrong.
    """
    line = line.rstrip(b"\n")
    crc, space, body = line.partition(b" ")
    if not space or len(crc) != 8:
        raise ValueError("no checksum")
    try:
        expected = int(crc, 16)
    except ValueError:
        raise ValueError("checksum is not hexadecimal") from None
    if zlib.crc32(body) != expected:
        raise ValueError("checksum mismatch")
    try:
        record = loads(body)
    except BadRequest as e:
        raise ValueError(e.message) from None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("index"), int)
        or not isinstance(record.get("epoch"), int)
    ):
        raise ValueError("not a record")
    return record


def record_of(line: bytes) -> dict[str, Any]:
    """
    The record of a line already checked (by :func:`decode`, or by
    :class:`~toystore.order.journal.JournalReader` on its way from the
    disk): no checks again, plain ``json.loads`` after the checksum.
    """
    return json.loads(line[9:].decode("utf-8"))  # from str: json's own bytes decoding is slower


def check_record(record: dict[str, Any], index: int, number: int) -> None:
    """Raise ValueError unless ``record`` can be record ``index`` of a log holding ``number`` orders."""
    if record["index"] != index:
        raise ValueError(f"record index {record['index']} where {index} was expected")
    order = record.get("order")
    if order is not None:
        if not isinstance(order, dict) or not isinstance(order.get("key"), str):
            raise ValueError("an order record without a key")
        if order.get("number") != number or type(order["number"]) is not int:
            raise ValueError(f"order number {order.get('number')!r} where {number} was expected")
        if "seq" in order and type(order["seq"]) is not int:
            raise ValueError("an order's seq must be an integer")
        # What the log keeps in memory of every order: checked here, so that adding it cannot fail halfway.
        if type(order.get("name")) is not str:
            raise ValueError("an order's name must be a string")
        quantity = order.get("quantity")
        if type(quantity) is not int or not -(1 << 63) <= quantity < 1 << 63:
            raise ValueError("an order's quantity must be a 64-bit integer")
    elif "leader" in record and type(record.get("reconciled", 0)) is not int:
        raise ValueError("a leader record's reconciled must be an integer")
