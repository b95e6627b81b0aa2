"""
The JSON envelope every toystore reply travels in, and the errors behind it.

Success is ``{"data": {...}}``; failure is ``{"error": {"code": C, "message":
"..."}}`` where C is an HTTP status code, also on the internal wire, so that a
service can hand an error it received straight on to its own caller.

JSON is encoded compactly and deterministically (sorted keys, no spaces), and
decoded strictly: NaN and Infinity, duplicate keys and invalid UTF-8 are
refused rather than guessed at.
"""

from __future__ import annotations

import json
from typing import Any


class ApiError(Exception):
    """
    A failure to report to the caller as ``{"error": {...}}``.

    :param code: the HTTP status code that names the kind of failure.
    :param message: a sentence for a person, saying what went wrong.
    """

    code = 500

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_json(self) -> dict[str, Any]:
        """The envelope of this error."""
        return error_body(self.code, self.message)

    @classmethod
    def from_json(cls, error: Any) -> ApiError:
        """
        Rebuild an error from the ``error`` member of an envelope, as the
        subclass that matches its code when there is one.
        """
        if not isinstance(error, dict):
            return ApiError(f"malformed error: {error!r}", 502)
        code = error.get("code")
        message = error.get("message")
        if not isinstance(code, int) or not isinstance(message, str):
            return ApiError(f"malformed error: {error!r}", 502)
        return _BY_CODE.get(code, ApiError)(message, code)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiError) and (self.code, self.message) == (other.code, other.message)

    def __hash__(self) -> int:
        return hash((self.code, self.message))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code})"


class BadRequest(ApiError):
    """The request is malformed: bad JSON, a missing or ill-typed field."""

    code = 400


class Unauthorized(ApiError):
    """A connection to an internal port that has not given the cluster secret."""

    code = 401


class NotFound(ApiError):
    """The named thing (a toy, an order, a path) does not exist."""

    code = 404


class Conflict(ApiError):
    """The request is well formed but the state forbids it (out of stock)."""

    code = 409


class Unprocessable(ApiError):
    """An idempotency key reused with a different request."""

    code = 422


class StaleEpoch(ApiError):
    """
    A request from a leader whose epoch has been superseded: its precondition,
    "my epoch is the newest", failed (412).
    """

    code = 412


class Unavailable(ApiError):
    """The service cannot serve now; the caller may retry later."""

    code = 503


_BY_CODE = {
    cls.code: cls for cls in (BadRequest, Unauthorized, NotFound, Conflict, Unprocessable, StaleEpoch, Unavailable)
}


def ok(data: Any) -> dict[str, Any]:
    """The success envelope around ``data``."""
    return {"data": data}


def error_body(code: int, message: str) -> dict[str, Any]:
    """The failure envelope for ``code`` and ``message``."""
    return {"error": {"code": code, "message": message}}


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(obj: Any) -> bytes:
    """
    Encode ``obj`` as compact, deterministic UTF-8 JSON (sorted keys, no
    whitespace, no NaN): the same object always gives the same bytes.
    """
    return _ENCODER.encode(obj).encode("utf-8")


class Encoded(bytes):
    """
    A success envelope already encoded (``{"data": ...}`` as bytes): what a
    handler returns to send bytes it keeps, such as a cached reply, without
    decoding and encoding them again.
    """


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # the rare case: find the key to name it
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, object_pairs_hook=_refuse_duplicates)


def loads(raw: bytes) -> Any:
    """
    Decode strict JSON from UTF-8 bytes.

    :raises BadRequest: for invalid UTF-8, invalid JSON, NaN or Infinity,
        objects with a repeated key, and nesting too deep for the decoder;
        the message says which.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"body is not valid UTF-8: {e.reason} at byte {e.start}") from None
    try:
        return _DECODER.decode(text)
    except ValueError as e:
        raise BadRequest(f"invalid JSON: {e}") from None
    except RecursionError:
        raise BadRequest("invalid JSON: nested too deeply") from None
