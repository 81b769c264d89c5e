"""UDP scans across a veth pair to a target namespace with UDP services (dnsmasq, an
NTP-like responder, echo, a socket that never answers) and nftables rules that drop
some ports and reject others with ICMP codes. States equal nmap -sU on the same lab in
the same test, port by port, IPv4 and IPv6.

ICMP RATE LIMIT. With the target's defaults (one error per second per peer after a
burst of 6) nmap -sU needs about a second per closed port, so the comparison runs with
the limit off in the target namespace (``icmp_ratemask`` empty; the sysctls are per
namespace), and a second test turns a limit on (10 errors/s) to check that the scan
adapts and still finds every closed port closed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from prtip_nb.engine.scan import Scan
from tests.conftest import need
from tests.net.udplab import ECHO, NTP, RATELIMITS, SILENT, UdpLab, nmap_udp
from tests.net.vethlab import TARGET4, TARGET6

pytestmark = pytest.mark.usefixtures("netns", "root")

DROPPED = "2000-2004"
# ICMP type 3 / ICMPv6 type 1 answers per port, and the (state, reason) both tools give.
REJECT4 = {3000: ("admin-prohibited", ("filtered", "admin-prohibited")),
           3001: ("host-prohibited", ("filtered", "host-prohibited")),
           3002: ("net-unreachable", ("filtered", "net-unreach")),
           3003: ("host-unreachable", ("filtered", "host-unreach")),
           3004: ("port-unreachable", ("closed", "port-unreach"))}
REJECT6 = {3000: ("admin-prohibited", ("filtered", "admin-prohibited")),
           3001: ("addr-unreachable", ("filtered", "host-unreach")),
           3002: ("no-route", ("filtered", "no-route")),
           3004: ("port-unreachable", ("closed", "port-unreach"))}
# The payload ports (closed here but for 53 and 123), the services, the rules, and a run
# of closed ports.
PORTS = ("7,53,111,123,137,161,500,1000-1001,1900,2000-2004,3000-3004,5353,11211,"
         "40000-40010")


def _rules() -> str:
    lines = [f"udp dport {{ {DROPPED} }} drop"]
    lines += [f"meta nfproto ipv4 udp dport {p} reject with icmp type {t}"
              for p, (t, _) in REJECT4.items()]
    lines += [f"meta nfproto ipv6 udp dport {p} reject with icmpv6 type {t}"
              for p, (t, _) in REJECT6.items()]
    body = "\n    ".join(lines)
    return (f"table inet prtipudp {{\n  chain input {{\n    type filter hook input "
            f"priority 0;\n    {body}\n  }}\n}}\n")


@pytest.fixture
def lab() -> Iterator[UdpLab]:
    need(shutil.which("nft") is not None and shutil.which("nsenter") is not None,
         "needs nftables and nsenter")
    need(shutil.which("dnsmasq") is not None, "needs dnsmasq (make test installs it)")
    with UdpLab() as lab:
        lab.nft(_rules())
        yield lab


def _ours(host: str, ports: str, **options: object) -> tuple[dict[int, tuple[str, str]],
                                                               Scan]:
    s = Scan(host, ports, method="udp", **options)
    df = s.start().wait().ports
    assert df["port"].nunique() == len(df)
    return {int(p): (str(st), str(r)) for p, st, r in
            zip(df["port"], df["state"], df["reason"], strict=True)}, s


@pytest.mark.parametrize("host", [TARGET4, TARGET6])
def test_udp_lab_states_equal_nmap(lab: UdpLab, host: str, nmap: str) -> None:
    lab.unlimited()
    ours, s = _ours(host, PORTS)
    theirs = nmap_udp(nmap, host, PORTS)
    assert {p: v[0] for p, v in ours.items()} == {p: v[0] for p, v in theirs.items()}
    assert ours == theirs  # reasons too: udp-response, port-unreach, no-response, ...
    opened = sorted(p for p, (st, _) in ours.items() if st == "open")
    assert opened == sorted([*ECHO, NTP, 53])
    assert ours[SILENT] == ("open|filtered", "no-response")
    for p, (_, want) in (REJECT4 if host == TARGET4 else REJECT6).items():
        assert ours[p] == want
    assert s.engine_stats["capture_drops"] == 0
    assert s.engine_stats["icmp_limit_pps"] == 0  # no limit: no pacing


@pytest.mark.slow
@pytest.mark.parametrize("host", [TARGET4, TARGET6])
def test_icmp_rate_limit_is_measured_and_states_still_equal_nmap(
        lab: UdpLab, host: str, nmap: str) -> None:
    """Target limit: one error per 100 ms, burst 6 (IPv4 and IPv6). 40 closed ports, 5
    dropped: every closed port must come out closed, as nmap -sU finds them, and the
    scan must find the limit rather than fall back to waiting for timeouts."""
    lab.sysctl(RATELIMITS[0], "100")
    lab.sysctl(RATELIMITS[1], "100")
    ports = "20000-20039,2000-2004"
    t0 = time.monotonic()
    ours, s = _ours(host, ports)
    took = time.monotonic() - t0
    assert {ours[p] for p in range(20000, 20040)} == {("closed", "port-unreach")}
    assert {ours[p] for p in range(2000, 2005)} == {("open|filtered", "no-response")}
    limit = s.engine_stats["icmp_limit_pps"]
    # 10/s for IPv4; IPv6's limit may scale with the route's prefix on some kernels.
    assert 5 <= limit <= 50, s.engine_stats["udp_rounds"]
    assert took < 20  # (40 - 6) errors at 10/s: about 3.4 s of pure waiting
    # Our scan has just emptied the target's ICMP bucket: let it refill (burst 6 at 10/s)
    # so that nmap starts from the state we started from.
    time.sleep(1.0)
    theirs = nmap_udp(nmap, host, ports)
    # nmap itself now and then misses one error to the limit and calls that closed port
    # open|filtered (seen in 3 of ~20 runs on a loaded box, never the other way round);
    # the truth is known (20000-20039 closed, checked above), so such a port is nmap's miss.
    missed = {p for p in range(20000, 20040)
              if theirs.get(p) == ("open|filtered", "no-response")}
    assert len(missed) <= 2, missed
    assert {p: v for p, v in theirs.items() if p not in missed} == {
        p: v for p, v in ours.items() if p not in missed}


@pytest.mark.slow
def test_a_firewall_behind_the_limit_does_not_stall_the_pace(lab: UdpLab) -> None:
    """150 dropped ports and 30 closed behind a 10/s limit: paced rounds speed up when
    most probes hit dropped ports (at 12.5/s, 180 probes would take 14 s a round)."""
    lab.nft("table inet fw {\n  chain i {\n    type filter hook input priority 0;\n"
            "    udp dport 30000-30149 drop\n  }\n}\n")
    lab.sysctl(RATELIMITS[0], "100")
    t0 = time.monotonic()
    ours, s = _ours(TARGET4, "20000-20029,30000-30149")
    took = time.monotonic() - t0
    assert {ours[p] for p in range(20000, 20030)} == {("closed", "port-unreach")}
    assert {ours[p] for p in range(30000, 30150)} == {("open|filtered", "no-response")}
    assert took < 12, s.engine_stats["udp_rounds"]


@pytest.mark.slow
def test_an_icmp_bucket_drained_before_the_scan_is_still_measured(lab: UdpLab) -> None:
    """Another scan just emptied the target's bucket (2 errors/s here): round 0 draws
    no error at all, round 1 a couple; the limit must still be measured (from a round
    spread over 2 s), not guessed from those, or closed ports end open|filtered."""
    import socket

    lab.sysctl(RATELIMITS[0], "500")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as drain:
        for p in range(21000, 21012):  # 12 closed ports: the burst of 6 is spent
            drain.sendto(b"", (TARGET4, p))
    time.sleep(0.05)
    ours, s = _ours(TARGET4, "20000-20019")
    assert {ours[p] for p in range(20000, 20020)} == {("closed", "port-unreach")}, \
        s.engine_stats["udp_rounds"]
    assert 1 <= s.engine_stats["icmp_limit_pps"] <= 5


@pytest.mark.slow
def test_two_hosts_each_rate_limited_are_paced_per_host() -> None:
    """Two targets, each its own kernel and its own limit towards us: A one error per
    200 ms, B one per 50 ms (TwoTargets: two namespaces; addresses of one namespace would
    share one bucket). 30 closed ports each. The limit measured while both answer is
    their sum (25/s); once B's ports are all answered, pacing at that sum would drive A
    five times past its limit, and the rounds ran out with closed ports of A left
    open|filtered (measured before the fix: 2-4 of 30). Paced per host, every port is
    closed, in about the time A's limit forces: (30 - 6) / 5 = 4.8 s."""
    from tests.net.udplab import TwoTargets

    need(shutil.which("nsenter") is not None, "needs nsenter")
    with TwoTargets() as lab:
        lab.sysctl(0, RATELIMITS[0], "200")
        lab.sysctl(1, RATELIMITS[0], "50")
        time.sleep(0.3)  # the neighbour probe's token is back in both buckets
        t0 = time.monotonic()
        s = Scan([lab.A, lab.B], "20000-20029", method="udp")
        df = s.start().wait().ports
        took = time.monotonic() - t0
    rounds = s.engine_stats["udp_rounds"]
    assert len(df) == 60
    assert set(zip(df["state"].astype(str), df["reason"].astype(str), strict=True)) == {
        ("closed", "port-unreach")}, (df.groupby(["host", "state"], observed=True).size(),
                                      rounds)
    assert 12 <= s.engine_stats["icmp_limit_pps"] <= 40, rounds  # the sum: 25/s
    assert took < 9, rounds
