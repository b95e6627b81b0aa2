"""
``docs/openapi.yaml`` is true of the running front-end: schemathesis
generates requests from the document (its examples, boundary and negative
cases, random ones, and sequences that read back the orders placed) and
sends them to a live store; every reply must be no server error, have a
status, content type, headers and body that the document lists, and refuse
what the document calls invalid.

The run is bounded (a fixed seed, a few dozen examples per operation) and
takes a few seconds; the whole of schemathesis' output is shown on failure.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.utils import getProcessOutputAndValue

from toystore.supervise import Supervisor
from toystore.testing import Store

from .conftest import QUICK, ROOT

pytestmark = pytest.mark.integration

DOCUMENT = ROOT / "docs" / "openapi.yaml"

#: Every check that applies.  Not ``positive_data_acceptance``: a request the
#: schema allows may rightly be refused, for the store's state (an unknown toy,
#: a reused key: 404, 422) or for a rule JSON Schema cannot say (a name must be
#: printable, by Python's ``str.isprintable``).  The auth checks have nothing
#: to check.
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
]


def schemathesis_executable() -> str:
    """The schemathesis command of the running interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "schemathesis"
    if beside.exists():
        return str(beside)
    found = shutil.which("schemathesis")
    if found is None:
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'")
    return found


@pytest_twisted.ensureDeferred
async def test_store_answers_as_documented(reactor: Any, supervisor: Supervisor, tmp_path: Path) -> None:
    """schemathesis finds no reply of the live front-end that the OpenAPI document does not allow."""
    cluster = Store.create(reactor, tmp_path / "store", supervisor, **QUICK)
    try:
        await cluster.start_all()
        args = [
            "--no-color",
            "run",
            str(DOCUMENT),
            f"--url={cluster.url}",
            f"--checks={','.join(CHECKS)}",
            "--max-examples=40",
            "--seed=20261124",
            "--workers=1",
            "--generation-database=none",
            "--request-timeout=10",
        ]
        # Its working directory is the test's: schemathesis and Hypothesis leave files there.
        out, err, code = await getProcessOutputAndValue(
            schemathesis_executable(), args, env=dict(os.environ), path=str(tmp_path)
        )
    finally:
        await cluster.close()
    report = (out + err).decode("utf-8", "replace")
    assert code == 0, f"schemathesis exited {code}:\n{report}"
    assert "No issues found" in report, report
    dead = [child.name for child in supervisor.children if not child.running]
    assert not dead, f"processes died: {dead}"
