"""Replies to the OS probes: parse an IPv4 packet, and say which probe it answers (pure).

``parse_reply`` reads the fields the fingerprint tests look at; ``ReplyMatcher`` pairs a
reply with its probe by what the probe chose: the TCP source port (one per probe), the ICMP
echo id, or the UDP source port quoted in an ICMP port unreachable.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .probes import ProbeSet

__all__ = ["Reply", "ReplyMatcher", "parse_reply"]


@dataclass(frozen=True)
class Reply:
    """The fields of one IPv4 reply that nmap's tests read; ``t`` is when it arrived."""

    t: float
    proto: int
    src: bytes
    ttl: int
    df: bool
    ip_id: int
    ip_len: int
    # TCP
    sport: int = 0
    dport: int = 0
    seq: int = 0
    ack: int = 0
    flags: int = 0
    reserved: int = 0  # the 4 bits between the data offset and CWR
    window: int = 0
    urgent: int = 0
    options: bytes = b""
    data: bytes = b""
    # ICMP
    icmp_type: int = -1
    icmp_code: int = -1
    icmp_id: int = 0
    unused: int = 0  # bytes 4-7 of an ICMP error
    quoted: bytes = b""  # the IP packet an ICMP error quotes


def parse_reply(pkt: bytes | memoryview, t: float = 0.0) -> Reply | None:
    """A Reply from an IPv4 packet (TCP or ICMP), or None if it is neither or truncated."""
    b = bytes(pkt)
    if len(b) < 20 or b[0] >> 4 != 4:
        return None
    ihl = (b[0] & 0x0F) * 4
    ip_len, ip_id, frag, ttl, proto = struct.unpack_from("!HHHBB", b, 2)
    src = b[12:16]
    body = b[ihl:ip_len] if ip_len >= ihl else b[ihl:]
    common = {"t": t, "proto": proto, "src": src, "ttl": ttl, "df": bool(frag & 0x4000),
              "ip_id": ip_id, "ip_len": ip_len}
    if proto == 6:
        if len(body) < 20:
            return None
        sport, dport, seq, ack, off, flags, window, _sum, urgent = struct.unpack_from(
            "!HHIIBBHHH", body)
        hlen = (off >> 4) * 4
        if hlen < 20 or hlen > len(body):
            return None
        return Reply(**common, sport=sport, dport=dport, seq=seq, ack=ack, flags=flags,
                     reserved=off & 0x0F, window=window, urgent=urgent,
                     options=body[20:hlen], data=body[hlen:])
    if proto == 1:
        if len(body) < 8:
            return None
        typ, code, _sum, ident, _seq = struct.unpack_from("!BBHHH", body)
        unused = struct.unpack_from("!I", body, 4)[0]
        return Reply(**common, icmp_type=typ, icmp_code=code, icmp_id=ident, unused=unused,
                     quoted=body[8:] if typ in (3, 11, 12) else b"")
    return None


class ReplyMatcher:
    """Which probe of ``probes`` a reply from ``target`` (4 bytes) answers, or None."""

    def __init__(self, target: bytes, probes: ProbeSet) -> None:
        self.target = target
        self.by_sport = {p.sport: p.name for p in probes.probes.values() if p.proto == 6}
        self.by_echo = {p.icmp_id: p.name for p in probes.probes.values() if p.proto == 1}
        self.u1 = probes["U1"]
        self._tcp_dport = {p.sport: p.dport for p in probes.probes.values() if p.proto == 6}

    def match(self, r: Reply) -> str | None:
        if r.src != self.target:
            return None
        if r.proto == 6:
            name = self.by_sport.get(r.dport)
            return name if name and self._tcp_dport[r.dport] == r.sport else None
        if r.icmp_type == 0:
            return self.by_echo.get(r.icmp_id)
        if r.icmp_type == 3 and len(r.quoted) >= 28 and r.quoted[9] == 17:
            qihl = (r.quoted[0] & 0x0F) * 4
            if len(r.quoted) >= qihl + 4:
                sport, dport = struct.unpack_from("!HH", r.quoted, qihl)
                if sport == self.u1.sport and dport == self.u1.dport:
                    return "U1"
        return None
