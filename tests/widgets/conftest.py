"""Fixtures for the widget tests: a lab on kernel-picked ports, and what a clean exit means.

These tests drive ``PanelState`` and ``ScanPanel`` with no browser and no kernel. They scan
only the lab's own ports (or every port, inside the suite's private namespace).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from prtip_nb.lab import Lab

from ..conftest import in_netns


@dataclass(frozen=True)
class Target:
    lab: Lab
    spec: str  # the lab's open and closed TCP ports
    open: frozenset[int]


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with Lab.defaults(host="127.0.0.1", ephemeral=True) as lab:
        ports = lab.open_ports["tcp"] + lab.closed_ports
        yield Target(lab, ",".join(map(str, ports)), frozenset(lab.open_ports["tcp"]))


@pytest.fixture
def slow(target: Target) -> dict[str, object]:
    """Options for a scan that lasts about 3 s (rate-limited), of lab ports only outside
    a private namespace, of all 65,535 inside one."""
    if in_netns():
        return {"ports": "-", "rate": 20_000.0}
    return {"ports": target.spec, "rate": 10.0}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def open_sockets() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def scan_threads() -> list[str]:
    """Threads of scans and their event buses (the lab's own thread is not one)."""
    return [t.name for t in threading.enumerate()
            if t.name.startswith("prtip-") and not t.name.startswith("prtip-lab")]


@pytest.fixture(autouse=True, scope="session")
def plotly_widget_loaded() -> None:
    """Load plotly's FigureWidget once, up front: panels then build their chart at once
    rather than on a thread whose 3 s import would compete with the next test's scan.
    (test_panel.py's construction test covers the threaded path, in a fresh interpreter.)"""
    import plotly.graph_objs._figurewidget  # noqa: F401
