"""Fixtures for the results tests."""

from __future__ import annotations

import pytest

from prtip_nb.results import ScanResult

from .scans import finished


@pytest.fixture
def result() -> ScanResult:
    """A finished scan of three hosts and seven ports (see scans.fill)."""
    return finished()
