"""
The internal wire: JSON lines over persistent TCP connections.

Every call, push and stream between toystore services travels here.  A
connection carries one JSON object per line (``\\n``-terminated, UTF-8, at
most ``wire.max_line`` bytes).  Three kinds of line share it::

    request  {"id": 7, "type": "buy", ...fields}        expects one reply
    reply    {"id": 7, "data": {...}}                    success
             {"id": 7, "error": {"code": 409, "message": "..."}}
    push     {"type": "invalidate", ...fields}           no id, no reply

Either side may send requests; replies may come in any order, matched by
``id`` (an integer or string chosen by the caller), so many calls share one
connection at once.  ``id`` and ``type`` are reserved: no message uses them
as fields of its own.  Bad input (invalid JSON, a line that is not an object, an
unknown type, a missing field) is answered with an error reply, with
``"id": null`` when the line had no usable id; a line longer than the limit
is answered with an error and the connection is closed, since its framing is
lost.  Error codes are HTTP status codes (see :mod:`toystore.envelope`).

Every message (its fields, its reply, its errors) is documented in
``docs/wire.rst``; a new message is added there together with its handler.
Every lines port answers ``ping`` with ``{"pong": true}``.

With a cluster secret (``wire.secret``) the accepting side of a connection
serves nothing until the first line, an ``auth`` call, has carried it (else:
401 and the connection closed); the connecting side sends it with
:meth:`WireProtocol.authenticate`, as :class:`WireClient` does by itself.

Using it
========

A server is a :class:`WireFactory` around a *handler*: request ``type`` T calls
``handler.call_T(message, connection)``, which returns the reply's ``data``
(or a Deferred or coroutine of it, or a :class:`Reply` to act right after
the reply is sent) or raises :class:`ApiError`; push T calls
``handler.push_T(message, connection)``.  The optional hooks
``connection_made(connection)`` and ``connection_lost(connection, reason)``
tell the handler about connections, and ``call_finished(type, outcome,
seconds)`` about every request and push served (outcome ``"ok"`` or the error
code), for metrics.  A client is a :class:`WireClient`: a
reconnecting connection (``ClientService`` with backoff) whose ``call`` fails
with :class:`Unavailable` subclasses when the peer cannot be reached, does
not answer in time, or drops the connection with the call pending.  A call
made with ``encoded=True`` gets the reply's success envelope as the bytes the
peer sent, not decoded, for a caller that only passes them on.

The modules, one concern each
=============================

- :mod:`~toystore.wire.framing`: the line protocol (``\\n``-terminated lines
  of at most ``wire.max_line`` bytes, sending a message), and :func:`no_delay`;
- :mod:`~toystore.wire.calls`: the calls a connection makes (ids, pending
  calls, the one timer of their deadlines, replies, ``encoded=True``);
- :mod:`~toystore.wire.dispatch`: requests and pushes served by the handler's
  methods, their answers and ``call_finished``; :class:`Reply`;
- :mod:`~toystore.wire.admission`: the cluster secret (the ``auth`` call);
- :mod:`~toystore.wire.stall`: dropping a peer that stops reading;
- :mod:`~toystore.wire.protocol`: :class:`WireProtocol`, which composes them,
  and :class:`WireFactory`;
- :mod:`~toystore.wire.client`: :class:`WireClient`, the reconnecting client.
"""

from .calls import CallTimeout, ConnectionDropped, NotConnected
from .client import WireClient
from .dispatch import Reply
from .framing import no_delay
from .protocol import WireFactory, WireProtocol

__all__ = [
    "CallTimeout",
    "ConnectionDropped",
    "NotConnected",
    "Reply",
    "WireClient",
    "WireFactory",
    "WireProtocol",
    "no_delay",
]
