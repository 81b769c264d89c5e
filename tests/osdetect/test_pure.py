"""The pure parts of OS detection: probe bytes, reply parsing, nmap's tests, db matching.

Replies here are built with scapy (an independent encoder) as a target would send them;
the lab test (test_vs_nmap.py) checks the same code against nmap on real stacks.
"""

from __future__ import annotations

import socket

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror

from prtip_nb.osdetect import fingerprint as fpm
from prtip_nb.osdetect.detect import os_rows, plan_hosts, shown_matches
from prtip_nb.osdetect.fingerprint import (
    compute,
    format_lines,
    ipid_class,
    options_string,
    parse_fingerprint,
    wrap,
)
from prtip_nb.osdetect.osdb import OsMatch, expr_match, parse_db
from prtip_nb.osdetect.probes import PROBE_ORDER, U1_ID, build_probes
from prtip_nb.osdetect.replies import ReplyMatcher, parse_reply

SRC, DST = socket.inet_aton("198.18.0.1"), socket.inet_aton("198.18.0.10")


def probes():
    return build_probes(SRC, DST, open_port=22, closed_port=80, closed_udp=40000,
                        sport_base=50000, seq_base=1000, ack=777, icmp_id=0x200, ip_id=500)


def test_probe_bytes_decode_as_nmap_documents():
    ps = probes()
    assert list(ps.probes) == list(PROBE_ORDER)
    seq1 = IP(ps["SEQ1"].packet)
    assert seq1[TCP].window == 1 and seq1[TCP].flags == "S" and seq1[TCP].dport == 22
    assert [o[0] for o in seq1[TCP].options] == ["WScale", "NOP", "MSS", "Timestamp",
                                                 "SAckOK"]
    assert dict((k, v) for k, v in seq1[TCP].options if k != "NOP")["Timestamp"] == \
        (0xFFFFFFFF, 0)
    windows = [IP(ps[n].packet)[TCP].window for n in PROBE_ORDER[:13]]
    assert windows == [1, 63, 4, 4, 16, 512, 3, 128, 256, 1024, 31337, 32768, 65535]
    ecn = IP(ps["ECN"].packet)[TCP]
    assert ecn.flags == "SEC" and ecn.urgptr == 0xF7F5 and ecn.ack == 0 and ecn.reserved
    t7 = IP(ps["T7"].packet)
    assert t7[TCP].flags == "FPU" and t7[TCP].dport == 80 and ("WScale", 15) in t7[TCP].options
    assert IP(ps["T2"].packet).flags == "DF" and not IP(ps["T3"].packet).flags
    u1 = IP(ps["U1"].packet)
    assert u1.id == U1_ID and bytes(u1[UDP].payload) == b"C" * 300 and u1.len == 0x148
    ie1, ie2 = IP(ps["IE1"].packet), IP(ps["IE2"].packet)
    assert (ie1.flags, ie1.tos, ie1[ICMP].code, ie1[ICMP].seq) == ("DF", 0, 9, 295)
    assert (ie2.tos, ie2[ICMP].code, len(ie2[ICMP].payload)) == (4, 0, 150)
    assert ie2[ICMP].id == ie1[ICMP].id + 1
    for name in PROBE_ORDER:  # every checksum right: scapy recomputes and compares
        pkt = IP(ps[name].packet)
        raw = bytes(pkt)
        del pkt.chksum
        inner = pkt.payload
        del inner.chksum
        assert bytes(pkt) == raw, name


def _synack(probe, *, seq, window=0xFE88, ttl=64, ipid=0, opts=None, t=0.0):
    ip = IP(src="198.18.0.10", dst="198.18.0.1", ttl=ttl, id=ipid, flags="DF")
    tcp = TCP(sport=probe.dport, dport=probe.sport, flags="SA", seq=seq, ack=probe.seq + 1,
              window=window,
              options=opts or [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1234, 0xFFFF)),
                               ("NOP", None), ("WScale", 7)])
    return parse_reply(bytes(ip / tcp), t)


def _rst(probe, *, seq=0, ack=None, flags="RA", ttl=64):
    ip = IP(src="198.18.0.10", dst="198.18.0.1", ttl=ttl, id=0, flags="DF")
    tcp = TCP(sport=probe.dport, dport=probe.sport, flags=flags, seq=seq,
              ack=probe.seq + 1 if ack is None else ack, window=0)
    return parse_reply(bytes(ip / tcp))


def _replies(ps, *, icmp=True):
    r = {}
    for i, name in enumerate(PROBE_ORDER[:6]):
        r[name] = _synack(ps[name], seq=0x10000000 + i * 250000, t=i * 0.1)
    r["ECN"] = parse_reply(bytes(
        IP(src="198.18.0.10", dst="198.18.0.1", ttl=64, flags="DF")
        / TCP(sport=22, dport=ps["ECN"].sport, flags="SAE", seq=5, ack=ps["ECN"].seq + 1,
              window=0xFAF0, options=[("MSS", 1460), ("NOP", None), ("NOP", None),
                                      ("SAckOK", b""), ("NOP", None), ("WScale", 7)])))
    r["T4"] = _rst(ps["T4"], seq=ps["T4"].ack, ack=0, flags="R")
    r["T5"] = _rst(ps["T5"])
    r["T6"] = _rst(ps["T6"], seq=ps["T6"].ack, ack=0, flags="R")
    r["T7"] = _rst(ps["T7"])
    sent_u1 = IP(ps["U1"].packet)
    quoted = bytes(sent_u1)
    r["U1"] = parse_reply(bytes(IP(src="198.18.0.10", dst="198.18.0.1", ttl=64)
                                / ICMP(type=3, code=3) / quoted))
    if icmp:
        for name in ("IE1", "IE2"):
            sent = IP(ps[name].packet)
            r[name] = parse_reply(bytes(
                IP(src="198.18.0.10", dst="198.18.0.1", ttl=64, id=sent.id + 7)
                / ICMP(type=0, code=sent[ICMP].code, id=sent[ICMP].id, seq=sent[ICMP].seq)
                / bytes(sent[ICMP].payload)))
    return r


def test_linux_like_replies_give_linux_lines():
    ps = probes()
    r = _replies(ps)
    sent = {n: i * 0.1 for i, n in enumerate(PROBE_ORDER)}
    fp = compute(r, ps, sent, distance=1)
    assert fp["OPS"]["O1"] == "M5B4ST11NW7"
    assert fp["WIN"] == {f"W{i}": "FE88" for i in range(1, 7)}
    assert fp["ECN"] == {"R": "Y", "DF": "Y", "T": "40", "W": "FAF0", "O": "M5B4NNSNW7",
                         "CC": "Y", "Q": ""}
    assert fp["T1"] == {"R": "Y", "DF": "Y", "T": "40", "S": "O", "A": "S+", "F": "AS",
                        "RD": "0", "Q": ""}
    assert fp["T2"] == {"R": "N"} and fp["T3"] == {"R": "N"}
    assert fp["T4"]["S"] == "A" and fp["T4"]["A"] == "Z" and fp["T4"]["F"] == "R"
    assert fp["T5"]["S"] == "Z" and fp["T5"]["A"] == "S+" and fp["T5"]["F"] == "AR"
    assert fp["U1"] == {"R": "Y", "DF": "N", "T": "40", "IPL": "164", "UN": "0",
                        "RIPL": "G", "RID": "G", "RIPCK": "G", "RUCK": "G", "RUD": "G"}
    assert fp["IE"] == {"R": "Y", "DFI": "N", "T": "40", "CD": "S"}
    seq = fp["SEQ"]
    assert seq["GCD"] == "3D090" and seq["TI"] == "Z" and seq["CI"] == "Z"
    assert seq["II"] == "I" and seq["TS"] == "1"  # a constant TSval: rate 0
    # 250000 per 0.1 s: 2.5 M/s, ISR = round(8 * log2(2.5e6)) = 0xAA
    assert seq["ISR"] == "AA"


def test_no_distance_gives_tg_and_missing_replies_r_n():
    ps = probes()
    r = _replies(ps, icmp=False)
    del r["U1"]
    fp = compute(r, ps, {n: 0.0 for n in PROBE_ORDER}, distance=None)
    assert fp["T1"]["TG"] == "40" and "T" not in fp["T1"]
    assert fp["U1"] == {"R": "N"} and fp["IE"] == {"R": "N"}
    assert "II" not in fp["SEQ"]


def test_ttl_128_host_and_changed_quoted_packet():
    ps = probes()
    r = _replies(ps)
    sent_u1 = IP(ps["U1"].packet)
    sent_u1.id = 0x1234
    sent_u1[UDP].chksum = 0xBEEF
    r["U1"] = parse_reply(bytes(IP(src="198.18.0.10", dst="198.18.0.1", ttl=125)
                                / ICMP(type=3, code=3) / bytes(sent_u1)[:28]))
    fp = compute(r, ps, {n: 0.0 for n in PROBE_ORDER}, distance=4)
    assert fp["U1"]["T"] == "80"  # 125 + 4 - 1
    assert fp["U1"]["RID"] == "1234" and fp["U1"]["RUCK"] == "BEEF"
    assert fp["U1"]["RIPL"] == "G" and fp["U1"]["RUD"] == "G"  # truncated data counts G


def test_reply_matcher_names_probes_and_ignores_others():
    ps = probes()
    m = ReplyMatcher(DST, ps)
    r = _replies(ps)
    for name, reply in r.items():
        assert m.match(reply) == name
    stray = parse_reply(bytes(IP(src="198.18.0.10", dst="198.18.0.1")
                              / TCP(sport=22, dport=1234, flags="SA")))
    assert m.match(stray) is None
    other = parse_reply(bytes(IP(src="198.18.0.99", dst="198.18.0.1")
                              / TCP(sport=22, dport=ps["SEQ1"].sport, flags="SA")))
    assert m.match(other) is None
    wrong_udp = parse_reply(bytes(IP(src="198.18.0.10", dst="198.18.0.1") / ICMP(type=3, code=3)
                                  / IPerror(src="198.18.0.1", dst="198.18.0.10")
                                  / UDPerror(sport=1, dport=2)))
    assert m.match(wrong_udp) is None
    assert parse_reply(b"\x45\x00") is None and parse_reply(b"") is None


@pytest.mark.parametrize(("opts", "want"), [
    (b"\x02\x04\x05\xb4\x04\x02\x08\x0a\0\0\0\1\0\0\0\0\x01\x03\x03\x07", "M5B4ST10NW7"),
    (b"\x02\x04\x05\xb4\x01\x01\x04\x02\x01\x03\x03\x0a", "M5B4NNSNWA"),
    (b"\x02\x04\x01\x09\x00\x01\x01", "M109L"),
    (b"\x02\x04\x05", ""),  # truncated option: stop
    (b"", ""),
])
def test_options_string(opts, want):
    assert options_string(opts) == want


@pytest.mark.parametrize(("ids", "icmp", "want"), [
    ([0, 0, 0], False, "Z"),
    ([5, 30000, 60000], False, "RD"),
    ([7, 7, 7], False, "7"),
    ([100, 1300, 2900], False, "RI"),
    ([256, 512, 1024], False, "BI"),
    ([10, 11, 13], False, "I"),
    ([10, 40000], True, "RI"),  # II is never RD
    ([10, 500], False, None),
])
def test_ipid_class(ids, icmp, want):
    assert ipid_class(ids, icmp=icmp) == want


@pytest.mark.parametrize(("val", "expr", "ok"), [
    ("40", "3B-45", True), ("46", "3B-45", False), ("FE88", "FE88|FAF0", True),
    ("O", "O|S+", True), ("A", ">9", True), ("5", ">9", False), ("5", "<9", True),
    ("", "", True), ("M5B4", "", False), ("3", "+", True), ("0", "+", False),
    ("Z", "3B-45", False), ("S+", "S+", True), ("10", "3-5|10", True),
])
def test_expr_match(val, expr, ok):
    assert expr_match(val, expr) is ok


_DB = """\
# a small database in nmap-os-db's format
MatchPoints
SEQ(SP=25%GCD=75%ISR=25%TI=100%CI=50%II=100%SS=80%TS=100)
OPS(O1=20%O2=20%O3=20%O4=20%O5=20%O6=20)
T1(R=100%DF=20%T=15%TG=15%S=20%A=20%F=30%RD=20%Q=20)
IE(R=50%DFI=40%T=15%TG=15%CD=100)

Fingerprint Alpha OS 1.0
Class Alpha | AlphaOS | 1.X | general purpose
CPE cpe:/o:alpha:alphaos:1 auto
Class Alpha | embedded || router
CPE cpe:/h:alpha:box
T1(R=Y%DF=Y%T=3B-45%TG=40%S=O%A=S+%F=AS%RD=0%Q=)
IE(R=Y%DFI=N%T=3B-45%TG=40%CD=S)

Fingerprint Beta OS
Class Beta | BetaOS || general purpose
T1(R=Y%DF=N%T=7B-85%TG=80%S=O%A=S+%F=AS%RD=0%Q=)
IE(R=Y%DFI=N%T=7B-85%TG=80%CD=Z)

Fingerprint Alpha OS 1.0
Class Alpha | AlphaOS | 1.X | general purpose
T1(R=Y%DF=N%T=40%S=O%A=S+%F=AS%RD=0%Q=)
"""


def test_parse_db_and_score():
    db = parse_db(_DB)
    assert len(db.prints) == 3 and db.prints[0].line == 8
    alpha = db.prints[0]
    assert alpha.classes[0].cpe == ("cpe:/o:alpha:alphaos:1",)
    assert alpha.classes[1].generation is None and alpha.classes[1].type == "router"
    fp = {"T1": {"R": "Y", "DF": "Y", "T": "40", "S": "O", "A": "S+", "F": "AS", "RD": "0",
                 "Q": ""},
          "IE": {"R": "Y", "DFI": "N", "T": "40", "CD": "S"}}
    m = db.match(fp, threshold=0.0)
    assert [x.name for x in m] == ["Alpha OS 1.0", "Beta OS"]  # one per name, the best
    assert m[0].accuracy == 1.0 and m[0].line == 8
    # Only attributes in both count (T, not TG). Beta: T1 misses DF (20) and T (15) of
    # 245; IE misses T (15) and CD (100) of 205.
    assert m[1].accuracy == pytest.approx((245 - 35 + 205 - 115) / (245 + 205))
    assert db.match(fp)[1:] == []  # below 85 %: not listed
    assert list(db.scores(fp)) == pytest.approx([db.accuracy(r, fp) for r in db.prints])
    with pytest.raises(ValueError, match="MatchPoints"):
        parse_db("Fingerprint X\nClass a | b || c\n")
    with pytest.raises(ValueError, match="cannot read"):
        parse_db("MatchPoints\nT1(R=1)\nFingerprint X\nnonsense\n")


def _m(name, acc):
    return OsMatch(name, acc, 1, ())


def test_shown_matches_as_nmap_reports():
    perfect = [_m("a", 1.0), _m("b", 1.0), _m("c", 0.97)]
    assert [m.name for m in shown_matches(perfect)] == ["a", "b"]
    guesses = [_m(str(i), 0.96 - i * 0.005) for i in range(15)] + [_m("far", 0.85)]
    shown = shown_matches(guesses)
    assert len(shown) == 10 and shown[0].name == "0"
    assert [m.name for m in shown_matches([_m("x", 0.95), _m("y", 0.85)])] == ["x"]
    assert shown_matches([]) == []


def test_format_wrap_parse_roundtrip():
    ps = probes()
    fp = compute(_replies(ps), ps, {n: i * 0.1 for i, n in enumerate(PROBE_ORDER)}, 1)
    text = format_lines(fp, {"V": "x", "E": "4"})
    assert text.splitlines()[0] == "SCAN(V=x%E=4)" and text.splitlines()[1].startswith("SEQ(")
    wrapped = wrap(text)
    assert all(len(line) <= 74 and line.startswith("OS:") for line in wrapped.splitlines())
    assert parse_fingerprint(wrapped) == fp
    assert parse_fingerprint(text) == fp


def test_plan_hosts_picks_ports_like_nmap():
    rows = [("a", "tcp", 443, "open"), ("a", "tcp", 22, "open"), ("a", "tcp", 81, "closed"),
            ("a", "udp", 53, "closed"), ("b", "tcp", 22, "open"), ("c", "tcp", 80, "filtered")]
    plans = {p.host: p for p in plan_hosts(rows, seed=1)}
    assert (plans["a"].open_port, plans["a"].closed_port, plans["a"].closed_udp) == (22, 81, 53)
    assert plans["a"].reliable and not plans["b"].reliable
    assert 30000 <= plans["b"].closed_port < 65000 and plans["c"].open_port is None
    assert [p.host for p in plan_hosts(rows, limit=True)] == ["a"]


def test_os_rows_follow_schema():
    import pyarrow as pa

    from prtip_nb.osdetect.detect import HostOs
    from prtip_nb.osdetect.osdb import OsClass
    from prtip_nb.results import schema

    m = OsMatch("Alpha OS", 0.967, 42, (OsClass("Alpha", "AlphaOS", None, "router",
                                                ("cpe:/o:alpha",)),))
    res = HostOs("198.18.0.10", {}, "", [m], True, 1)
    rows = os_rows(res)
    assert rows[0]["accuracy"] == 96 and rows[0]["classes"][0]["accuracy"] == 96
    table = pa.Table.from_pylist(rows, schema=schema.OS.remove(0))
    assert table.num_rows == 1


def test_load_db_reports_a_missing_nmap(tmp_path, monkeypatch):
    from prtip_nb.errors import ConfigError
    from prtip_nb.osdetect import osdb

    monkeypatch.setattr(osdb, "find_db", lambda: None)
    with pytest.raises(ConfigError, match="install nmap"):
        osdb.load_db()
    bad = tmp_path / "nmap-os-db"
    bad.write_text("hello\n")
    with pytest.raises(ValueError, match="cannot read"):
        osdb.load_db(bad)


def test_ttl_guess():
    assert [fpm.ttl_guess(t) for t in (30, 50, 64, 100, 200)] == [32, 64, 64, 128, 255]


def test_reply_timeout_follows_the_scan_rtt():
    import pyarrow as pa

    from prtip_nb.engine.osstage import reply_timeout

    def t(rtts):
        return reply_timeout(pa.table({"rtt_ms": pa.array(rtts, pa.float32())}))

    assert t([0.1, None]) == 0.5 and t([]) == 0.5 and t([None]) == 0.5
    assert t([300.0]) == pytest.approx(1.2) and t([9000.0]) == 5.0


def test_too_many_perfect_matches_report_none():
    head = "MatchPoints\nIE(R=50%DFI=40%T=15%TG=15%CD=100)\n"
    entries = "".join(f"Fingerprint OS {i}\nClass V | F || general purpose\nIE(R=Y%CD=S)\n"
                      for i in range(37))
    fp = {"IE": {"R": "Y", "CD": "S"}}
    assert parse_db(head + entries).match(fp) == []  # nmap: "Too many fingerprints match"
    assert len(parse_db(head + entries.split("Fingerprint OS 36")[0]).match(fp)) == 36
