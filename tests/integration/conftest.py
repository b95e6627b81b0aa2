"""
Fixtures for end-to-end tests: real ``twistd`` processes on free loopback
ports, driven through pytest-twisted's reactor.

A test's store is the harness's :class:`~toystore.testing.Store` (the
``store`` and ``new_store`` fixtures), on free ports with knobs that make
failures quick to see.  Each process announces its bound ports in its ready
line (see :mod:`toystore.runtime`); tests wait for that line, never for a
fixed time.  Every process a test starts is killed when the test ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList

from toystore.supervise import Supervisor
from toystore.testing import QUICK, Store, with_knobs
from toystore.testing.store import child_env

#: The checkout, put on the children's PYTHONPATH so twistd finds this tree's plugins.
ROOT = Path(__file__).resolve().parents[2]
#: The children's PYTHONPATH: this checkout first, then whatever this process was given.
PYTHONPATH = child_env()["PYTHONPATH"]


def run_script(name: str, *flags: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """
    ``python -m scripts.<name>`` with ``flags``, from the checkout's root in
    a child Python that imports this checkout; its output captured as text.
    Blocking: for the scripts' smoke tests, which run no reactor code of
    their own.
    """
    return subprocess.run(
        [sys.executable, "-m", f"scripts.{name}", *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )


@pytest.fixture(autouse=True)
def no_logged_failures() -> Any:
    """
    Fail a test whose code logged a failure (an unhandled error in a
    Deferred, a crashed callback): pytest would not notice otherwise.
    """
    from twisted.logger import globalLogPublisher

    failures: list[dict] = []

    def observe(event: dict) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    yield
    globalLogPublisher.removeObserver(observe)
    assert not failures, [event["log_failure"].getTraceback() for event in failures]


@pytest.fixture
def reactor() -> Any:
    """The reactor pytest-twisted runs."""
    from twisted.internet import reactor

    return reactor


@pytest.fixture
def supervisor(reactor: Any) -> Any:
    """A Supervisor for this test's children; every child is killed when the test ends."""
    started = Supervisor(reactor, env=child_env())
    yield started
    pending = started.kill_all()
    if pending:
        pytest_twisted.blockon(DeferredList(pending).addTimeout(10, reactor))


@pytest.fixture
def new_store(reactor: Any, supervisor: Supervisor, tmp_path: Path) -> Any:
    """
    Makes this test's stores: ``new_store(directory=None, frontends=1,
    proxies=False, **overrides)`` is a :meth:`Store.create
    <toystore.testing.Store.create>` in ``directory`` (default: a new
    ``store-N`` in the test's own) with :data:`QUICK` knobs, ``overrides`` replacing them one by one;
    each is closed when the test ends, and the supervisor kills its processes.
    """
    made: list[Store] = []

    def make(directory: Path | None = None, frontends: int = 1, proxies: bool = False, **overrides: Any) -> Store:
        directory = directory or tmp_path / f"store-{len(made) + 1}"
        knobs = with_knobs(QUICK, overrides)
        store = Store.create(reactor, directory, supervisor, frontends=frontends, proxies=proxies, **knobs)
        made.append(store)
        return store

    yield make
    for store in made:
        pytest_twisted.blockon(Deferred.fromCoroutine(store.close()))


@pytest.fixture
def store(new_store: Callable[..., Store]) -> Store:
    """This test's store: catalog, three replicas and a front-end, on free ports (started by the test)."""
    return new_store()


async def gather(*coroutines: Any) -> list[tuple[bool, Any]]:
    """Run ``coroutines`` at once; each one's (succeeded, result or failure), in order."""
    return await DeferredList([Deferred.fromCoroutine(c) for c in coroutines], consumeErrors=True)
