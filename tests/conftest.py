"""Shared test helpers.

The suite runs inside a private network namespace (``make test`` uses scripts/in-netns).
A test that needs a system piece (the namespace, root, nmap) skips with the reason
outside CI, and fails under CI=true, where everything must be present.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterable, Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, why: str) -> None:
    """Skip (outside CI) or fail (in CI) unless ``condition`` holds."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must provide this: {why}")
    pytest.skip(why)


def need_range_lab() -> None:
    """What a RangeLab test needs: a private namespace, root, and the lab's tools."""
    need(in_netns(), "needs a private network namespace: run under scripts/in-netns")
    need(os.geteuid() == 0, "needs root")
    need(all(shutil.which(t) for t in ("nsenter", "unshare", "nft", "tc")),
         "needs nsenter, unshare (util-linux), nftables and tc (iproute2)")


def in_netns() -> bool:
    from prtip_nb.lab import in_private_netns

    return os.environ.get("PRTIP_NB_NETNS") == "1" or in_private_netns()


@pytest.fixture
def netns() -> None:
    """The test binds fixed ports and scans 127.0.0.1 broadly: only in a private namespace."""
    need(in_netns(), "needs a private network namespace: run the suite with `make test`")


@pytest.fixture
def nmap() -> str:
    path = shutil.which("nmap")
    need(path is not None, "needs nmap (apt-get install nmap; `make test` does it as root)")
    assert path is not None
    return path


@pytest.fixture
def root() -> None:
    need(os.geteuid() == 0, "needs root")


# -- listeners the tests own ---------------------------------------------------------------
def tcp_listener(port: int, host: str = "127.0.0.1", backlog: int = 128) -> socket.socket:
    """A listening TCP socket on ``host:port`` (SO_REUSEADDR: an earlier scan's TIME_WAIT
    on the port does not block the bind)."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(backlog)
    except BaseException:
        s.close()
        raise
    return s


@contextlib.contextmanager
def tcp_listeners(
    ports: Iterable[int], host: str = "127.0.0.1", backlog: int = 128
) -> Iterator[list[int]]:
    """``with tcp_listeners([22, 80]) as open_ports:``: listeners on ``ports`` for the block."""
    ports = list(ports)
    with contextlib.ExitStack() as stack:
        for port in ports:
            stack.enter_context(tcp_listener(port, host, backlog))
        yield ports
