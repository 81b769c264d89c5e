"""Fixtures for the lab tests, and the private-namespace guard.

``require_private_netns()`` is the guard for tests that bind fixed ports: outside a private
network namespace they would collide with (or worse, talk to) other tenants' services on
the shared loopback. Such tests skip there, unless ``CI`` is 1/true/yes (as in
tests/conftest.py), where a skip would hide that the suite ran in the wrong place, so they
fail instead. Tests that use only kernel-picked ports (port 0) and connect only to what
they opened run anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from prtip_nb.lab import Lab, in_private_netns


def require_private_netns() -> None:
    """Skip (or fail under CI=true) unless we are inside a private network namespace."""
    if in_private_netns():
        return
    reason = (
        "binds fixed ports: run inside a private network namespace, e.g. "
        "unshare --net sh -c 'ip link set lo up && python -m pytest tests/lab'"
    )
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: not skipping)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def netns() -> None:
    require_private_netns()


@pytest.fixture(scope="module")
def full_lab() -> Iterator[Lab]:
    """Every service on fixed ports, as in the demo: one lab for the whole module."""
    require_private_netns()
    with Lab.defaults() as lab:
        yield lab
