"""
Shared pytest set-up: every test runs in a fresh temporary directory, so that
``mktemp()`` and relative data directories never land in the checkout.
"""

import pytest


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """Run each test with its own temporary directory as the working directory."""
    monkeypatch.chdir(tmp_path)
