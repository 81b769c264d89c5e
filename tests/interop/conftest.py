"""Fixtures for the interop tests: listeners the test owns, nmap runs, nmap's DTD, ndiff.

Everything that sends a packet runs inside the suite's private network namespace (the
``netns`` fixture) and scans only 127.0.0.1 ports that the test itself opened or bound.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need, tcp_listener

DATA = Path(__file__).resolve().parent.parent / "data"
NMAP_DTD = Path("/usr/share/nmap/nmap.dtd")  # Debian's nmap ships it; read, never copied


class Listeners:
    """TCP listeners on 127.0.0.1 that a test opens and closes one by one."""

    def __init__(self) -> None:
        self.socks: dict[int, socket.socket] = {}

    def open(self, *ports: int) -> None:
        for port in ports:
            self.socks[port] = tcp_listener(port, backlog=16)

    def close(self, *ports: int) -> None:
        for port in ports:
            self.socks.pop(port).close()


@pytest.fixture
def listeners(netns: None) -> Iterator[Listeners]:
    ls = Listeners()
    yield ls
    for s in ls.socks.values():
        s.close()


@pytest.fixture
def run_nmap(nmap: str, netns: None, tmp_path: Path) -> Callable[..., Path]:
    """``run_nmap("8080,9000-9040", "--script", "ssl-cert")`` -> the -oX file of a connect
    scan of 127.0.0.1 (no ping, no DNS), on the ports given only."""
    count = iter(range(1000))

    def run(ports: str, *extra: str) -> Path:
        out = tmp_path / f"nmap-{next(count)}.xml"
        cmd = [nmap, "-sT", "-n", "-Pn", "-p", ports, *extra, "-oX", str(out), "127.0.0.1"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        return out

    return run


@pytest.fixture(scope="session")
def dtd() -> Any:
    """nmap.dtd as an lxml DTD (validate(doc) -> bool, error_log)."""
    need(NMAP_DTD.exists(), f"needs {NMAP_DTD} (apt-get install nmap)")
    need(importlib.util.find_spec("lxml") is not None, "needs lxml (pip install -e '.[dev]')")
    from lxml import etree

    return etree.DTD(str(NMAP_DTD))


def validate(dtd: Any, path: Path) -> None:
    from lxml import etree

    ok = dtd.validate(etree.parse(str(path)))
    assert ok, dtd.error_log.filter_from_errors()


@pytest.fixture
def ndiff() -> Callable[..., subprocess.CompletedProcess[str]]:
    path = shutil.which("ndiff")
    need(path is not None, "needs ndiff (apt-get install ndiff)")
    assert path is not None

    def run(a: Path, b: Path, *flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([path, *flags, str(a), str(b)], capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    return run
