"""
What the services agree on: the limits of each field, the one parser of each
field, and the shape of every message of the internal wire.

The services meet only here and on the wire (``docs/architecture.rst``, "Who
may import what"): the catalog, the order replicas and the front-end each
import this module, never each other.  ``docs/wire.rst`` documents every
message in :data:`MESSAGES`, with its replies; a unit test
(``tests/unit/test_contract.py``) holds the two and the services' handlers
to each other, so a message cannot be added, dropped or changed in one place
only.

A field has one name and one meaning wherever it travels: ``epoch`` is the
same check in a buy, a reconcile and every message between replicas.
:func:`parse` checks one field of a message by its name (:data:`FIELDS`);
:meth:`Message.parse` checks every field of a message and returns their
values in its order.  A wrong field is a
:class:`~toystore.envelope.BadRequest` (400) that names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .envelope import BadRequest

#: The longest toy name, in characters.
MAX_NAME = 100
#: The longest idempotency key, in characters.
MAX_KEY = 200
#: The most of one toy that one buy or order can take.
MAX_QUANTITY = 1_000_000
#: The largest epoch, sequence number, order number, log length or replica id.
MAX_COUNT = 2**62
#: The most buys one ``reconcile`` call lists, and how many when it does not say.
MAX_RECONCILE, DEFAULT_RECONCILE = 5000, 1000


# -- checks by kind ------------------------------------------------------------------


def text_field(message: dict[str, Any], name: str, longest: int) -> str:
    """
    The field ``name`` of a message: a non-empty string of at most
    ``longest`` printable characters.

    :raises BadRequest: naming the field.
    """
    value = message.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"field {name!r} must be a non-empty string, not {value!r}")
    if len(value) > longest or not value.isprintable():
        raise BadRequest(f"field {name!r} must have at most {longest} printable characters")
    return value


def int_field(message: dict[str, Any], name: str, low: int, high: int) -> int:
    """
    The field ``name`` of a message: a JSON integer (not a bool, float or
    string) from ``low`` to ``high``.

    :raises BadRequest: naming the field.
    """
    value = message.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"field {name!r} must be an integer from {low} to {high}, not {value!r}")
    return value


def list_field(message: dict[str, Any], name: str) -> list[Any]:
    """
    The field ``name`` of a message: a JSON array (its items are the caller's
    to check).

    :raises BadRequest: naming the field.
    """
    value = message.get(name)
    if not isinstance(value, list):
        raise BadRequest(f"field {name!r} must be a list, not {value!r}")
    return value


def check_text(value: str, what: str, longest: int) -> str:
    """
    ``value``, a name or key that came from outside a message (a URL path,
    an HTTP header), checked as :func:`text_field` checks a field.

    :param what: how the error names it ("a product name").
    """
    if not value:
        raise BadRequest(f"{what} is required")
    if len(value) > longest or not value.isprintable():
        raise BadRequest(f"{what} has at most {longest} printable characters")
    return value


# -- the fields ----------------------------------------------------------------


def _count(message: dict[str, Any], name: str) -> int:
    return int_field(message, name, 0, MAX_COUNT)


def _runs(message: dict[str, Any], name: str) -> list[list[int]]:
    runs = list_field(message, name)
    if not all(isinstance(r, list) and len(r) == 2 and all(type(x) is int for x in r) for r in runs):
        raise BadRequest(f"field {name!r} must be a list of [index, epoch] pairs")
    return runs


def _flag(message: dict[str, Any], name: str) -> bool:
    value = message.get(name)
    if not isinstance(value, bool):
        raise BadRequest(f"field {name!r} must be true or false, not {value!r}")
    return value


def _strings(message: dict[str, Any], name: str) -> list[str]:
    items = list_field(message, name)
    if not all(isinstance(item, str) for item in items):
        raise BadRequest(f"field {name!r} must be a list of strings")
    return items


#: Every field of the wire by name, with its check: ``check(message, name)``.
FIELDS: dict[str, Callable[[dict[str, Any], str], Any]] = {
    "name": lambda m, n: text_field(m, n, MAX_NAME),  # a toy
    "key": lambda m, n: text_field(m, n, MAX_KEY),  # an idempotency key
    "quantity": lambda m, n: int_field(m, n, 1, MAX_QUANTITY),
    "epoch": _count,  # a leader's term
    "after": _count,  # a catalog buy's seq
    "limit": lambda m, n: int_field(m, n, 1, MAX_RECONCILE),
    "leader": _count,  # a replica id
    "replica": _count,  # a replica id
    "number": _count,  # an order number
    "length": _count,  # a count of log records
    "start": _count,  # an index in the log
    "runs": _runs,  # [index, epoch] where each epoch starts in a log (or in the records of an append)
    "last_epoch": _count,  # the epoch of the last record of a log
    "prev_epoch": _count,  # the epoch of the record before an append's first
    "commit": _count,  # a leader's commit point: records committed
    "round": _count,  # a leader's heartbeat round
    "digest": lambda m, n: text_field(m, n, 64),  # of the replica list in the cluster file
    "pre": _flag,  # a pre-vote
    "handover": _flag,  # a campaign the leader asked for
    "granted": _flag,
    "accepted": _flag,
    "voter": _flag,  # its copies count toward a commit
    "relayed": _flag,  # passed on by a replica that does not lead
    "lines": _strings,  # log records as their lines
    "names": _strings,  # toy names
    "reason": lambda m, n: text_field(m, n, 64),
    "secret": lambda m, n: m[n] if isinstance(m.get(n), str) else "",  # anything else gives no secret
}

#: The value a message takes for an optional field it leaves out.
DEFAULTS: dict[str, Any] = {"limit": DEFAULT_RECONCILE, "relayed": False}


def parse(message: dict[str, Any], name: str) -> Any:
    """The field ``name`` of ``message``, checked by its one parser in :data:`FIELDS`."""
    return FIELDS[name](message, name)


# -- the messages ----------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """
    One message of the internal wire.

    :ivar type: its ``type``, which names the handler method that serves it
        (``call_<type>`` for a request, ``push_<type>`` for a push).
    :ivar port: whose lines port it travels on: ``"catalog"``, ``"order"``,
        or ``"any"`` for what every lines port serves.
    :ivar kind: ``"request"`` (it has an id and gets one reply) or ``"push"``.
    :ivar inbound: whether the side that connects sends it (``->`` in
        ``docs/wire.rst``), as opposed to the port's owner (``<-``).
    :ivar fields: its fields, in the order :meth:`parse` returns them.
    :ivar optional: the fields it may leave out (their value then is in
        :data:`DEFAULTS`).
    """

    type: str
    port: str
    kind: str
    fields: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    inbound: bool = True

    def parse(self, message: dict[str, Any]) -> tuple[Any, ...]:
        """
        Check every field of ``message`` and return their values, in the
        order of :attr:`fields`.

        :raises BadRequest: naming the first field that is missing or wrong.
        """
        return tuple(
            DEFAULTS[name] if name in self.optional and name not in message else FIELDS[name](message, name)
            for name in self.fields
        )


QUERY = Message("query", "catalog", "request", ("name",))
LIST = Message("list", "catalog", "request")
BUY = Message("buy", "catalog", "request", ("name", "quantity", "key", "epoch"))
RECONCILE = Message("reconcile", "catalog", "request", ("epoch", "after", "limit"), optional=("limit",))
SUBSCRIBE = Message("subscribe", "catalog", "request")
INVALIDATE = Message("invalidate", "catalog", "push", ("names", "reason"), inbound=False)

STATUS = Message("status", "order", "request")
ORDER = Message("order", "order", "request", ("name", "quantity", "key", "relayed"), optional=("relayed",))
GET = Message("get", "order", "request", ("number", "relayed"), optional=("relayed",))
VOTE = Message("vote", "order", "push", ("epoch", "replica", "digest", "last_epoch", "length", "pre", "handover"))
VOTED = Message("voted", "order", "push", ("epoch", "replica", "digest", "granted", "pre"))
APPEND = Message(
    "append", "order", "push", ("epoch", "replica", "digest", "start", "prev_epoch", "runs", "lines", "commit", "round")
)
APPENDED = Message(
    "appended", "order", "push", ("epoch", "replica", "digest", "accepted", "length", "last_epoch", "round", "voter")
)
HANDOVER = Message("handover", "order", "push", ("epoch", "replica", "digest"))

PING = Message("ping", "any", "request")
AUTH = Message("auth", "any", "request", ("secret",))

#: Every message of the internal wire, as ``docs/wire.rst`` lists them.
MESSAGES: tuple[Message, ...] = (
    QUERY,
    LIST,
    BUY,
    RECONCILE,
    SUBSCRIBE,
    INVALIDATE,
    STATUS,
    ORDER,
    GET,
    VOTE,
    VOTED,
    APPEND,
    APPENDED,
    HANDOVER,
    PING,
    AUTH,
)
