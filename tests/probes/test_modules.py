"""The probe modules (probes.tcpsyn, probes.udpprobe): built packets are valid, and
``validate`` / ``classify`` accept exactly the replies to our probes, with the receivers'
verdicts on the golden ring blocks."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pytest

from prtip_nb.probes.cookie import CookieKey, cookie
from prtip_nb.probes.inet import checksum
from prtip_nb.probes.module import ProbeModule
from prtip_nb.probes.records import DTYPE as RECORD_DTYPE
from prtip_nb.probes.rows import ICMP4_UDP, TCP4, TCP6, UDP4
from prtip_nb.probes.tcp import LAYOUTS, checksum_base, make_syn
from prtip_nb.probes.tcpsyn import SYN
from prtip_nb.probes.udp import UDP_LAYOUTS, addr_sum, marker_of, payload_base
from prtip_nb.probes.udpprobe import UDP
from prtip_nb.probes.verdicts import CLOSED, ICMP4, OPEN
from tests.net import hostile

SRC4, DST4 = socket.inet_aton("192.0.2.1"), socket.inet_aton("198.51.100.7")
SRC6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
DST6 = socket.inet_pton(socket.AF_INET6, "2001:db8::7")
SPORT = 40000
PORTS = np.array([1, 22, 80, 443, 8080, 65535], np.uint64)


def _row(dt: np.dtype, packet: bytes) -> np.ndarray:
    return np.frombuffer(packet.ljust(dt.itemsize, b"\0")[: dt.itemsize], dt)


def test_modules_follow_the_protocol() -> None:
    for mod in (SYN, UDP):
        assert isinstance(mod, ProbeModule)
        assert set(mod.fills) <= set(RECORD_DTYPE.names or ())


@pytest.mark.parametrize(("family", "src", "dst"), [(4, SRC4, DST4), (6, SRC6, DST6)])
def test_syn_batch_equals_the_scalar_probe(family: int, src: bytes, dst: bytes) -> None:
    """``make``'s numpy fields, patched into ``prepare``'s template, are the bytes
    probes.tcp.make_syn builds one at a time (and that scapy checks in test_syn_probes)."""
    tmpl = SYN.prepare(family, src, SPORT)
    key = CookieKey(bytes(16)).host_key(src, dst, SPORT)
    base = checksum_base(tmpl, family, src, dst)
    batch = SYN.make(family, key, base, PORTS)
    lay = LAYOUTS[family]
    for k, port in enumerate(PORTS.tolist()):
        want = make_syn(tmpl, family, base, dst, port, cookie(key, port))
        assert int(batch["seq"][k]) == cookie(key, port)
        assert struct.unpack_from("!H", want, lay.csum)[0] == int(batch["csum"][k])


@pytest.mark.parametrize("family", [4, 6])
def test_syn_validate_wants_the_cookie_and_our_address(family: int) -> None:
    src, dst = (SRC4, DST4) if family == 4 else (SRC6, DST6)
    dt = TCP4 if family == 4 else TCP6
    key = CookieKey(bytes(16)).host_key(src, dst, SPORT)
    s, d = socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6, src), \
        socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6, dst)
    ip = hostile.ip4 if family == 4 else hostile.ip6
    ack = (cookie(key, 443) + 1) & 0xFFFFFFFF
    replies = [
        (ip(6, hostile.tcp(443, SPORT, 9, ack, 0x12), src=d, dst=s), True, True, OPEN),
        (ip(6, hostile.tcp(443, SPORT, 9, ack, 0x14), src=d, dst=s), True, True, CLOSED),
        (ip(6, hostile.tcp(443, SPORT, 9, ack - 1, 0x12), src=d, dst=s), True, False, OPEN),
        (ip(6, hostile.tcp(443, SPORT, 9, ack, 0x12), src=d, dst=d), True, False, OPEN),
        (ip(6, hostile.tcp(443, SPORT, 9, ack, 0x10), src=d, dst=s), False, True, OPEN),
        (ip(6, hostile.tcp(443, SPORT, 9, ack, 0x04), src=d, dst=s), False, True, OPEN),
        (ip(6, hostile.tcp(443, SPORT, 9, ack, 0x16), src=d, dst=s), True, True, CLOSED),
    ]
    rows = np.concatenate([_row(dt, pkt) for pkt, *_ in replies])
    hi = int.from_bytes(src, "big")
    src_hi, src_lo = (np.uint64(hi), np.uint64(0)) if family == 4 else (
        np.uint64(hi >> 64), np.uint64(hi & ((1 << 64) - 1)))
    assert SYN.accept(rows).tolist() == [r[1] for r in replies]
    assert SYN.validate(family, rows, key, src_hi, src_lo).tolist() == [r[2] for r in replies]
    assert SYN.classify(family, rows).tolist() == [r[3] for r in replies]
    assert SYN.verdict(OPEN) == ("open", "syn-ack") and SYN.verdict(CLOSED) == ("closed", "reset")


def test_udp_batch_checksums_verify() -> None:
    """A probe built from ``prepare`` + ``make`` carries a UDP checksum that verifies and
    the marker of its cookie in the IPv4 id."""
    payload = b"\x00\x01probe"
    tmpl = UDP.prepare(4, SRC4, SPORT, payload)
    key = CookieKey(bytes(16)).host_key(SRC4, DST4, SPORT)
    base = addr_sum(SRC4) + addr_sum(DST4) + payload_base(SPORT, payload)
    batch = UDP.make(4, key, base, PORTS)
    lay = UDP_LAYOUTS[4]
    for k, port in enumerate(PORTS.tolist()):
        pkt = bytearray(tmpl)
        pkt[lay.dst : lay.dst + 4] = DST4
        struct.pack_into("!H", pkt, lay.dport, port)
        struct.pack_into("!I", pkt, lay.seq, int(batch["seq"][k]))
        struct.pack_into("!H", pkt, lay.csum, int(batch["csum"][k]))
        seg = bytes(pkt[20:])
        pseudo = SRC4 + DST4 + struct.pack("!BBH", 0, 17, len(seg))
        assert checksum(pseudo + seg) == 0
        assert struct.unpack_from("!H", pkt, 4)[0] == marker_of(4, cookie(key, port))


def test_udp_errors_need_the_marker_and_say_closed_only_from_the_target() -> None:
    key = CookieKey(bytes(16)).host_key(SRC4, DST4, SPORT)
    mark = marker_of(4, cookie(key, 53))
    quoted = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, mark, 0, 64, 17, 0, SRC4, DST4) \
        + hostile.udp(SPORT, 53)
    forged = quoted[:4] + struct.pack("!H", mark ^ 0x0101) + quoted[6:]
    me, target, router = "192.0.2.1", "198.51.100.7", "203.0.113.1"
    pkts = [hostile.ip4(1, hostile.icmp(3, 3, quoted), src=target, dst=me),
            hostile.ip4(1, hostile.icmp(3, 3, quoted), src=router, dst=me),
            hostile.ip4(1, hostile.icmp(3, 13, quoted), src=target, dst=me),
            hostile.ip4(1, hostile.icmp(3, 3, forged), src=target, dst=me)]
    err = np.concatenate([_row(ICMP4_UDP, p) for p in pkts])
    ip = np.concatenate([_row(UDP4, p) for p in pkts])
    keys = np.full(len(pkts), key, np.uint64)
    assert UDP.marked(4, err, keys).tolist() == [True, True, True, False]
    codes = UDP.classify_error(4, ip, err).tolist()
    assert codes[:3] == [CLOSED, ICMP4 + 3, ICMP4 + 13]
    assert UDP.verdict(codes[1]) == ("filtered", "port-unreach")
    assert UDP.verdict(codes[0]) == ("closed", "port-unreach")


@pytest.mark.parametrize("family", [4, 6])
def test_syn_module_agrees_with_the_receiver_on_the_golden_blocks(family: int) -> None:
    """Every TCP verdict the SYN receiver wrote for a stored block is the module's: the
    rows the module accepts and validates, classified, are the receiver's (index, code)."""
    from tests.net.golden_rx import PATH, receiver
    from tests.net.golden_rx import SPORT as GSPORT

    rx, _ = receiver("syn", family)
    with np.load(PATH) as d:
        arr, (first, n) = d[f"syn{family}g_block"], d[f"syn{family}g_meta"].tolist()
        want = d[f"syn{family}g_records"].view(RECORD_DTYPE)
    want = {(int(r["index"]), int(r["code"])) for r in want if r["code"] in (OPEN, CLOSED)}
    got = set()
    off, dt = first, SYN.rows(family)
    for _ in range(n):  # walk the block's frames (tpacket3_hdr: next, snap, net)
        (nxt,), (snap,), (net,) = (struct.unpack_from(f, arr, off + o)
                                   for f, o in (("<I", 0), ("<I", 12), ("<H", 26)))
        pkt = bytes(arr[off + net : off + net + snap])
        if len(pkt) >= dt.itemsize and pkt[(9 if family == 4 else 6)] == 6 and (
                family == 6 or pkt[0] == 0x45):
            row = _row(dt, pkt)
            h = rx.hosts.index_array(family, row["src"], None if family == 4 else row["src_lo"])
            pi = rx.ports.index_array(row["tport"])
            if SYN.accept(row)[0] and h[0] >= 0 and pi[0] >= 0 and row["myport"][0] == GSPORT:
                info = rx.hosts.info(int(h[0]))
                src = int.from_bytes(info.src, "big")
                hi, lo = (src, 0) if family == 4 else (src >> 64, src & ((1 << 64) - 1))
                if SYN.validate(family, row, info.key, np.uint64(hi), np.uint64(lo))[0]:
                    j = int(pi[0]) * rx.hosts.size + int(h[0])
                    got.add((j, int(SYN.classify(family, row)[0])))
        off += nxt
    assert got == want and len(want) >= 15


def test_ping_module_builds_nmaps_probes_and_accepts_only_keyed_replies() -> None:
    from prtip_nb.probes.pingprobe import PING
    from prtip_nb.probes.verdicts import NO_RESPONSE, PING_REASONS, verdict

    key, ident, me, target = 0x1122334455667788, 0x4242, "192.0.2.1", "198.51.100.7"
    probes = PING.make(4, SRC4, DST4, sport=SPORT, ident=ident, rnd=1, key=key, on_link=False)
    assert [name for name, _ in probes] == ["icmp4", "tcp4", "tcp4", "icmp4"]  # echo, SYN
    assert probes[0][1][0] == 8 and probes[3][1][0] == 13  # 443, ACK 80, timestamp
    six = {on: PING.make(6, SRC6, DST6, sport=SPORT, ident=ident, rnd=0, key=key, on_link=on)
           for on in (False, True)}
    assert six[True] == six[False][:1] and six[True][0][0] == "icmp6"  # on-link: the echo
    keys = {DST4: key}
    reply = hostile.ip4(1, hostile.icmp(0, 0, struct.pack("!Q", key), rest=(ident << 16) | 1),
                        src=target, dst=me)
    got = PING.classify("icmp4", 4, reply, None, ident=ident, sport=SPORT, keys=keys)
    assert got == ("echo-reply", 4, DST4, 1)
    forged = hostile.ip4(1, hostile.icmp(0, 0, struct.pack("!Q", key ^ 1),
                                         rest=(ident << 16) | 1), src=target, dst=me)
    assert PING.classify("icmp4", 4, forged, None, ident=ident, sport=SPORT, keys=keys) is None
    assert PING.verdict(PING.code("echo-reply")) == ("up", "echo-reply")
    assert PING.verdict(PING.DOWN) == ("down", "no-response") == verdict("ping", NO_RESPONSE)
    assert {verdict("ping", c)[1] for c in range(len(PING_REASONS))} == set(PING_REASONS)
