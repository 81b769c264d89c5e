"""Malformed packets for the receive-path tests: headers that lie about their lengths.

Everything is built by hand with ``struct`` (scapy would "fix" the lengths we want
wrong). IPv4 options are NOPs, which the kernel accepts, so a long header is still a
packet the capture sees. ``Firer`` sends a bounded stream of them from a raw socket
(IPPROTO_RAW: the header is ours, the kernel routes it) on a thread, while a scan runs.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from collections.abc import Callable, Sequence

from prtip_nb.probes.tcp import checksum

LO4, LO6 = "127.0.0.1", "::1"


def ip4(proto: int, payload: bytes, *, src: str = LO4, dst: str = LO4, ihl: int = 5,
        vhl: int | None = None) -> bytes:
    """An IPv4 header of ``ihl`` words (the extra words NOP options) before ``payload``;
    ``vhl`` overrides the first byte (an IHL below 5, a wrong version)."""
    opts = b"\x01" * (max(ihl, 5) * 4 - 20)
    hdr = struct.pack("!BBHHHBBH4s4s", (0x40 | ihl) if vhl is None else vhl, 0,
                      20 + len(opts) + len(payload), 0, 0, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst)) + opts
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + payload


def ip6(nh: int, payload: bytes, *, src: str = LO6, dst: str = LO6,
        plen: int | None = None) -> bytes:
    """An IPv6 header (``plen`` overrides the payload length field) before ``payload``."""
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload) if plen is None else plen, nh, 64,
                       socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + payload


def tcp(sport: int, dport: int, seq: int, ack: int, flags: int, doff: int = 5) -> bytes:
    """A TCP header (checksum not filled in: the capture never checks it)."""
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, 1024, 0, 0)


def udp(sport: int, dport: int, payload: bytes = b"", length: int | None = None) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload) if length is None else length,
                       0) + payload


def icmp(typ: int, code: int, body: bytes, rest: int = 0) -> bytes:
    """An ICMP message; ``rest`` is the header's last 4 bytes (identifier, sequence)."""
    msg = struct.pack("!BBHI", typ, code, 0, rest) + body
    return msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]


def sum6(src: str, dst: str, nh: int, msg: bytes, at: int) -> bytes:
    """``msg`` with its IPv6 pseudo-header checksum at byte ``at`` (ICMPv6, TCP): the
    kernel drops ICMPv6 with a bad sum before a raw socket sees it."""
    pseudo = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
              + struct.pack("!I3xB", len(msg), nh))
    body = msg[:at] + b"\0\0" + msg[at + 2 :]
    return body[:at] + struct.pack("!H", checksum(pseudo + body)) + body[at + 2 :]


def ping_stream4(ident: int, sport: int, src: str, dst: str,
                 rng: random.Random) -> list[bytes]:
    """Malformed and forged replies to a discovery sweep, from ``src`` (a host that is
    down) to the scanner ``dst``: echo and timestamp replies with our identifier but a
    wrong key or cut short, TCP answers to port ``sport`` cut short or with data offset 0."""
    wrong = struct.pack("!Q", rng.getrandbits(64))
    seq, ack = rng.getrandbits(32), rng.getrandbits(32)
    rest = ident << 16
    return [
        ip4(1, icmp(0, 0, wrong, rest), src=src, dst=dst),  # echo reply, wrong key
        ip4(1, icmp(0, 0, wrong, rest), src=src, dst=dst, ihl=15),
        ip4(1, icmp(0, 0, b"", rest), src=src, dst=dst),  # no payload at all
        ip4(1, icmp(0, 0, wrong[:3], rest), src=src, dst=dst),
        ip4(1, icmp(14, 0, wrong[:2], rest), src=src, dst=dst),  # timestamp reply cut short
        ip4(6, tcp(443, sport, seq, ack, 0x12)[:8], src=src, dst=dst),
        ip4(6, tcp(443, sport, seq, ack, 0x12, doff=0), src=src, dst=dst),
        ip4(6, tcp(443, sport, seq, ack, 0x12), src=src, dst=dst, ihl=15),
        ip4(6, tcp(80, sport, seq, ack, 0x04), src=src, dst=dst),  # RST, wrong sequence
    ]


def ping_stream6(ident: int, sport: int, src: str, dst: str,
                 rng: random.Random) -> list[bytes]:
    """The IPv6 counterpart of ``ping_stream4`` (ICMPv6 echo replies and TCP)."""
    wrong = struct.pack("!Q", rng.getrandbits(64))
    seq, ack = rng.getrandbits(32), rng.getrandbits(32)
    rest = ident << 16

    def icmp6(body: bytes) -> bytes:
        return ip6(58, sum6(src, dst, 58, icmp(129, 0, body, rest), 2), src=src, dst=dst)

    def tcp6(seg: bytes, **kw: int) -> bytes:
        return ip6(6, sum6(src, dst, 6, seg, 16) if len(seg) >= 18 else seg, src=src, dst=dst,
                   **kw)

    return [
        icmp6(wrong), icmp6(b""), icmp6(wrong[:5]),
        tcp6(tcp(443, sport, seq, ack, 0x12)[:8]),
        tcp6(tcp(443, sport, seq, ack, 0x12, doff=0)),
        tcp6(tcp(443, sport, seq, ack, 0x12)),
        tcp6(tcp(80, sport, seq, ack, 0x04)),
    ]


def syn_stream4(sport: int, ports: Sequence[int], rng: random.Random) -> list[bytes]:
    """Malformed ICMP errors and TCP segments aimed at a SYN scan of 127.0.0.1 from
    ``sport``: each quotes or answers one of ``ports``, none carries a valid cookie."""
    out = []
    for port in ports:
        seq, ack = rng.getrandbits(32), rng.getrandbits(32)
        quoted = tcp(sport, port, seq, 0, 0x02)
        out += [
            # The reported crash: outer and quoted headers both claim 60 bytes, so the
            # quoted TCP header starts at byte 128, past the capture's snap length.
            ip4(1, icmp(3, 3, ip4(6, quoted, ihl=15)), ihl=15),
            ip4(1, b"", ihl=15),  # the header claims options and nothing follows
            ip4(1, icmp(3, 13, b""), ihl=15),  # an error that quotes nothing
            ip4(1, icmp(3, 3, ip4(6, quoted, vhl=0x40)[:24])),  # quoted IHL 0
            ip4(1, icmp(3, 3, ip4(6, quoted)[:10])),  # quote cut inside the IP header
            ip4(1, icmp(3, 1, ip4(6, quoted, ihl=15)[:70])),  # quote cut after its options
            ip4(6, tcp(port, sport, seq, ack, 0x12)[:8]),  # a TCP header cut short
            ip4(6, tcp(port, sport, seq, ack, 0x12), ihl=15),  # long header, bogus ack
            ip4(6, tcp(port, sport, seq, ack, 0x14, doff=0)),  # data offset 0
            ip4(6, tcp(port, sport, seq, ack, 0x12), vhl=0x41),  # IHL 1
            ip4(6, tcp(port, sport, seq, ack, 0x12), vhl=0x65),  # version 6 in IPv4
            ip4(6, tcp(port, sport, seq, ack, 0x12)),  # well formed, wrong cookie
        ]
    return out


def syn_stream6(sport: int, ports: Sequence[int], rng: random.Random) -> list[bytes]:
    """The IPv6 counterpart for a SYN scan of ::1."""
    out = []
    for port in ports:
        seq, ack = rng.getrandbits(32), rng.getrandbits(32)
        quoted = ip6(6, tcp(sport, port, seq, 0, 0x02))
        out += [
            ip6(58, icmp(1, 4, quoted[:12])),  # quote cut inside the IPv6 header
            ip6(58, icmp(1, 4, quoted[:40])),  # the quoted header and no TCP
            ip6(58, icmp(1, 4, quoted[:44])),  # ports, no sequence number
            ip6(58, icmp(1, 4, quoted), plen=2000),  # payload length lies
            ip6(58, icmp(1, 0, b"")),  # an error that quotes nothing
            ip6(6, tcp(port, sport, seq, ack, 0x12)[:8]),  # a TCP header cut short
            ip6(6, tcp(port, sport, seq, ack, 0x14, doff=0)),  # data offset 0
            ip6(6, tcp(port, sport, seq, ack, 0x12), plen=3),  # payload length lies
            ip6(6, tcp(port, sport, seq, ack, 0x12)),  # well formed, wrong cookie
        ]
    return out


def udp_stream4(sport: int, ports: Sequence[int], rng: random.Random) -> list[bytes]:
    """Malformed ICMP errors and UDP datagrams aimed at a UDP scan of 127.0.0.1."""
    out = []
    for port in ports:
        ident = rng.getrandbits(16)
        quoted = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, ident, 0, 64, 17, 0,
                             socket.inet_aton(LO4), socket.inet_aton(LO4)) + udp(sport, port)
        out += [
            ip4(1, icmp(3, 3, ip4(17, udp(sport, port), ihl=15)), ihl=15),
            ip4(1, icmp(3, 3, quoted[:12])),  # quote cut inside the IP header
            ip4(1, icmp(3, 3, quoted[:22])),  # the quoted UDP header cut short
            ip4(1, icmp(3, 3, b"")),
            ip4(1, icmp(3, 3, quoted)),  # well formed, wrong marker
            ip4(17, udp(port, sport)[:4]),  # a UDP header cut short
            ip4(17, udp(port, sport, b"x", length=3), ihl=15),
        ]
    return out


def udp_stream6(sport: int, ports: Sequence[int], rng: random.Random) -> list[bytes]:
    out = []
    for port in ports:
        quoted = ip6(17, udp(sport, port))
        out += [
            ip6(58, icmp(1, 4, quoted[:30])),
            ip6(58, icmp(1, 4, quoted[:42])),
            ip6(58, icmp(1, 4, quoted), plen=7),
            ip6(17, udp(port, sport)[:4]),
            ip6(17, udp(port, sport, length=1)),
        ]
    return out


class Firer:
    """Sends ``packets`` over and over (at most ``rounds`` times, ``pause`` seconds apart)
    to ``dst`` from a raw socket on a thread, until ``stop()``. Bounded in count and time:
    ``rounds`` × ``len(packets)`` packets, ``rounds`` × ``pause`` seconds."""

    def __init__(self, family: int, packets: Callable[[], list[bytes]], dst: str, *,
                 rounds: int = 100, pause: float = 0.02) -> None:
        self.family, self.make, self.dst = family, packets, dst
        self.rounds, self.pause = rounds, pause
        self.sent = self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Firer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        af = socket.AF_INET if self.family == 4 else socket.AF_INET6
        raw = socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_RAW)
        addr = (self.dst, 0) if self.family == 4 else (self.dst, 0, 0, 0)
        try:
            for _ in range(self.rounds):
                for pkt in self.make():
                    try:
                        raw.sendto(pkt, addr)
                        self.sent += 1
                    except OSError:  # a header the kernel will not send as it stands
                        self.refused += 1
                if self._stop.wait(self.pause):
                    return
        finally:
            raw.close()
