"""
The HTTP channel of every toystore port: Nagle's algorithm off, JSON
answers to malformed requests, and a deadline for each request to arrive.

A request, headers and body, must arrive whole within ``request_timeout``
seconds of its first byte, or the client gets a JSON 408 and the connection
closes: that is how a client trickling bytes to hold a connection is seen
(the site's idle timeout cannot do it, since every byte resets it).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from .._twisted_compat import BadRequestHook, unparsed
from ..envelope import dumps, error_body
from ..wire import no_delay
from .resource import JSON

#: Seconds a 408 may take to leave before its connection is cut anyway.
CLOSE_GRACE = 1.0


class NoDelayHTTPChannel(BadRequestHook):
    """
    An HTTP/1.1 channel with Nagle's algorithm off (see
    :func:`toystore.wire.no_delay`) and a deadline for every request.

    A request, headers and body, must arrive whole within ``request_timeout``
    seconds of its first byte; otherwise the client gets a JSON 408 and the
    connection closes (cut :data:`CLOSE_GRACE` seconds later if the client
    does not read).  Site's idle timeout cannot do this: every byte resets it,
    so a client sending one byte every few seconds would hold the connection
    for ever.  The deadline does not run while a request is being answered;
    on a keep-alive connection each request gets a deadline of its own.

    A request Twisted cannot parse (request line, header, chunk) or whose
    line is too long gets a JSON 400 and the connection closes.

    :ivar request_timeout: seconds, or None for no deadline; set by
        :class:`~toystore.web.site.JSONSite`.
    """

    request_timeout: float | None = None
    #: The reactor's clock; set by :class:`~toystore.web.site.JSONSite`.
    seconds: Callable[[], float] = staticmethod(time.time)
    log = Logger()
    _deadline: IDelayedCall | None = None  # the one timer; it may run later than needed, never earlier
    _started: float | None = None  # when the request now arriving began; None between requests
    # Whether a request has arrived whole and is being answered: from allContentReceived
    # to requestDone on a keep-alive connection, for good on one that closes after it.
    _answering = False
    _grace: IDelayedCall | None = None  # cuts the connection CLOSE_GRACE s after a 408

    _host: Any = None
    _peer: Any = None

    def connectionMade(self) -> None:
        no_delay(self.transport)
        super().connectionMade()

    def getHost(self) -> Any:
        """This end's address, asked of the socket once (every Request asks: a system call each)."""
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def getPeer(self) -> Any:
        """The client's address, made once per connection rather than once per request."""
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def bad_request(self) -> None:
        """A request Twisted cannot parse, before any Request exists: a JSON 400, not Twisted's bare one."""
        self._write_raw_error(400, b"Bad Request", "malformed HTTP request")
        self.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        """A request line or header longer than ``MAX_LENGTH``: a JSON 400, not a silent close."""
        self.bad_request()

    def dataReceived(self, data: bytes) -> None:
        if not self._answering:
            self._start_deadline()  # the first byte of a request
        super().dataReceived(data)
        # A request may have ended inside ``data`` and the next one begun:
        # a partial line, or a request line and some headers, are left over.
        if not self._answering and (self.requests or unparsed(self)):
            self._start_deadline()

    def allContentReceived(self) -> None:
        self._started = None
        self._answering = True
        super().allContentReceived()

    def requestDone(self, request: Request) -> None:
        if self.persistent:
            # Before Twisted replays the bytes it held back meanwhile (the
            # next request's) through dataReceived.
            self._answering = False
        super().requestDone(request)

    def connectionLost(self, reason: Failure) -> None:
        self._started = None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        super().connectionLost(reason)

    def _write_raw_error(self, code: int, reason: bytes, message: str) -> None:
        """A JSON error reply written straight to the transport, for when there is no Request to answer it."""
        body = dumps(error_body(code, message))
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncache-control: no-store\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (code, reason, JSON, len(body), body)
        )

    def _start_deadline(self) -> None:
        """
        A request begins.  Keep-alive connections send request after request,
        so the timer is not made and cancelled for each: one timer runs, and
        when it fires it moves itself to the deadline of the request then
        arriving, if that one is not late yet (:meth:`_check_deadline`).
        """
        if self._started is not None or self.request_timeout is None or self.transport.disconnecting:
            return
        self._started = self.seconds()
        if self._deadline is None:
            self._deadline = self.callLater(self.request_timeout, self._check_deadline)

    def _check_deadline(self) -> None:
        self._deadline = None
        if self._started is None or self.request_timeout is None:
            return  # between requests: the next one starts a timer
        left = self._started + self.request_timeout - self.seconds()
        if left > 1e-6:  # (a microsecond for rounding)
            self._deadline = self.callLater(left, self._check_deadline)
            return
        self._too_slow()

    def _too_slow(self) -> None:
        if self.transport.disconnecting:
            # Already closing (after a 400, say) and the client is not reading.
            self.transport.abortConnection()
            return
        timeout = self.request_timeout
        self.log.info(
            "dropping {peer}: no whole request within {timeout} s", peer=self.transport.getPeer(), timeout=timeout
        )
        self._write_raw_error(408, b"Request Timeout", f"request not received within {timeout} s")
        self._grace = self.callLater(CLOSE_GRACE, self.forceAbortClient)  # connectionLost cancels it
        self.loseConnection()
