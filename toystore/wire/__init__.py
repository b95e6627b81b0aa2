"""
The internal wire: JSON lines over persistent TCP connections.

Every call, push and stream between toystore services travels here.  What
a line is, its three kinds (request, reply, push) and every message are in
``docs/wire.rst``, the one place they are written down; why the wire is built
this way is in ``docs/architecture.rst`` ("The internal wire").

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
  calls, replies, ``encoded=True``) and the connection's one timer (their
  deadlines, the idle watch's looks);
- :mod:`~toystore.wire.dispatch`: requests and pushes served by the handler's
  methods, their answers and ``call_finished``; :class:`Reply`;
- :mod:`~toystore.wire.admission`: the cluster secret (the ``auth`` call);
- :mod:`~toystore.wire.idle`: keepalive pings, and closing a connection
  that hears nothing for ``wire.idle_timeout`` seconds (a half-open one);
- :mod:`~toystore.wire.stall`: dropping a peer that stops reading;
- :mod:`~toystore.wire.protocol`: :class:`WireProtocol`, which composes them,
  and :class:`WireFactory`;
- :mod:`~toystore.wire.client`: :class:`WireClient`, the reconnecting client,
  whose connection attempts give up after ``wire.connect_timeout`` seconds.
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
