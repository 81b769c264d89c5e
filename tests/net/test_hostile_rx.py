"""Scans under a stream of malformed packets, in the suite's private namespace.

While each scan runs, a raw socket fires headers that lie about their lengths (IPv4 IHL
15 in the outer and the quoted header, quotes cut short, TCP data offset 0, IPv6 payload
lengths that disagree with the packet; tests.net.hostile) at the scanner. The scan must
end normally with exactly the verdicts of the ports the test opened, and count what it
threw away as ``invalid``.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from prtip_nb.engine.pingsweep import DiscoverEngine, host_verdicts
from prtip_nb.engine.scan import Scan
from prtip_nb.lab.veth import SCANNER4, SCANNER6, VethLab, host
from prtip_nb.net.counters import RttEstimator
from prtip_nb.probes.records import RecordBuffer
from prtip_nb.targets import parse_targets
from tests.conftest import need, tcp_listener
from tests.net import hostile
from tests.net.udplab import udp_service

pytestmark = pytest.mark.usefixtures("netns", "root")

SILENT = list(range(31000, 31012))  # SYNs / datagrams to these vanish (nftables)
OPEN = [32001, 32007]
CLOSED = [32002, 32003, 32004]
PORTS = SILENT + OPEN + CLOSED
SPEC = ",".join(map(str, PORTS))


@pytest.fixture
def silent_ports() -> Iterator[None]:
    need(shutil.which("nft") is not None, "needs nftables")
    lo, hi = SILENT[0], SILENT[-1]
    subprocess.run(["nft", "-f", "-"], check=True, text=True, input=(
        "add table inet prtip_rx_test\n"
        "add chain inet prtip_rx_test input { type filter hook input priority 0; }\n"
        f"add rule inet prtip_rx_test input tcp dport {lo}-{hi} tcp flags & (syn | ack) == syn"
        " drop\n"
        f"add rule inet prtip_rx_test input udp dport {lo}-{hi} drop\n"))
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", "prtip_rx_test"], check=False)


def _verdicts(df: object) -> dict[int, tuple[str, str]]:
    return {int(p): (str(s), str(r)) for p, s, r in
            zip(df["port"], df["state"], df["reason"], strict=True)}  # type: ignore[index]


def _wait_sent(s: Scan, n: int) -> None:
    deadline = time.monotonic() + 5
    while s.counters.sent < n and time.monotonic() < deadline:
        time.sleep(0.002)


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_syn_scan_survives_malformed_icmp_and_tcp(silent_ports: None, family: int) -> None:
    host = hostile.LO4 if family == 4 else hostile.LO6
    stream = hostile.syn_stream4 if family == 4 else hostile.syn_stream6
    sport, rng = 47301 + family, random.Random(family)
    listeners = [tcp_listener(p, host) for p in OPEN]
    try:
        s = Scan(host, SPEC, method="syn", max_retries=1, timeout=0.6,
                 source_port=sport).start()
        _wait_sent(s, 1)
        with hostile.Firer(family, lambda: stream(sport, PORTS, rng), host) as firer:
            df = s.wait(30).ports  # raised "scan failed: unpack_from requires ..." before
    finally:
        for lst in listeners:
            lst.close()
    assert firer.sent > 0
    want = {**{p: ("filtered", "no-response") for p in SILENT},
            **{p: ("open", "syn-ack") for p in OPEN},
            **{p: ("closed", "reset") for p in CLOSED}}
    assert _verdicts(df) == want
    assert s.engine_stats["invalid"] > 0


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_udp_scan_survives_malformed_icmp_and_udp(silent_ports: None, family: int) -> None:
    host = hostile.LO4 if family == 4 else hostile.LO6
    stream = hostile.udp_stream4 if family == 4 else hostile.udp_stream6
    sport, rng = 47311 + family, random.Random(10 + family)
    with udp_service(host, OPEN):
        s = Scan(host, SPEC, method="udp", max_retries=1, timeout=0.6,
                 udp_source_port=sport).start()
        _wait_sent(s, 1)
        with hostile.Firer(family, lambda: stream(sport, PORTS, rng), host) as firer:
            df = s.wait(30).ports
    assert firer.sent > 0
    want = {**{p: ("open|filtered", "no-response") for p in SILENT},
            **{p: ("open", "udp-response") for p in OPEN},
            **{p: ("closed", "port-unreach") for p in CLOSED}}
    assert _verdicts(df) == want
    assert s.engine_stats["invalid"] > 0


def test_discovery_survives_malformed_replies() -> None:
    """A sweep of a VethLab (routed hosts: IP probes, not ARP) while forged and cut-short
    echo, timestamp and TCP replies arrive from the hosts that are down."""
    need(shutil.which("nsenter") is not None, "needs nsenter")
    up4, down4 = host("routed", 5), host("routed", 7)
    up6, down6 = host("routed", 5, 6), host("routed", 7, 6)
    with VethLab(routed_up=[up4, up6], tcp=[443]):
        tset = parse_targets([up4, down4, up6, down6])
        records: list[bytes] = []
        out = RecordBuffer(records.append)
        engine = DiscoverEngine(tset, out=out, rtt=RttEstimator(1.0, 0.1, 1.0), retries=1)
        sweep = threading.Thread(target=engine.run, daemon=True)
        sweep.start()
        deadline = time.monotonic() + 10
        while not engine.ident and time.monotonic() < deadline:  # the sockets are open
            time.sleep(0.001)
        rng = random.Random(7)
        with hostile.Firer(4, lambda: hostile.ping_stream4(engine.ident, engine.sport, down4,
                                                           SCANNER4, rng), SCANNER4) as f4, \
                hostile.Firer(6, lambda: hostile.ping_stream6(engine.ident, engine.sport,
                                                              down6, SCANNER6, rng),
                              SCANNER6) as f6:
            sweep.join(30)
    assert not sweep.is_alive() and f4.sent > 0 and f6.sent > 0
    out.flush()
    rows = host_verdicts(tset, b"".join(records))
    assert {r.host: r.state for r in rows} == {up4: "up", down4: "down", up6: "up",
                                               down6: "down"}
    assert engine.stats["invalid"] > 0 and engine.stats["parse_errors"] == 0


def test_cli_syn_scan_under_malformed_icmp_exits_0(silent_ports: None,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """What the user saw was "scan failed: unpack_from requires a buffer of at least 136
    bytes" and exit 1. The errors need no source port to reach the receiver: the capture
    keeps every unreachable, and the crash came before any cookie check."""
    from prtip_nb.cli import main

    rng = random.Random(3)
    listeners = [tcp_listener(p, hostile.LO4) for p in OPEN]
    try:
        with hostile.Firer(4, lambda: hostile.syn_stream4(40000, PORTS, rng)[:6],
                           hostile.LO4) as firer:
            time.sleep(0.05)  # the stream is flowing before the scan starts
            code = main(["scan", "-sS", "-p", SPEC, "--max-retries", "1", "--no-progress",
                         "-Pn", hostile.LO4])
    finally:
        for lst in listeners:
            lst.close()
    out = capsys.readouterr()
    assert code == 0, out.err
    assert firer.sent > 0 and "scan failed" not in out.err
    opened = sorted(int(line.split("/")[0]) for line in out.out.splitlines()
                    if "/tcp" in line and " open " in line)
    assert opened == OPEN


def test_a_parser_bug_is_one_warning_not_a_failed_scan(silent_ports: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Should a parser raise all the same (here: made to raise on every ICMP error), the
    receive thread survives, the replies keep their verdicts and the scan says so once."""
    from prtip_nb.engine.synrx import Receiver

    def broken(self: Receiver, fam: int, data: bytes, ttl: int, t: float) -> None:
        raise ValueError("a parser bug")

    monkeypatch.setattr(Receiver, "_icmp", broken)
    sport, rng = 47321, random.Random(4)
    listeners = [tcp_listener(p, hostile.LO4) for p in OPEN]
    try:
        s = Scan(hostile.LO4, SPEC, method="syn", max_retries=1, timeout=0.6,
                 source_port=sport).start()
        _wait_sent(s, 1)
        with hostile.Firer(4, lambda: hostile.syn_stream4(sport, PORTS, rng), hostile.LO4):
            res = s.wait(30)
    finally:
        for lst in listeners:
            lst.close()
    assert _verdicts(res.ports) == {**{p: ("filtered", "no-response") for p in SILENT},
                                    **{p: ("open", "syn-ack") for p in OPEN},
                                    **{p: ("closed", "reset") for p in CLOSED}}
    assert s.engine_stats["parse_errors"] > 0
    events = res.events
    warned = [p for k, p in zip(events["kind"], events["payload"], strict=True)
              if k == "ScanWarning" and "could not parse" in p]
    assert len(warned) == 1 and "ValueError: a parser bug" in warned[0]


def test_a_udp_parser_bug_is_one_warning_not_a_failed_scan(
        silent_ports: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The UDP receiver shares the SYN receiver's loop: ICMP errors made unparseable, the
    closed ports fall back to open|filtered (no error accepted), the open ones stay open,
    and the scan warns once."""
    from prtip_nb.engine.udprx import UdpReceiver

    def broken(self: UdpReceiver, *args: object) -> None:
        raise ValueError("a parser bug")

    monkeypatch.setattr(UdpReceiver, "_errors", broken)
    with udp_service(hostile.LO4, OPEN):
        s = Scan(hostile.LO4, SPEC, method="udp", max_retries=1, timeout=0.6).start()
        res = s.wait(30)
    assert _verdicts(res.ports) == {**{p: ("open|filtered", "no-response")
                                       for p in SILENT + CLOSED},
                                    **{p: ("open", "udp-response") for p in OPEN}}
    assert s.engine_stats["parse_errors"] > 0
    events = res.events
    warned = [p for k, p in zip(events["kind"], events["payload"], strict=True)
              if k == "ScanWarning" and "could not parse" in p]
    assert len(warned) == 1 and "ValueError: a parser bug" in warned[0]
