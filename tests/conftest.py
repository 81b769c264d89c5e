"""Shared test helpers.

The suite runs inside a private network namespace (``make test`` uses scripts/in-netns).
A test that needs a system piece (the namespace, root, nmap) skips with the reason
outside CI, and fails under CI=true, where everything must be present.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CLONE_NEWNET = 0x40000000


def _unshare_net() -> None:
    """Move this process (its calling thread, and so every thread and child it starts
    later) into a fresh network namespace: only ``lo``, down."""
    if sys.version_info >= (3, 12):
        os.unshare(os.CLONE_NEWNET)
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")


def pytest_configure(config: pytest.Config) -> None:
    """Each pytest-xdist worker gets its own network namespace before any test runs.

    The tests bind fixed ports (a lab on 127.0.0.1:80, 22, ...), scan 127.0.0.1 broadly
    and build veth labs with fixed addresses; in one shared namespace two workers would
    collide (or scan each other's services). ``make test`` starts pytest under
    scripts/in-netns, so the controller already sits in a private namespace; each worker
    then unshares once more and brings its own ``lo`` up. Without the privilege (not
    root) nothing is done: the tests that need a namespace skip (or fail under CI=true).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    try:
        _unshare_net()
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        if os.environ.get("PRTIP_NB_NETNS") == "1" or IN_CI:
            # Sharing the controller's namespace, the workers' fixed ports would collide.
            raise pytest.UsageError(
                f"xdist worker {worker}: cannot make its private network namespace "
                f"({exc}); run the suite as root (make test), or without -n"
            ) from exc
        return  # not root: the tests that need a namespace skip, as without -n
    os.environ["PRTIP_NB_NETNS"] = "1"


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
def sigint_not_ignored() -> Iterator[None]:
    """For a test that sends SIGINT (to itself, or to a CLI it starts) and expects a
    KeyboardInterrupt. A suite started in the background by a shell without job control
    (``cmd &`` in a script) inherits SIGINT ignored, and so do its children: exec keeps an
    ignored signal, Python then installs no KeyboardInterrupt handler, and a Ctrl-C test's
    scan ran to its end (exit 0). A handled SIGINT is reset to the default on exec."""
    old = signal.getsignal(signal.SIGINT)
    if old == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


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
