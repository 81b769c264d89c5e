"""Warm capture rings (net.capture.prewarm): set up on a thread before the scan needs them,
taken by the scan's Capture, and capturing real replies; the CLI's SYN scan uses one."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from prtip_nb.net import capture

pytestmark = pytest.mark.usefixtures("netns", "root")


def test_a_warm_ring_is_taken_and_captures_a_real_reply() -> None:
    capture.prewarm([4])
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.socket()
    client.bind(("127.0.0.1", 0))
    sport = client.getsockname()[1]
    cap = capture.Capture({4}, sport, sport, ifname="lo")
    try:
        assert not capture._WARMING and not any(capture._WARM.values())  # it was taken
        client.connect(server.getsockname())  # the SYN-ACK to sport passes the filter
        packets = 0
        deadline = time.monotonic() + 5
        while not packets and time.monotonic() < deadline:
            cap.wait(0.1)
            packets += sum(n for _fam, _mm, _off, n in cap.blocks())
        assert packets >= 1
    finally:
        cap.close()
        client.close()
        server.close()


def test_a_ring_of_another_shape_is_released_with_the_capture() -> None:
    capture.prewarm([4], blocks=16)  # a UDP scan's shape; the capture below is a SYN one's
    cap = capture.Capture({4}, 40000, 40000, ifname="lo")
    assert any(capture._WARM.values())
    cap.close()
    assert not any(capture._WARM.values())


def test_cli_syn_scan_with_a_warm_ring_finds_the_listeners() -> None:
    servers = [socket.create_server(("127.0.0.1", 0)) for _ in range(3)]
    ports = sorted(s.getsockname()[1] for s in servers)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "prtip_nb.cli", "scan", "-sS", "--privileged", "-n",
             "-p", ",".join(map(str, [*ports, 1, 2])), "127.0.0.1"],
            capture_output=True, text=True, timeout=120)
    finally:
        for s in servers:
            s.close()
    assert out.returncode == 0, out.stderr
    found = sorted(int(line.split("/")[0]) for line in out.stdout.splitlines()
                   if "/tcp" in line and " open " in line)
    assert found == ports, out.stdout
