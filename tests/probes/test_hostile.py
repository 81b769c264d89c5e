"""Hostile services from prtip_nb.lab, survived within the stated bounds; and a tarpit."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

import prtip_nb as pn
from prtip_nb.lab import Lab
from prtip_nb.lab.hostile import KINDS
from prtip_nb.service.outcome import BANNER_MAX
from prtip_nb.service.service import DEADLINE_S, READ_CAP, TARPIT_SAMPLE, ServiceScanner

from ..conftest import need

HOST = "127.0.0.1"


def test_hostile_services_are_survived(netns: None) -> None:
    with Lab(HOST, hostile={k: 0 for k in KINDS}) as lab:
        kind = {port: k for k, port in lab.hostile.items()}
        scanner = ServiceScanner()  # the defaults are the bounds under test
        t0 = time.monotonic()
        found = {kind[r.port]: r for r in scanner.scan([(HOST, p) for p in kind])}
        took = time.monotonic() - t0
    assert DEADLINE_S == 5.0 and READ_CAP == 64 * 1024 and scanner.service_timeout == 10.0

    endless = found["endless"]  # stops at 64 KiB, long before any deadline
    assert endless.bytes_read == READ_CAP and endless.elapsed < DEADLINE_S
    assert "read cap reached: stopped reading" in endless.notes
    assert endless.banner is not None and len(endless.banner) <= BANNER_MAX + 3

    slow = found["slow"]  # one byte a second: the NULL connection is cut at its deadline
    assert "banner cut at the connection deadline" in slow.notes
    assert DEADLINE_S <= slow.elapsed <= scanner.service_timeout + 0.5
    assert slow.banner is not None and slow.banner.startswith("220 s")

    chain = found["bigchain"]  # a 1 MiB chain: aborted at the handshake, quickly
    assert chain.service == "ssl" and chain.elapsed < DEADLINE_S
    assert any("over 100 kB" in n for n in chain.notes)

    assert found["wrapped"].service == "tcpwrapped" and found["wrapped"].elapsed < 1.0

    redos = found["redos"]  # crafted against naive regexes: matched as HTTP, in time
    assert redos.service == "http" and redos.elapsed < DEADLINE_S
    assert took <= scanner.service_timeout + 1.0  # all at once: bounded by the slowest


@pytest.fixture
def tarpit(netns: None, root: None) -> object:
    """127.0.0.2 answers SYN-ACK on every port: nftables sends all ports to one listener
    that never speaks (and never accepts: the kernel completes handshakes by itself)."""
    nft = shutil.which("nft")
    need(nft is not None, "needs nft (apt-get install nftables)")
    assert nft is not None
    sink = socket.socket()
    sink.bind(("127.0.0.2", 9))
    sink.listen(4096)
    rules = ("add table ip prtip_tarpit\n"
             "add chain ip prtip_tarpit out { type nat hook output priority -100 ; }\n"
             "add rule ip prtip_tarpit out ip daddr 127.0.0.2 tcp dport != 9 "
             "dnat to 127.0.0.2:9\n")  # fmt: skip
    subprocess.run([nft, "-f", "-"], input=rules, text=True, check=True)
    try:
        yield "127.0.0.2"
    finally:
        subprocess.run([nft, "delete", "table", "ip", "prtip_tarpit"], check=False)
        sink.close()


def test_a_tarpit_is_flagged_and_detection_on_it_stops(tarpit: str) -> None:
    t0 = time.monotonic()
    res = pn.scan(tarpit, ports="1000-1299", service=True)
    took = time.monotonic() - t0
    assert (res.ports["state"].astype(str) == "open").all() and len(res.ports) == 300
    kinds = res.events["kind"].astype(str)
    warnings = res.events[kinds == "ScanWarning"]["payload"].tolist()
    assert any("tarpit" in w for w in warnings)
    assert (kinds == "ServiceDetected").sum() == 300
    assert res.ports["service"].isna().all()
    # The sample: TARPIT_SAMPLE ports, one connection deadline each, all at once.
    assert took < DEADLINE_S + 3.0, took
    assert TARPIT_SAMPLE == 32
