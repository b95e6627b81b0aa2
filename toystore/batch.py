"""
Group commit: run queued work in batches, one batch at a time.

Durable writes are bounded by fsync, not by the CPU.  :class:`BatchQueue`
lets every write that arrives while one batch is being committed wait and go
together in the next batch, so N concurrent writers share one fsync instead
of paying N.  A lone writer pays no delay: with nothing running, its batch
starts at once.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Generic, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.failure import Failure

T = TypeVar("T")
R = TypeVar("R")


class BatchQueue(Generic[T, R]):
    """
    Items go in one at a time; ``run_batch`` gets them as lists, never two
    lists at once, and returns one result per item, in order (or a Deferred
    of that list).

    :param run_batch: does the work of one batch, typically in a thread.
    :param max_batch: the most items one batch takes.
    """

    def __init__(self, run_batch: Callable[[list[T]], Deferred[list[R]]], max_batch: int = 1000) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._queue: list[tuple[T, Deferred[R]]] = []
        self._running = False
        self._idle: list[Deferred[None]] = []

    @property
    def running(self) -> bool:
        """Whether a batch is being run now."""
        return self._running

    @property
    def queued(self) -> int:
        """How many items wait for the next batch."""
        return len(self._queue)

    def submit(self, item: T) -> Deferred[R]:
        """
        Queue ``item``.

        :return: a Deferred of its result, or of the failure of its batch.
        """
        d: Deferred[R] = Deferred()
        self._queue.append((item, d))
        self._next()
        return d

    def when_idle(self) -> Deferred[None]:
        """A Deferred that fires once every queued item has been run."""
        if not self._running and not self._queue:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def _next(self) -> None:
        if self._running:
            return
        if not self._queue:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)
            return
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        self._running = True
        running = maybeDeferred(self._run_batch, [item for item, _ in batch])
        running.addBoth(self._finished, batch)

    def _finished(self, results: list[R] | Failure, batch: list[tuple[T, Deferred[R]]]) -> None:
        self._running = False
        if isinstance(results, Failure):
            for _, d in batch:
                d.errback(results)
        elif len(results) != len(batch):
            failure = Failure(RuntimeError(f"batch of {len(batch)} gave {len(results)} results"))
            for _, d in batch:
                d.errback(failure)
        else:
            for (_, d), result in zip(batch, results, strict=True):
                d.callback(result)
        self._next()


def timed_in_thread(
    run_in_thread: Callable[..., Deferred[Any]],
    work: Callable[[], R],
    seconds: Any,
    sizes: Any,
    size: int,
) -> Deferred[R]:
    """
    Run ``work()`` off the reactor thread and record, in the histograms
    ``seconds`` and ``sizes``, how long it took there and how many
    operations (``size``) it did: the bookkeeping of one batch.
    """

    def timed() -> tuple[R, float]:
        started = time.perf_counter()
        result = work()
        return result, time.perf_counter() - started

    def record(outcome: tuple[R, float]) -> R:
        result, took = outcome
        seconds.observe(took)
        sizes.observe(size)
        return result

    return run_in_thread(timed).addCallback(record)
