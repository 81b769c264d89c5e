"""make test's parallel pass: each pytest-xdist worker is in a network namespace of its own.

tests/conftest.py's ``pytest_configure`` unshares the worker's namespace before any test
runs; these tests check it did, against the kernel (the namespace links under /proc and
the routing table), so two workers' fixed ports and labs cannot meet.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

from tests.conftest import in_netns

WORKER = os.environ.get("PYTEST_XDIST_WORKER")


def _netns_of(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


@pytest.mark.skipif(WORKER is None, reason="runs in a pytest-xdist worker (make test, -n N)")
def test_worker_has_its_own_namespace_with_lo_only() -> None:
    if not in_netns():
        pytest.skip("not root: the worker could not make a namespace")
    # The controller (our parent) stays where scripts/in-netns put it; we moved.
    assert _netns_of("self") != _netns_of(os.getppid())
    assert [name for _i, name in socket.if_nameindex()] == ["lo"]
    # lo is up: a listener on 127.0.0.1 is reachable.
    with socket.create_server(("127.0.0.1", 0)) as srv:
        with socket.create_connection(srv.getsockname(), timeout=2):
            pass
    if shutil.which("ip"):
        routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True)
        assert "default" not in routes.stdout
        routes6 = subprocess.run(["ip", "-6", "route"], capture_output=True, text=True,
                                 check=True)
        assert "default" not in routes6.stdout


@pytest.mark.skipif(WORKER is None, reason="runs in a pytest-xdist worker (make test, -n N)")
def test_threads_and_children_share_the_workers_namespace() -> None:
    """unshare() moves only the calling thread: the hook runs on the thread the tests run
    on, so threads and subprocesses a test starts land in the worker's namespace too."""
    if not in_netns():
        pytest.skip("not root: the worker could not make a namespace")
    import threading

    seen: list[str] = []
    t = threading.Thread(target=lambda: seen.append(os.readlink(
        f"/proc/self/task/{threading.get_native_id()}/ns/net")))
    t.start()
    t.join()
    child = subprocess.run(["readlink", "/proc/self/ns/net"], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert seen == [_netns_of("self")]
    assert child == _netns_of("self")
