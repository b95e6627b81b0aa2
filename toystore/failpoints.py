"""
Failpoints: named places where a test can make a process die on purpose.

A crash at an exact point (say, after the catalog sold an order's toys and
before the order reached the log) is hard to hit with signals from outside.
The environment variable ``TOYSTORE_FAILPOINTS`` names the armed points,
comma-separated; a process that reaches an armed point exits at once, as
abruptly as ``SIGKILL`` would (no cleanup, no buffered writes).  Unset, as
in production, :func:`reach` is a set lookup.

Points in use:

``order.after-buy``
    A leader's buy succeeded at the catalog; the order is not yet in the log.

``catalog.after-commit``
    The catalog committed a buy that sold stock; its reply (and the
    subscribers' push) is not yet sent, so the leader does not know the
    outcome.  Replayed and refused buys pass.
"""

from __future__ import annotations

import os

from .runtime import exit_now

ENVIRONMENT = "TOYSTORE_FAILPOINTS"
#: The exit status of a process stopped by a failpoint.
EXIT_STATUS = 86

_armed = frozenset(filter(None, (p.strip() for p in os.environ.get(ENVIRONMENT, "").split(","))))


def reach(name: str) -> None:
    """Die here if ``name`` is armed."""
    if name in _armed:
        exit_now(EXIT_STATUS, f"failpoint {name} reached")
