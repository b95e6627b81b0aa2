"""Tests for :mod:`toystore.failpoints`: what ``TOYSTORE_FAILPOINTS`` arms, as a crash or a delay."""

from __future__ import annotations

import pytest

from toystore import failpoints


def test_parse_crashes_and_delays() -> None:
    assert failpoints.parse("") == {}
    assert failpoints.parse(" a , b=2.5,,c=0.25 ") == {"a": None, "b": 2.5, "c": 0.25}
    with pytest.raises(ValueError):
        failpoints.parse("b=soon")


def test_a_delay_is_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(failpoints, "_armed", failpoints.parse("late=4"))
    failpoints.reach("late")  # armed as a delay: reaching it does not exit
    assert failpoints.seconds("late") == 4.0
    assert failpoints.seconds("other") == 0.0


def test_a_crash_point_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[tuple[int, str]] = []
    monkeypatch.setattr(failpoints, "exit_now", lambda status, why: exits.append((status, why)))
    monkeypatch.setattr(failpoints, "_armed", failpoints.parse("here"))
    failpoints.reach("elsewhere")
    failpoints.reach("here")
    assert exits == [(failpoints.EXIT_STATUS, "failpoint here reached")]
    assert failpoints.seconds("here") == 0.0
