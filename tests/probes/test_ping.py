"""Discovery probes (probes.ping): bytes that scapy reads as nmap's four probes, with
valid checksums, and replies accepted only when they echo the probe's keyed value."""

from __future__ import annotations

import socket
import struct

from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from prtip_nb.probes import ping
from prtip_nb.probes.cookie import CookieKey, cookie

SRC, DST = socket.inet_aton("198.51.100.1"), socket.inet_aton("203.0.113.5")
KEY = CookieKey(bytes(range(16))).host_key(SRC, DST, 40000)
IDENT = 0x1234


def _ip(payload: bytes, proto: int, src: bytes = DST, dst: bytes = SRC) -> bytes:
    return bytes(IP(src=socket.inet_ntoa(src), dst=socket.inet_ntoa(dst), proto=proto)
                 / payload)


def test_probes_are_what_nmap_sends_with_valid_checksums() -> None:
    e = ICMP(ping.echo(4, IDENT, 0, KEY))
    assert (e.type, e.id, e.seq) == (8, IDENT, 0)
    t = ICMP(ping.timestamp(IDENT, 1, KEY))
    assert (t.type, t.id, t.seq, t.ts_ori) == (13, IDENT, 1, KEY & 0xFFFFFFFF)
    for port, flags in ((443, "S"), (80, "A")):
        raw = ping.tcp_probe(4, SRC, DST, 40000, port, KEY)
        pkt = IP(_ip_from(raw))
        tcp = pkt[TCP]
        assert tcp.dport == port and str(tcp.flags) == flags
        want = tcp.chksum
        del tcp.chksum
        assert IP(bytes(pkt))[TCP].chksum == want


def _ip_from(tcp: bytes) -> bytes:
    return bytes(IP(src=socket.inet_ntoa(SRC), dst=socket.inet_ntoa(DST), proto=6) / Raw(tcp))


def test_icmp_checksum_verifies() -> None:
    for pkt in (ping.echo(4, IDENT, 0, KEY), ping.timestamp(IDENT, 0, KEY)):
        assert ping.checksum(pkt) == 0


def test_replies_validate_against_the_key() -> None:
    keys = {DST: KEY}
    reply = bytearray(ping.echo(4, IDENT, 1, KEY))
    reply[0] = 0
    assert ping.parse_icmp4(_ip(bytes(reply), 1), IDENT, keys) == ("echo-reply", 4, DST, 1)
    forged = bytes(reply[:8]) + struct.pack("!Q", KEY ^ 1)
    assert ping.parse_icmp4(_ip(forged, 1), IDENT, keys) is None
    assert ping.parse_icmp4(_ip(bytes(reply), 1), IDENT ^ 1, keys) is None
    ts = bytearray(ping.timestamp(IDENT, 0, KEY))
    ts[0] = 14
    assert ping.parse_icmp4(_ip(bytes(ts), 1), IDENT, keys)[0] == "timestamp-reply"  # type: ignore[index]
    # SYN-ACK to our SYN: ack = cookie + 1; RST to our ACK: seq = our ack number.
    c443, c80 = cookie(KEY, 443), cookie(KEY, 80)
    synack = bytes(TCP(sport=443, dport=40000, flags="SA", seq=7, ack=c443 + 1))
    assert ping.parse_tcp(4, _ip(synack, 6), None, 40000, keys)[0] == "syn-ack"  # type: ignore[index]
    rst = bytes(TCP(sport=80, dport=40000, flags="R", seq=c80))
    assert ping.parse_tcp(4, _ip(rst, 6), None, 40000, keys)[0] == "reset"  # type: ignore[index]
    for bad in (TCP(sport=80, dport=40000, flags="R", seq=c80 ^ 1),
                TCP(sport=443, dport=40000, flags="SA", ack=c443),
                TCP(sport=443, dport=40001, flags="SA", ack=c443 + 1)):
        assert ping.parse_tcp(4, _ip(bytes(bad), 6), None, 40000, keys) is None
    other = socket.inet_aton("203.0.113.6")
    assert ping.parse_tcp(4, _ip(synack, 6, src=other), None, 40000, keys) is None


def test_icmpv6_echo_reply() -> None:
    src = socket.inet_pton(socket.AF_INET6, "2001:db8:1::5")
    key = 0xDEADBEEF12345678
    msg = bytearray(ping.echo(6, IDENT, 0, key))
    assert msg[0] == 128
    msg[0] = 129
    assert ping.parse_icmp6(bytes(msg), src, IDENT, {src: key}) == ("echo-reply", 6, src, 0)
    assert ping.parse_icmp6(bytes(msg), src, IDENT, {src: key + 1}) is None
    raw = ping.tcp_probe(6, src, src, 40000, 443, key)
    pkt = IPv6(bytes(IPv6(src="2001:db8:1::5", dst="2001:db8:1::5", nh=6) / Raw(raw)))
    want = pkt[TCP].chksum
    del pkt[TCP].chksum
    assert IPv6(bytes(pkt))[TCP].chksum == want
