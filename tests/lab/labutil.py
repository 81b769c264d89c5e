"""Socket clients and small helpers shared by the lab tests (imported as ``labutil``)."""

from __future__ import annotations

import os
import socket
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TIMEOUT = 5.0  # per socket operation; everything here is loopback


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def subprocess_env() -> dict[str, str]:
    """The environment for a child Python that must import prtip_nb from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def connect(host: str, port: int) -> socket.socket:
    return socket.create_connection((host, port), timeout=TIMEOUT)


def read_all(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Read until EOF (bounded by ``limit`` bytes and the socket timeout)."""
    data = bytearray()
    while len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def read_line(sock: socket.socket) -> bytes:
    """Read one CRLF-terminated line (services here send whole lines in one segment)."""
    data = bytearray()
    while not data.endswith(b"\n") and len(data) < 4096:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def http_get(host: str, port: int, *, tls: bool = False) -> bytes:
    raw = connect(host, port)
    sock: socket.socket = raw
    if tls:
        sock = no_verify_context().wrap_socket(raw, server_hostname="prtip-lab.test")
    with sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: prtip-lab.test\r\n\r\n")
        return read_all(sock)


def no_verify_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    """Poll ``predicate()`` until true or ``timeout``; bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())
