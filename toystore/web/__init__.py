"""
HTTP with JSON envelopes, and the operator endpoints every service serves.

:class:`JSONResource` is the adapter between twisted.web and toystore
handlers: a subclass defines ``json_GET(request)`` (``json_POST``, ...) that
returns the reply's ``data`` or raises :class:`~toystore.envelope.ApiError`,
and the adapter writes ``{"data": ...}`` or ``{"error": ...}`` with the
matching status; no traceback or HTML page ever reaches a client.
:func:`operator_root` builds the tree for ``GET /health`` and ``GET
/metrics``.  :func:`make_site` serves a tree on every toystore HTTP port,
public and operator alike, with limits against hostile clients: a body larger
than ``max_body`` is refused unread, a request must arrive whole within
``request_timeout`` seconds of its first byte (slow clients cannot hold
connections by trickling bytes), and an idle keep-alive connection closes
after ``idle_timeout`` seconds.

The modules, one concern each:

- :mod:`~toystore.web.resource`: JSON replies (:class:`JSONResource`,
  :class:`JSONTree`, :func:`write_json`, :func:`write_encoded`,
  :func:`write_error`);
- :mod:`~toystore.web.pages`: the operator pages (:func:`operator_root`);
- :mod:`~toystore.web.request`: the request and its bounded body (the 413);
- :mod:`~toystore.web.channel`: the HTTP channel (no Nagle, JSON 400s, the
  request deadline and its 408);
- :mod:`~toystore.web.site`: the Site of every port (:func:`make_site`).
"""

from .channel import CLOSE_GRACE, NoDelayHTTPChannel
from .pages import Health, Metrics, operator_root
from .request import LimitedBody, LimitedRequest
from .resource import (
    CLIENT_LEFT,
    JSON,
    JSONNotFound,
    JSONResource,
    JSONTree,
    write_encoded,
    write_error,
    write_json,
    write_not_allowed,
)
from .site import JSONSite, make_site

__all__ = [
    "CLIENT_LEFT",
    "CLOSE_GRACE",
    "JSON",
    "Health",
    "JSONNotFound",
    "JSONResource",
    "JSONSite",
    "JSONTree",
    "LimitedBody",
    "LimitedRequest",
    "Metrics",
    "NoDelayHTTPChannel",
    "make_site",
    "operator_root",
    "write_encoded",
    "write_error",
    "write_json",
    "write_not_allowed",
]
