"""
The one place toystore touches a private name of Twisted.

Everywhere else toystore uses Twisted's public API only.  Each entry below
says what it touches, why no public API does the job (and which public API
was checked), and who uses it.  ``tests/unit/test_twisted_compat.py`` has a
test per entry that names the attribute and fails, naming the Twisted
version, when a release removes or changes it; ``setup.py`` bounds Twisted
below the next calendar-year release those tests have not passed on.

1. ``twisted.web.http.HTTPChannel._respondToBadRequestAndDisconnect``,
   overridden by :class:`BadRequestHook`.  HTTPChannel calls it for every
   request it cannot parse (a bad request line, header or chunk, too many or
   too long headers) and writes a bare 400 with no body; toystore answers
   with a JSON error instead (:mod:`toystore.web.channel`).  The channel's
   public API has no hook for it: ``lineLengthExceeded`` covers one case
   only, and the failure happens before any ``Request`` exists, so neither
   ``Request.processingFailed`` nor the resource tree sees it.

2. ``twisted.protocols.basic.LineReceiver._buffer``, read by
   :func:`unparsed`.  The request deadline of :mod:`toystore.web.channel`
   starts at a request's first byte, also when those bytes came after the
   end of the previous request in one read and do not make a whole line
   yet.  LineReceiver's public API gives those bytes only by taking them
   (``clearLineBuffer``); ``lineReceived`` and ``rawDataReceived`` never see
   a partial line, and the channel's public ``requests`` holds a request
   only once its whole first line has come.

Relied on without naming a private: ``ClientService`` hands
``prepareConnection`` the protocol wrapped in a ``_ReconnectingProtocolProxy``
that forwards attribute access to it, as its documentation ("the protocol
... may call methods on the protocol") promises, and ``whenConnected`` (in
26.10) the protocol itself.  :class:`~toystore.wire.WireClient` reads the
``connection`` property of either to reach the
:class:`~toystore.wire.WireProtocol` itself, so it depends on neither form;
the tests check that ``connection`` reaches it through both.
"""

from __future__ import annotations

from twisted.protocols.basic import LineReceiver
from twisted.web.http import HTTPChannel


class BadRequestHook(HTTPChannel):
    """
    An HTTPChannel that answers a request Twisted cannot parse with its
    :meth:`bad_request` method (entry 1), for a subclass to override.
    """

    def bad_request(self) -> None:
        """Answer a request Twisted found malformed: by default as Twisted does, a bare 400, and close."""
        HTTPChannel._respondToBadRequestAndDisconnect(self)

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.bad_request()


def unparsed(receiver: LineReceiver) -> bytes:
    """The bytes ``receiver`` holds that are not a whole line yet (entry 2), without taking them."""
    return receiver._buffer
