"""``python -m prtip_nb.lab`` in its own process: READY, serve, stop on signal or EOF."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import pytest
from labutil import PYTHON, http_get, subprocess_env

HOST = "127.0.0.1"
BASE = [PYTHON, "-m", "prtip_nb.lab", "--host", HOST, "--base-port", "0"]


def read_ready(stream: IO[bytes], timeout: float = 10.0) -> dict[str, Any]:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no READY line in time"
    line = stream.readline().decode()
    assert line.startswith("READY "), line
    info: dict[str, Any] = json.loads(line[len("READY ") :])
    return info


@contextmanager
def lab_process(*args: str, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [*BASE, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
        **kwargs,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_ready_then_serves_then_stops_on_sigterm() -> None:
    with lab_process("--tcp", "3", "--http", "0", "--udp-echo", "0", "--closed", "1") as proc:
        assert proc.stdout is not None
        info = read_ready(proc.stdout)
        assert info["host"] == HOST
        assert len(info["tcp_plain"]) == 3 and len(info["closed"]) == 1
        assert sorted(info["tcp"]) == sorted([*info["tcp_plain"], info["services"]["http"]])
        assert info["udp"] == [info["services"]["udp_echo"]]
        assert http_get(HOST, info["services"]["http"]).startswith(b"HTTP/1.1 200 OK")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0


def test_ready_fd_and_stdin_eof() -> None:
    r, w = os.pipe()
    try:
        with lab_process("--http", "0", "--ready-fd", str(w), pass_fds=(w,)) as proc:
            os.close(w)
            w = -1
            with os.fdopen(r, "rb") as ready:
                r = -1
                info = read_ready(ready)
            assert http_get(HOST, info["services"]["http"]).startswith(b"HTTP/1.1 200 OK")
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()  # EOF on stdin stops the lab
            assert proc.wait(5) == 0
            assert proc.stdout.read() == b""  # READY went to the fd, nothing to stdout
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)


def test_sigint_stops_too_and_defaults_layout_parses() -> None:
    with lab_process("--defaults", "--ephemeral", "--tcp", "2", "--closed", "0") as proc:
        assert proc.stdout is not None
        info = read_ready(proc.stdout)
        assert set(info["services"]) == {"http", "https", "ssh", "smtp", "ftp", "udp_echo"}
        assert len(info["tcp_plain"]) == 2 and info["closed"] == []
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 0


@pytest.mark.parametrize(
    "args", [("--http", "70000"), ("--host", "localhost", "--http", "0"), ()], ids=str
)
def test_bad_option_exits_2_with_message(args: tuple[str, ...]) -> None:
    with lab_process(*args) as proc:
        _out, err = proc.communicate(timeout=10)
        assert proc.returncode == 2
        assert b"prtip_nb.lab:" in err


def test_tls_cert_serves_the_given_certificate(tmp_path: Any) -> None:
    """``--tls-cert``: https presents the file's certificate (here one that expires in 5
    days, as a sample dataset's "expiring" finding needs), not a fresh one; a file
    without a key is an option error."""
    import socket
    import ssl

    from prtip_nb.lab.tlscert import make_cert

    made = make_cert(HOST, days=5)
    pem = tmp_path / "cert.pem"
    pem.write_bytes(made.cert_pem + made.key_pem)
    with lab_process("--https", "0", "--tls-cert", str(pem)) as proc:
        assert proc.stdout is not None
        port = read_ready(proc.stdout)["services"]["https"]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection((HOST, port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
            assert tls.getpeercert(binary_form=True) == made.der
    (tmp_path / "nokey.pem").write_bytes(made.cert_pem)
    with lab_process("--https", "0", "--tls-cert", str(tmp_path / "nokey.pem")) as proc:
        _out, err = proc.communicate(timeout=10)
        assert proc.returncode == 2 and b"--tls-cert" in err, err
