"""nmap's second-generation OS detection probes, as IPv4 packets (pure: bytes in, bytes out).

Sixteen probes per host (nmap's book, "TCP/IP Fingerprinting Methods Supported by Nmap"):

- SEQ 1-6: SYNs to an open port, 100 ms apart, each with its own window and TCP options.
  Their replies give SEQ (ISN and IP ID sequences, timestamps), OPS, WIN and T1.
- ECN: a SYN with CWR+ECE (and the reserved bit before CWR) to the open port.
- T2-T7: null, SYN+FIN+URG+PSH and ACK to the open port; SYN, ACK and FIN+PSH+URG to a
  closed port.
- U1: 300 bytes of ``C`` to a closed UDP port, IP id 0x1042.
- IE 1-2: two ICMP echoes, the first with DF, code 9, TOS 0 and 120 zero bytes, the
  second with TOS 4, code 0 and 150 zero bytes.

Each probe is a ``Probe`` record: its name, the bytes to send on an IP_HDRINCL socket, and
the fields its reply is judged against (source port, seq, ack, ICMP id). Options are
written out from the documented lists (kind, length, value), not copied bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..probes.tcp import checksum

__all__ = [
    "PROBE_ORDER",
    "Probe",
    "ProbeSet",
    "TCP_PROBES",
    "U1_ID",
    "U1_LEN",
    "build_probes",
    "tcp_options",
]

# TCP flags
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

TS = ("T", 0xFFFFFFFF, 0)  # timestamp option: TSval 0xFFFFFFFF, TSecr 0

#: (name, TCP options, window, flags, DF, to the open port?) of every TCP probe, in send order.
TCP_PROBES: tuple[tuple[str, tuple, int, int, bool, bool], ...] = (
    ("SEQ1", (("W", 10), ("N",), ("M", 1460), TS, ("S",)), 1, SYN, False, True),
    ("SEQ2", (("M", 1400), ("W", 0), ("S",), TS, ("L",)), 63, SYN, False, True),
    ("SEQ3", (TS, ("N",), ("N",), ("W", 5), ("N",), ("M", 640)), 4, SYN, False, True),
    ("SEQ4", (("S",), TS, ("W", 10), ("L",)), 4, SYN, False, True),
    ("SEQ5", (("M", 536), ("S",), TS, ("W", 10), ("L",)), 16, SYN, False, True),
    ("SEQ6", (("M", 265), ("S",), TS), 512, SYN, False, True),
    ("ECN", (("W", 10), ("N",), ("M", 1460), ("S",), ("N",), ("N",)), 3, SYN | ECE | CWR,
     False, True),
    ("T2", (("W", 10), ("N",), ("M", 265), TS, ("S",)), 128, 0, True, True),
    ("T3", (("W", 10), ("N",), ("M", 265), TS, ("S",)), 256, SYN | FIN | URG | PSH, False, True),
    ("T4", (("W", 10), ("N",), ("M", 265), TS, ("S",)), 1024, ACK, True, True),
    ("T5", (("W", 10), ("N",), ("M", 265), TS, ("S",)), 31337, SYN, False, False),
    ("T6", (("W", 10), ("N",), ("M", 265), TS, ("S",)), 32768, ACK, True, False),
    ("T7", (("W", 15), ("N",), ("M", 265), TS, ("S",)), 65535, FIN | PSH | URG, False, False),
)
PROBE_ORDER = tuple(p[0] for p in TCP_PROBES) + ("U1", "IE1", "IE2")

U1_ID = 0x1042
U1_DATA = b"C" * 300
U1_LEN = 20 + 8 + len(U1_DATA)  # 0x148: the length a quoted U1 should keep
ECN_URGENT = 0xF7F5
TTL = 64


def tcp_options(opts: tuple) -> bytes:
    """Encode (kind letter, value...) tuples: L EOL, N NOP, M MSS, W window scale,
    T timestamp (TSval, TSecr), S SACK permitted; padded with zeros to 4 bytes."""
    out = bytearray()
    for opt in opts:
        kind = opt[0]
        if kind == "L":
            out.append(0)
        elif kind == "N":
            out.append(1)
        elif kind == "M":
            out += struct.pack("!BBH", 2, 4, opt[1])
        elif kind == "W":
            out += struct.pack("!BBB", 3, 3, opt[1])
        elif kind == "S":
            out += b"\x04\x02"
        elif kind == "T":
            out += struct.pack("!BBII", 8, 10, opt[1], opt[2])
        else:
            raise ValueError(f"unknown TCP option kind {kind!r}")
    out += b"\0" * (-len(out) % 4)
    return bytes(out)


@dataclass(frozen=True)
class Probe:
    """One probe: ``name`` (SEQ1..T7, U1, IE1, IE2), its bytes and what its reply matches."""

    name: str
    packet: bytes
    proto: int  # 6, 17 or 1
    sport: int = 0  # TCP/UDP source port (0 for ICMP)
    dport: int = 0
    seq: int = 0  # TCP sequence number sent
    ack: int = 0  # TCP acknowledgment number sent
    icmp_id: int = 0
    ip_id: int = 0


@dataclass(frozen=True)
class ProbeSet:
    """The sixteen probes of one host, by name; ``udp_sum`` is U1's UDP checksum (RUCK)."""

    probes: dict[str, Probe]
    udp_sum: int

    def __getitem__(self, name: str) -> Probe:
        return self.probes[name]


def _ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, *, ident: int, df: bool,
          tos: int = 0, ttl: int = TTL) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), ident,
                       0x4000 if df else 0, ttl, proto, 0, src, dst)
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + payload


def _tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
         window: int, options: bytes, *, reserved: int = 0, urgent: int = 0) -> bytes:
    off = (20 + len(options)) // 4
    head = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (off << 4) | reserved, flags,
                       window, 0, urgent) + options
    pseudo = struct.pack("!4s4sBBH", src, dst, 0, 6, len(head))
    csum = checksum(pseudo + head)
    return head[:16] + struct.pack("!H", csum) + head[18:]


def _udp(src: bytes, dst: bytes, sport: int, dport: int, data: bytes) -> tuple[bytes, int]:
    head = struct.pack("!HHHH", sport, dport, 8 + len(data), 0)
    csum = checksum(struct.pack("!4s4sBBH", src, dst, 0, 17, 8 + len(data)) + head + data)
    csum = csum or 0xFFFF  # zero means "no checksum" in UDP
    return head[:6] + struct.pack("!H", csum) + data, csum


def _echo(ident: int, seq: int, code: int, data: bytes) -> bytes:
    head = struct.pack("!BBHHH", 8, code, 0, ident, seq)
    csum = checksum(head + data)
    return head[:2] + struct.pack("!H", csum) + head[4:] + data


def build_probes(src: bytes, dst: bytes, *, open_port: int, closed_port: int,
                 closed_udp: int, sport_base: int, seq_base: int, ack: int,
                 icmp_id: int, ip_id: int) -> ProbeSet:
    """The sixteen probes from ``src`` to ``dst`` (4-byte addresses).

    TCP probe k uses source port ``sport_base + k`` (so a reply names its probe), sequence
    ``seq_base + k`` and acknowledgment ``ack``; ``ip_id`` numbers the IP ids (U1's is fixed
    at 0x1042 as nmap's); the echoes use ICMP ids ``icmp_id`` and ``icmp_id + 1``.
    """
    if not 1 <= sport_base <= 0xFFFF - 20:
        raise ValueError(f"sport_base {sport_base} leaves no room for 14 source ports")
    out: dict[str, Probe] = {}
    for k, (name, opts, window, flags, df, to_open) in enumerate(TCP_PROBES):
        sport, seq = sport_base + k, (seq_base + k) & 0xFFFFFFFF
        dport = open_port if to_open else closed_port
        probe_ack = 0 if name == "ECN" else ack
        seg = _tcp(src, dst, sport, dport, seq, probe_ack, flags, window, tcp_options(opts),
                   reserved=0x08 if name == "ECN" else 0,
                   urgent=ECN_URGENT if name == "ECN" else 0)
        ident = (ip_id + k) & 0xFFFF or 1
        out[name] = Probe(name, _ipv4(src, dst, 6, seg, ident=ident, df=df), 6, sport, dport,
                          seq, probe_ack, ip_id=ident)
    usport = sport_base + len(TCP_PROBES)
    dgram, udp_sum = _udp(src, dst, usport, closed_udp, U1_DATA)
    out["U1"] = Probe("U1", _ipv4(src, dst, 17, dgram, ident=U1_ID, df=False), 17, usport,
                      closed_udp, ip_id=U1_ID)
    for i, (code, tos, size, df) in enumerate(((9, 0, 120, True), (0, 4, 150, False))):
        ident = (icmp_id + i) & 0xFFFF
        echo = _echo(ident, 295 + i, code, b"\0" * size)
        pid = (ip_id + 20 + i) & 0xFFFF or 1
        out[f"IE{i + 1}"] = Probe(f"IE{i + 1}", _ipv4(src, dst, 1, echo, ident=pid, df=df,
                                                      tos=tos), 1, icmp_id=ident, ip_id=pid)
    return ProbeSet(out, udp_sum)
