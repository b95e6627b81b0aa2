"""
Failpoints: named places where a test can make a process die, or wait, on
purpose.

A crash at an exact point (say, after the catalog sold an order's toys and
before the order reached the log) is hard to hit with signals from outside.
The environment variable ``TOYSTORE_FAILPOINTS`` names the armed points,
comma-separated; a process that reaches an armed point exits at once, as
abruptly as ``SIGKILL`` would (no cleanup, no buffered writes).  A point
armed with a number of seconds (``name=6``) is a delay instead, which the
code at that point asks for with :func:`seconds`.  Unset, as in production,
:func:`reach` is a dict lookup.

Points in use:

``order.after-buy``
    A leader's buy succeeded at the catalog; the order is not yet in the log.

``catalog.after-commit``
    The catalog committed a buy that sold stock; its reply (and the
    subscribers' push) is not yet sent, so the leader does not know the
    outcome.  Replayed and refused buys pass.

``catalog.first-buy-late=S`` (a delay)
    The first buy the catalog receives under each key waits ``S`` seconds
    before it is handled; later ones pass at once.  That is a first attempt
    arriving late (TCP retransmitting it on a connection the leader has
    given up for lost) after the leader's retry of the same key.
"""

from __future__ import annotations

import os

from .runtime import exit_now

ENVIRONMENT = "TOYSTORE_FAILPOINTS"
#: The exit status of a process stopped by a failpoint.
EXIT_STATUS = 86


def parse(armed: str) -> dict[str, float | None]:
    """``"a,b=2.5"`` -> ``{"a": None, "b": 2.5}``: each point, with its seconds if it is a delay."""
    points: dict[str, float | None] = {}
    for entry in filter(None, (p.strip() for p in armed.split(","))):
        name, _, value = entry.partition("=")
        points[name.strip()] = float(value) if value else None
    return points


_armed = parse(os.environ.get(ENVIRONMENT, ""))


def reach(name: str) -> None:
    """Die here if ``name`` is armed (as a crash)."""
    if name in _armed and _armed[name] is None:
        exit_now(EXIT_STATUS, f"failpoint {name} reached")


def seconds(name: str) -> float:
    """How long to wait at ``name``: its armed delay, or 0."""
    return _armed.get(name) or 0.0
