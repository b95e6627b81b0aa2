"""Tests for the epochs of a log kept as runs (:mod:`toystore.order.core.epochs`)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toystore.order.core import EpochLog


def log_of(*epochs: int) -> EpochLog:
    """A log whose record ``i`` has ``epochs[i]``."""
    log = EpochLog()
    for epoch in epochs:
        log.append(epoch)
    return log


def test_runs_merge_equal_epochs() -> None:
    """Records of one epoch written in several appends make one run; each new epoch starts one."""
    log = EpochLog()
    log.append(1, 3)
    log.append(1, 2)
    log.append(2)
    log.append(4, 2)
    assert log.runs() == [(0, 1), (5, 2), (6, 4)]
    assert len(log) == 8
    assert log.last_epoch == 4
    assert log == EpochLog([(0, 1), (5, 2), (6, 4)], 8)
    assert log != EpochLog([(0, 1), (5, 2), (6, 4)], 9)
    assert repr(log) == "EpochLog([(0, 1), (5, 2), (6, 4)], 8)"


def test_empty_log() -> None:
    """An empty log has epoch 0 at length 0, and matches only the empty prefix of epoch 0."""
    log = EpochLog()
    assert len(log) == 0 and log.runs() == [] and log.last_epoch == 0
    assert log.epoch_at(0) == 0
    assert log.matches(0, 0)
    assert not log.matches(0, 1)
    assert not log.matches(1, 1)
    assert log.last_at_most(5, 3) == 0
    assert log.first_conflict(0, [1]) == 0


def test_epoch_at_is_the_epoch_of_the_last_of_a_prefix() -> None:
    """``epoch_at(n)`` is the epoch of record ``n - 1``, at run boundaries too; past the end is an error."""
    log = log_of(1, 1, 1, 2, 4, 4)
    assert [log.epoch_at(n) for n in range(7)] == [0, 1, 1, 1, 2, 4, 4]
    with pytest.raises(IndexError):
        log.epoch_at(7)


def test_matches() -> None:
    """A log matches a prefix when it is that long and its record there has that epoch."""
    log = log_of(1, 1, 2, 2, 3)
    assert log.matches(2, 1)
    assert log.matches(3, 2)
    assert log.matches(5, 3)
    assert not log.matches(3, 1), "record 2 has epoch 2"
    assert not log.matches(6, 3), "past the end"
    assert not log.matches(4, 3)


def test_append_refuses_a_lower_epoch() -> None:
    """A log's epochs never go down; a refused append leaves the log as it was; a count of 0 does nothing."""
    log = log_of(1, 3)
    with pytest.raises(ValueError):
        log.append(2)
    assert log.runs() == [(0, 1), (1, 3)] and len(log) == 2
    log.append(2, 0)
    log.append(3, -1)
    assert len(log) == 2
    log.append(3)
    assert log.runs() == [(0, 1), (1, 3)] and len(log) == 3


def test_truncate() -> None:
    """Truncating drops whole runs past the cut and shortens the one it falls in; then lower epochs may follow."""
    log = log_of(1, 1, 2, 2, 2, 3)
    log.truncate(10)
    assert len(log) == 6, "a cut past the end keeps everything"
    log.truncate(4)
    assert log.runs() == [(0, 1), (2, 2)] and len(log) == 4 and log.last_epoch == 2
    log.truncate(2)
    assert log.runs() == [(0, 1)] and len(log) == 2 and log.last_epoch == 1
    assert not log.matches(3, 2)
    log.append(1)
    assert log.runs() == [(0, 1)] and len(log) == 3, "the cut run's epoch is gone: no empty run is left behind"
    log.truncate(0)
    assert log.runs() == [] and len(log) == 0 and log.last_epoch == 0
    log.append(1)
    assert log.runs() == [(0, 1)]
    log.truncate(-3)
    assert len(log) == 0


def test_first_conflict() -> None:
    """Where incoming records first differ in epoch from ours, or first pass our end."""
    log = log_of(1, 1, 2, 2, 2)
    assert log.first_conflict(2, [2, 2, 2]) == 5, "all held"
    assert log.first_conflict(0, []) == 0
    assert log.first_conflict(1, [1, 2]) == 3
    assert log.first_conflict(2, [2, 3, 3]) == 3
    assert log.first_conflict(1, [3, 3]) == 1
    assert log.first_conflict(4, [2, 2, 2]) == 5, "runs past our end"
    assert log.first_conflict(7, [4]) == 7


def test_last_at_most() -> None:
    """The longest prefix within ``length`` whose last record's epoch is at most ``epoch``, skipping whole runs."""
    log = log_of(1, 1, 2, 2, 2, 5, 5)
    assert log.last_at_most(7, 5) == 7
    assert log.last_at_most(7, 4) == 5, "the whole run of 5 is skipped"
    assert log.last_at_most(4, 4) == 4
    assert log.last_at_most(7, 1) == 2
    assert log.last_at_most(7, 0) == 0
    assert log.last_at_most(100, 9) == 7, "never past the end"
    assert log.last_at_most(0, 9) == 0


# -- against a plain list of epochs ------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 6), st.integers(0, 4)),
        st.tuples(st.just("truncate"), st.integers(-1, 30), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(operations, st.integers(0, 30), st.integers(0, 7), st.lists(st.integers(0, 7), max_size=6))
def test_agrees_with_a_list_of_epochs(
    ops: list[tuple[str, int, int]], length: int, epoch: int, incoming: list[int]
) -> None:
    """Every query agrees with the same question asked of one epoch per record."""
    log, model = EpochLog(), []
    for op, a, b in ops:
        if op == "truncate":
            log.truncate(a)
            del model[max(a, 0) :]
        elif b > 0 and model and a < model[-1]:
            with pytest.raises(ValueError):
                log.append(a, b)
        else:
            log.append(a, b)
            model.extend([a] * b)
        assert len(log) == len(model)
        assert log.last_epoch == (model[-1] if model else 0)
        assert log == EpochLog(log.runs(), len(log))
        runs = log.runs()
        assert all(e1 < e2 for (_, e1), (_, e2) in zip(runs, runs[1:])), "one run per epoch, epochs rising"

    assert [log.epoch_at(n) for n in range(len(model) + 1)] == [0] + model
    n = min(length, len(model))
    assert log.matches(n, epoch) == (n == 0 and epoch == 0 or n > 0 and model[n - 1] == epoch)
    assert not log.matches(len(model) + 1, epoch)
    expected = min(length, len(model))
    while expected > 0 and model[expected - 1] > epoch:
        expected -= 1
    assert log.last_at_most(length, epoch) == expected
    start = min(length, len(model))
    conflict = start
    while conflict - start < len(incoming) and conflict < len(model) and model[conflict] == incoming[conflict - start]:
        conflict += 1
    assert log.first_conflict(start, incoming) == conflict
