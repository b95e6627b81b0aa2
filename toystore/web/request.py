"""
The request of a toystore HTTP port, and its body: a body larger than the
site's ``max_body`` is dropped as it arrives (never buffered) and answered
with a JSON 413 before any resource sees it; a body is never parsed as an
HTML form (resources read it as JSON); ``GET *`` gets a JSON 405.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.web.http import HTTPChannel
from twisted.web.server import Request

from ..envelope import ApiError
from .resource import write_error


class LimitedBody:
    """
    A request body that keeps at most ``limit`` bytes: beyond that it drops
    what arrives (nothing more is buffered) and remembers it was too large.
    """

    def __init__(self, limit: int, length: int | None) -> None:
        self.limit = limit
        self.too_large = length is not None and length > limit
        self._buffer = io.BytesIO()

    def write(self, data: bytes) -> None:
        if self.too_large:
            return
        if self._buffer.tell() + len(data) > self.limit:
            self.too_large = True
            self._buffer = io.BytesIO()
            return
        self._buffer.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._buffer.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        return self._buffer.read(size)

    def tell(self) -> int:
        return self._buffer.tell()

    def close(self) -> None:
        self._buffer.close()


class LimitedRequest(Request):
    """
    A request whose over-long body is answered with a JSON 413 before any
    resource sees it.  Bodies are JSON, read by the resources: twisted.web
    is not asked to parse them as HTML form submissions (which cost a MIME
    header parse per POST).
    """

    def __init__(self, channel: HTTPChannel, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(channel, *args, **kwargs)

    def process(self) -> None:
        if self.path == b"*" and self.method != b"OPTIONS":
            # Twisted's own answer to ``GET *`` is a 405 without a body.
            self.setHeader(b"allow", b"OPTIONS")
            self.write(write_error(self, ApiError("only OPTIONS may ask for *", 405)))
            self.finish()
            return
        if getattr(self.content, "too_large", False):
            self.setHeader(b"connection", b"close")
            limit = self.content.limit
            self.write(write_error(self, ApiError(f"request body larger than {limit} bytes", 413)))
            self.finish()
            return
        super().process()
