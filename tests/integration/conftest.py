"""
Fixtures for end-to-end tests: real ``twistd`` processes on free loopback
ports, driven through pytest-twisted's reactor.

Each process is started with ``tcp:0`` listeners and announces its bound
ports in its ready line (see :mod:`toystore.runtime`); tests wait for that
line, never for a fixed time.  Every process a test starts is killed when
the test ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredList

from toystore.supervise import Supervisor

#: The checkout, put on the children's PYTHONPATH so twistd finds this tree's plugins.
ROOT = Path(__file__).resolve().parents[2]
#: The children's PYTHONPATH: the checkout first, then whatever this process was given.
PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


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
    started = Supervisor(reactor, env={"PYTHONPATH": PYTHONPATH})
    yield started
    pending = started.kill_all()
    if pending:
        pytest_twisted.blockon(DeferredList(pending).addTimeout(10, reactor))
