"""Traceroute against nmap --traceroute on a chain of router namespaces (lab.routelab),
and the probe codec.

The lab: R1..R4 between the scanner and the targets, R3 silent (sends no time exceeded),
every target behind all four. nmap's hops for the same hosts, in the same run, are the
reference: same hops in the same order; the shared routers probed by one host only.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prtip_nb.net.traceroute import distance_from_ttl
from prtip_nb.probes import trace as tp
from tests.conftest import need, need_range_lab


# -- the codec (pure: no sockets) ------------------------------------------------------------
def _icmp4(src: str, typ: int, quoted: bytes) -> bytes:
    body = struct.pack("!BBHI", typ, 0, 0, 0) + quoted
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 250, 1, 0,
                     ipaddress.ip_address(src).packed, bytes(4))
    return ip + body


def test_codec_time_exceeded_quotes_the_probe() -> None:
    syn = tp.build_probe(4, "198.18.0.1", "198.19.0.1", "tcp", ttl=3, sport=40001, dport=80)
    assert syn[8] == 3 and syn[9] == 6  # TTL and protocol in the IPv4 header
    ans = tp.parse_icmp(4, _icmp4("198.18.2.2", 11, syn[:28]), "ignored")
    assert ans is not None and ans.kind == "time-exceeded" and not ans.final
    assert ans.responder == "198.18.2.2" and ans.ttl == 250
    assert ans.key == tp.probe_key("198.19.0.1", "tcp", 40001)
    # The target's port unreachable for a UDP probe ends the trace.
    udp = tp.build_probe(4, "198.18.0.1", "198.19.0.1", "udp", ttl=9, sport=40002, dport=53)
    done = tp.parse_icmp(4, _icmp4("198.19.0.1", 3, udp[:28]), "")
    assert done is not None and done.final and done.key == tp.probe_key("198.19.0.1", "udp",
                                                                         40002)
    # IPv6: the raw socket gives the ICMPv6 message only; the source comes from recvfrom.
    echo = tp.build_probe(6, "2001:db8::1", "2001:db8::9", "icmp", ttl=2, sport=0, seq=7,
                          icmp_id=0x1234)
    assert echo[7] == 2  # hop limit
    te = struct.pack("!BBHI", 3, 0, 0, 0) + echo
    got = tp.parse_icmp(6, te, "2001:db8:1800::2")
    assert got is not None and got.key == ("2001:db8::9", tp.ICMP, 0x1234 << 16 | 7)
    reply = struct.pack("!BBHHH", 129, 0, 0, 0x1234, 7)
    fin = tp.parse_icmp(6, reply, "2001:db8::9")
    assert fin is not None and fin.final and fin.key == got.key
    synack = struct.pack("!HHIIBBHHH", 80, 40001, 1, 2, 5 << 4, 0x12, 1000, 0, 0)
    back = tp.parse_tcp(6, synack, "2001:db8::9")
    assert back is not None and back.kind == "syn-ack" and back.key[2] == 40001
    assert tp.parse_icmp(4, b"\x45" + bytes(10), "") is None  # short: ignored
    assert tp.parse_icmp(4, _icmp4("198.18.2.2", 5, syn[:28]), "") is None  # a redirect
    with pytest.raises(ValueError):
        tp.build_probe(4, "198.18.0.1", "198.19.0.1", "sctp", ttl=1, sport=1)


def test_distance_from_reply_ttl() -> None:
    assert distance_from_ttl(60) == 5  # Linux's 64, four routers on the way
    assert distance_from_ttl(64) == 1
    assert distance_from_ttl(124) == 5  # Windows' 128
    assert distance_from_ttl(250) == 6  # 255


# -- the lab ---------------------------------------------------------------------------------
def _hops(xml: str) -> dict[str, list[tuple[int, str]]]:
    """host -> [(ttl, ipaddr)] of each <trace> of an nmap XML text."""
    out = {}
    for block in re.findall(r"<host\b.*?</host>", xml, re.S):
        addr = re.search(r'<address addr="([^"]+)" addrtype="ipv[46]"', block)
        hops = re.findall(r'<hop ttl="(\d+)" ipaddr="([^"]+)"', block)
        if addr and hops:
            out[addr.group(1)] = [(int(t), a) for t, a in hops]
    return out


def _nmap(args: list[str], out: dict[str, str], key: str) -> None:
    done = subprocess.run(["nmap", "-n", *args, "-oX", "-"], capture_output=True, text=True,
                          timeout=120)
    out[key] = done.stdout


@pytest.fixture(scope="module")
def routelab() -> Iterator[object]:
    need_range_lab()
    need(shutil.which("nmap") is not None, "needs nmap")
    from prtip_nb.lab.routelab import RouteLab

    with RouteLab(targets=2, silent=(3,), tcp=[80]) as lab:
        yield lab


def test_traceroute_equals_nmaps_v4_and_v6(routelab: object, tmp_path: Path) -> None:
    """SYN to the open port: the same hops as nmap's, IPv4 and IPv6, the silent R3 left
    out; the second host probes only its own TTL and the hop where it meets the first."""
    import prtip_nb as pn
    from prtip_nb.lab.routelab import RouteLab

    lab = routelab
    assert isinstance(lab, RouteLab)
    theirs: dict[str, str] = {}
    threads = [threading.Thread(target=_nmap, args=(["-sS", "-p80", "--traceroute", *t],
                                                    theirs, str(f)))
               for f, t in ((4, lab.targets4), (6, ["-6", *lab.targets6]))]
    for t in threads:
        t.start()
    results = {f: pn.scan(t, ports="80", method="syn", traceroute=True, resolve="never")
               for f, t in ((4, lab.targets4), (6, lab.targets6))}
    for t in threads:
        t.join(120)
    for family, res in results.items():
        ours: dict[str, list[tuple[int, str]]] = {}
        for r in res.tables["trace"].to_pylist():
            ours.setdefault(r["host"], []).append((r["ttl"], r["address"]))
            assert (r["probe_proto"], r["probe_port"]) == ("tcp", 80)
        expected = [(n, a) for n, a in enumerate(lab.expected_hops(family), 1) if a]
        targets = lab.targets4 if family == 4 else lab.targets6
        assert ours == _hops(theirs[str(family)]), family
        assert ours == {t: [*expected, (5, t)] for t in targets}
        ev = [e for e in res.tables["events"].to_pylist() if e["kind"] == "TracerouteCompleted"]
        per_host = json.loads(ev[0]["payload"])["per_host"]
        # One host walks 5, 4, 3 (twice: silent), 2, 1; the other stops where it meets it.
        assert sorted(per_host.values()) == [2, 6], per_host
    # The graph: scanner, R1, R2, one silent "?" (shared), R4, and the two hosts.
    fig = pn.plot.topology(results[4])
    nodes = {tr.name: list(tr.text) for tr in fig.data if tr.mode == "markers+text"}
    assert nodes == {"scanner": ["scanner"], "router": ["198.18.0.2", "198.18.1.2",
                                                        "198.18.3.2"],
                     "silent hop": ["?"], "traced host": sorted(lab.targets4)}
    page = pn.report(results[4], tmp_path / "report.html").read_text()
    assert "chart-topology" in page  # the HTML report shows the paths


def test_ping_sweep_traceroute_by_icmp_equals_nmaps(routelab: object) -> None:
    """-sn --traceroute: ICMP echo probes, the same hops as nmap -sn --traceroute."""
    import prtip_nb as pn
    from prtip_nb.lab.routelab import RouteLab

    lab = routelab
    assert isinstance(lab, RouteLab)
    theirs: dict[str, str] = {}
    t = threading.Thread(target=_nmap, args=(["-sn", "--traceroute", *lab.targets4], theirs,
                                             "sn"))
    t.start()
    res = pn.discover(lab.targets4, traceroute=True, resolve="never")
    t.join(120)
    ours: dict[str, list[tuple[int, str]]] = {}
    for r in res.tables["trace"].to_pylist():
        ours.setdefault(r["host"], []).append((r["ttl"], r["address"]))
        assert r["probe_proto"] == "icmp" and r["probe_port"] is None
    assert ours == _hops(theirs["sn"])
    assert set(ours) == set(lab.targets4)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([4, 6]))
def test_answer_parsers_never_raise_on_hostile_bytes(data: bytes, family: int) -> None:
    """Whatever the raw ICMP and TCP sockets read: an Answer or None, never an exception."""
    src = "198.18.0.2" if family == 4 else "2001:db8:1800::2"
    for parse in (tp.parse_icmp, tp.parse_tcp):
        parse(family, data, src)
    # An ICMP error quoting these bytes (the quote parser runs on them).
    tp.parse_icmp(family, (_icmp4(src, 11, data) if family == 4
                           else struct.pack("!BBHI", 3, 0, 0, 0) + data), src)
