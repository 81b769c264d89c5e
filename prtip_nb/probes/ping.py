"""Host discovery probes: nmap's privileged defaults, built and validated without scapy.

nmap pings a host that is not on a directly attached segment with four probes: an ICMP
echo request, a TCP SYN to port 443, a TCP ACK to port 80 and an ICMP timestamp request
(IPv6: ICMPv6 echo, SYN 443, ACK 80). Any valid answer proves the host up; nmap's
reason words are ``echo-reply``, ``timestamp-reply``, ``syn-ack`` and ``reset``.

VALIDATION (stateless, like the SYN scan). Every probe carries a keyed value of its
destination, so a reply is ours only if it echoes that value back:

- ICMP echo: identifier = the scan's 16-bit ident, payload = the 8-byte host key;
  the reply repeats both.
- ICMP timestamp: identifier = ident, originate timestamp = the key's low 32 bits.
- TCP SYN to 443: sequence = ``cookie(key, 443)``; a SYN-ACK or RST acks it + 1.
- TCP ACK to 80: acknowledgment = ``cookie(key, 80)``; the RST that answers a bare ACK
  takes its sequence number from that field (RFC 9293 3.10.7.1), so ``seq`` must equal it.

Sequence numbers of ICMP probes carry the round (0 first, 1 the retry), which gives each
reply its send time. Sizes: a few bytes each, built with ``struct`` per probe (discovery
sends four packets a host, not one a port).

HOSTILE INPUT. The parsers take any bytes: each checks the IPv4 version and IHL and the
length of what it reads, and returns None for what is not a valid reply to us.
"""

from __future__ import annotations

import struct

from .cookie import cookie
from .inet import checksum

__all__ = [
    "ACK_PORT", "SYN_PORT", "Reply", "checksum", "echo", "parse_icmp4", "parse_icmp6",
    "parse_tcp", "tcp_probe", "timestamp",
]

SYN_PORT, ACK_PORT = 443, 80
ECHO_REQUEST4, ECHO_REPLY4, TS_REQUEST4, TS_REPLY4 = 8, 0, 13, 14
ECHO_REQUEST6, ECHO_REPLY6 = 128, 129
_M64 = (1 << 64) - 1

# (reason, family, source address, round or -1 for TCP) of a valid reply, or None.
Reply = tuple[str, int, bytes, int]


def echo(family: int, ident: int, rnd: int, key: int) -> bytes:
    """An ICMP / ICMPv6 echo request; the kernel sums ICMPv6 (RFC 3542 raw sockets)."""
    typ = ECHO_REQUEST4 if family == 4 else ECHO_REQUEST6
    body = struct.pack("!BBHHHQ", typ, 0, 0, ident, rnd, key & _M64)
    if family == 6:
        return body
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def timestamp(ident: int, rnd: int, key: int) -> bytes:
    """An ICMP timestamp request whose originate field is the key's low 32 bits."""
    body = struct.pack("!BBHHHIII", TS_REQUEST4, 0, 0, ident, rnd, key & 0xFFFFFFFF, 0, 0)
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def tcp_probe(family: int, src: bytes, dst: bytes, sport: int, dport: int, key: int) -> bytes:
    """SYN to ``SYN_PORT`` (with an MSS option, as nmap sends) or bare ACK to any other."""
    c = cookie(key, dport)
    if dport == SYN_PORT:
        hdr = struct.pack("!HHIIBBHHH", sport, dport, c, 0, 6 << 4, 0x02, 1024, 0, 0)
        hdr += b"\x02\x04\x05\xb4"  # MSS 1460
    else:
        seq = cookie(key, dport ^ 0xFFFF)  # any value will do; a keyed one is not guessable
        hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, c, 5 << 4, 0x10, 1024, 0, 0)
    if family == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(hdr))
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(hdr), 6)
    csum = checksum(pseudo + hdr)
    return hdr[:16] + struct.pack("!H", csum) + hdr[18:]


def _ipv4_header(data: bytes) -> int:
    """The IPv4 header length of ``data``, or -1 if it is not a whole IPv4 header."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return -1
    ihl = (data[0] & 15) * 4
    return ihl if 20 <= ihl <= len(data) else -1


def parse_icmp4(data: bytes, ident: int, keys: dict[bytes, int]) -> Reply | None:
    """An echo or timestamp reply (``data`` from the IP header on) that answers us."""
    ihl = _ipv4_header(data)
    if ihl < 0 or len(data) < ihl + 8:
        return None
    typ, rid, rseq = data[ihl], *struct.unpack_from("!HH", data, ihl + 4)
    if rid != ident or typ not in (ECHO_REPLY4, TS_REPLY4):
        return None
    src = data[12:16]
    key = keys.get(src)
    if key is None:
        return None
    if typ == ECHO_REPLY4:
        ok = data[ihl + 8 : ihl + 16] == struct.pack("!Q", key & _M64)
        reason = "echo-reply"
    else:
        ok = data[ihl + 8 : ihl + 12] == struct.pack("!I", key & 0xFFFFFFFF)
        reason = "timestamp-reply"
    return (reason, 4, src, rseq) if ok else None


def parse_icmp6(data: bytes, src: bytes, ident: int, keys: dict[bytes, int]) -> Reply | None:
    """An ICMPv6 echo reply (``data`` from the ICMPv6 header on) that answers us."""
    if len(data) < 16 or data[0] != ECHO_REPLY6:
        return None
    rid, rseq = struct.unpack_from("!HH", data, 4)
    key = keys.get(src)
    if rid != ident or key is None or data[8:16] != struct.pack("!Q", key & _M64):
        return None
    return ("echo-reply", 6, src, rseq)


def parse_tcp(family: int, data: bytes, src: bytes | None, sport: int,
              keys: dict[bytes, int]) -> Reply | None:
    """A SYN-ACK or RST answering our SYN to 443 or ACK to 80. ``data`` starts at the IP
    header (IPv4 raw sockets) or at the TCP header (IPv6, ``src`` from recvfrom)."""
    if family == 4:
        off = _ipv4_header(data)
        if off < 0:
            return None
        src = data[12:16]
    else:
        off = 0
    if src is None or len(data) < off + 14:
        return None
    tport, myport, seq, ack = struct.unpack_from("!HHII", data, off)
    flags = data[off + 13]
    if data[off + 12] >> 4 < 5:  # a data offset shorter than the fixed header
        return None
    key = keys.get(src)
    if myport != sport or key is None:
        return None
    if tport == SYN_PORT and flags & 0x10 and ack == (cookie(key, SYN_PORT) + 1) & 0xFFFFFFFF:
        if flags & 0x04:
            return ("reset", family, src, -1)
        if flags & 0x02:
            return ("syn-ack", family, src, -1)
    if tport == ACK_PORT and flags & 0x04 and seq == cookie(key, ACK_PORT):
        return ("reset", family, src, -1)
    return None
