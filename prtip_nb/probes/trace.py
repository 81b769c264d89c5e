"""Traceroute probes: build one with a chosen TTL, and read what comes back. Pure: no sockets.

A probe is a TCP SYN, a UDP datagram (empty) or an ICMP echo request, with the IP header
included (IPv4 TTL, IPv6 hop limit). Each probe carries its identity where the answers
quote it back: the source port (TCP, UDP) or the echo id and sequence (ICMP). A router
that drops it for its TTL sends ICMP time exceeded quoting the probe's IP header and at
least 8 bytes after it (RFC 792; RFC 4443 quotes as much as fits), which hold exactly those
fields. The target answers the probe itself: a SYN-ACK or RST, an ICMP port unreachable,
an echo reply.

``parse_icmp(family, data, source)`` and ``parse_tcp(family, data, source)`` turn a packet
read from a raw socket into an ``Answer``: who answered (``responder``), whether the probe
reached its target (``final``), and the probe's key ``(dst, proto, ident)`` for the
sender's table of probes in flight. IPv4 raw sockets give the IP header; IPv6 ones give
the payload only, so the source comes from ``recvfrom``.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .tcp import checksum, syn_template

__all__ = ["Answer", "build_probe", "parse_icmp", "parse_tcp", "probe_key"]

TCP, UDP, ICMP = 6, 17, 1  # IP protocol numbers (IANA)
ICMP6 = 58
PROTOS = {"tcp": TCP, "udp": UDP, "icmp": ICMP}


@dataclass(frozen=True)
class Answer:
    responder: str  # the address that sent it
    final: bool  # from the target (reply, reset, port unreachable), not a router
    key: tuple[str, int, int]  # (probe's destination, protocol, ident) of the probe it answers
    kind: str  # "time-exceeded", "unreachable", "syn-ack", "reset", "echo-reply"
    ttl: int | None = None  # the answer's own TTL (IPv4 only)


def probe_key(dst: str, proto: str, ident: int) -> tuple[str, int, int]:
    """The key of a probe: ``ident`` is its source port (TCP/UDP) or echo id << 16 | seq."""
    return (str(ipaddress.ip_address(dst)), PROTOS[proto], ident)


def _pseudo(family: int, src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if family == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!I3xB", length, proto)


def _ip(family: int, src: bytes, dst: bytes, proto: int, ttl: int, payload: bytes,
        ident: int) -> bytes:
    if family == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0, ttl,
                         proto, 0, src, dst)
        return ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:] + payload
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), proto, ttl, src, dst) + payload


def build_probe(family: int, src: str, dst: str, proto: str, *, ttl: int, sport: int,
                dport: int = 0, seq: int = 0, icmp_id: int = 0) -> bytes:
    """One probe, IP header included: ``proto`` "tcp" (SYN to ``dport``), "udp" (empty, to
    ``dport``) or "icmp" (echo request ``icmp_id``/``seq``)."""
    s = ipaddress.ip_address(src).packed
    d = ipaddress.ip_address(dst).packed
    if proto == "tcp":
        return syn_template(family, s, sport, dst=d, dport=dport, seq=seq, ttl=ttl)
    if proto == "udp":
        udp = struct.pack("!HHHH", sport, dport, 8, 0)
        csum = checksum(_pseudo(family, s, d, UDP, 8) + udp) or 0xFFFF
        return _ip(family, s, d, UDP, ttl, udp[:6] + struct.pack("!H", csum), sport)
    if proto == "icmp":
        if family == 4:
            body = struct.pack("!BBHHH", 8, 0, 0, icmp_id, seq)
            body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
            return _ip(4, s, d, ICMP, ttl, body, seq)
        body = struct.pack("!BBHHH", 128, 0, 0, icmp_id, seq)
        csum = checksum(_pseudo(6, s, d, ICMP6, len(body)) + body)
        return _ip(6, s, d, ICMP6, ttl, body[:2] + struct.pack("!H", csum) + body[4:], seq)
    raise ValueError(f"unknown traceroute probe {proto!r}: use tcp, udp or icmp")


def _quoted(family: int, inner: bytes) -> tuple[str, int, int] | None:
    """The key of the probe an ICMP error quotes (its IP header and 8 bytes at least)."""
    if family == 4:
        if len(inner) < 28 or inner[0] >> 4 != 4:
            return None
        ihl = (inner[0] & 0xF) * 4
        proto, dst = inner[9], str(ipaddress.IPv4Address(inner[16:20]))
        body = inner[ihl:ihl + 8]
    else:
        if len(inner) < 48 or inner[0] >> 4 != 6:
            return None
        proto, dst = inner[6], str(ipaddress.IPv6Address(inner[24:40]))
        body = inner[40:48]
    if len(body) < 8:
        return None
    if proto in (TCP, UDP):
        return (dst, proto, struct.unpack_from("!H", body)[0])
    if (family == 4 and proto == ICMP) or (family == 6 and proto == ICMP6):
        ident, seq = struct.unpack_from("!HH", body, 4)
        return (dst, ICMP, ident << 16 | seq)
    return None


def parse_icmp(family: int, data: bytes, source: str) -> Answer | None:
    """An ICMP(v6) packet from a raw socket (IPv4: with its IP header) as an Answer, or
    None when it answers no traceroute probe (unknown type, too short, a quote of
    something else)."""
    ttl = None
    if family == 4:
        if len(data) < 28:
            return None
        ihl = (data[0] & 0xF) * 4
        ttl = data[8]
        source = str(ipaddress.IPv4Address(data[12:16]))
        icmp = data[ihl:]
        exceeded, unreach, echo_reply = 11, 3, 0
    else:
        icmp = data
        exceeded, unreach, echo_reply = 3, 1, 129
    if len(icmp) < 8:
        return None
    typ, code = icmp[0], icmp[1]
    if typ == echo_reply:
        ident, seq = struct.unpack_from("!HH", icmp, 4)
        return Answer(source, True, (source, ICMP, ident << 16 | seq), "echo-reply", ttl)
    if typ not in (exceeded, unreach) or (typ == exceeded and code != 0):
        return None
    key = _quoted(family, icmp[8:])
    if key is None:
        return None
    if typ == exceeded:
        return Answer(source, False, key, "time-exceeded", ttl)
    # Unreachable: from the target itself (port unreachable of a UDP probe, or any
    # unreachable it sends) it ends the trace; from a router, it is that router's hop.
    return Answer(source, source == key[0], key, "unreachable", ttl)


def parse_tcp(family: int, data: bytes, source: str) -> Answer | None:
    """A TCP segment from a raw socket (IPv4: with its IP header): a SYN-ACK or RST from
    the target answers the SYN probe whose source port is its destination port."""
    ttl = None
    if family == 4:
        if len(data) < 40:
            return None
        ihl = (data[0] & 0xF) * 4
        ttl = data[8]
        source = str(ipaddress.IPv4Address(data[12:16]))
        tcp = data[ihl:]
    else:
        tcp = data
    if len(tcp) < 20:
        return None
    dport = struct.unpack_from("!H", tcp, 2)[0]
    flags = tcp[13]
    if flags & 0x04:
        kind = "reset"
    elif flags & 0x12 == 0x12:
        kind = "syn-ack"
    else:
        return None
    return Answer(str(ipaddress.ip_address(source)), True, (str(ipaddress.ip_address(source)),
                                                            TCP, dport), kind, ttl)
