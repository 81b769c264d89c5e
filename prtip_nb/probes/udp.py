"""UDP probes: the payload table (``data/udp-payloads.toml``) and packet templates.

A UDP probe is IPv4 or IPv6 + UDP + the port's payload (empty for most ports). The bytes
are built once per payload; per probe only the destination address, destination port,
the PROBE MARKER and the UDP checksum change (``UdpLayout`` says where, in the shape the
raw sender patches).

PROBE MARKER. An ICMP error quotes the IP header and the first 8 bytes of the datagram
that caused it. A UDP header has nothing a scanner may choose freely per probe, so the
marker goes in the IP header: the IPv4 identification (16 bits, never 0: the kernel
would replace 0 with its own) or the IPv6 flow label (20 bits), a keyed hash of the
probe (probes.cookie). Together with the scan's random source port, an ICMP error
that does not quote a marker we computed is a forgery or a stranger's, and is ignored.

CHECKSUMS. The UDP checksum covers the pseudo-header, header and payload; all but the
destination (per host) and the destination port (per probe) is fixed for a payload.
"""

from __future__ import annotations

import functools
import struct
import tomllib
from dataclasses import dataclass
from importlib import resources

import numpy as np
import numpy.typing as npt

__all__ = [
    "UDP_LAYOUTS", "Payload", "UdpLayout", "addr_sum", "fill_udp_checksums", "markers",
    "payload_base", "payloads", "udp_template",
]

TTL = 64
_M16, _M20 = 0xFFFF, 0xFFFFF


@dataclass(frozen=True)
class UdpLayout:
    """Offsets of the fields RawSender patches. ``seq`` is the 32-bit word that holds the
    marker: IPv4 identification + flags/fragment (id << 16), IPv6 version/class/flow."""

    family: int
    tcp: int  # start of the UDP header (named as in probes.tcp.SynLayout)
    src: int
    dst: int
    addr_len: int
    dport: int
    seq: int
    csum: int


UDP_LAYOUTS = {4: UdpLayout(4, 20, 12, 16, 4, 22, 4, 26),
               6: UdpLayout(6, 40, 8, 24, 16, 42, 0, 46)}


@dataclass(frozen=True)
class Payload:
    name: str
    ports: tuple[int, ...]
    spec: str
    data: bytes


@functools.lru_cache(maxsize=1)
def payloads() -> dict[int, Payload]:
    """Port -> Payload, from the shipped table (read once)."""
    raw = resources.files("prtip_nb").joinpath("data/udp-payloads.toml").read_text()
    out: dict[int, Payload] = {}
    for entry in tomllib.loads(raw)["payload"]:
        if "hex" in entry:
            data = bytes.fromhex("".join(entry["hex"].split()))
        else:
            data = entry["text"].encode()
        p = Payload(entry["name"], tuple(entry["ports"]), entry["spec"], data)
        for port in p.ports:
            out[port] = p
    return out


def udp_template(family: int, src: bytes, sport: int, payload: bytes = b"", *,
                 dst: bytes | None = None, dport: int = 0, ttl: int = TTL) -> bytes:
    """IP + UDP + ``payload`` from packed ``src``:``sport``; marker 0, checksum 0."""
    ulen = 8 + len(payload)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0)
    if family == 4:
        dst = bytes(4) if dst is None else dst
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0, ttl, 17, 0, src, dst)
    else:
        dst = bytes(16) if dst is None else dst
        ip = struct.pack("!IHBB16s16s", 6 << 28, ulen, 17, ttl, src, dst)
    return ip + udp + payload


def addr_sum(addr: bytes) -> int:
    """The sum of an address's 16-bit words (its share of the pseudo-header)."""
    return sum(struct.unpack(f"!{len(addr) // 2}H", addr))


def payload_base(sport: int, payload: bytes) -> int:
    """The unfolded checksum sum of everything but the addresses and dport: protocol and
    length (pseudo-header), source port and length (header), and the payload."""
    ulen = 8 + len(payload)
    data = payload + b"\0" * (len(payload) % 2)
    return 17 + ulen + sport + ulen + sum(struct.unpack(f"!{len(data) // 2}H", data))


def fill_udp_checksums(base: npt.NDArray[np.uint64] | int,
                       dports: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """UDP checksums: ``base`` (addresses + payload_base) plus dport, folded; 0 is sent
    as 0xffff (0 means "no checksum" in IPv4 and is invalid in IPv6, RFC 768/8200)."""
    s = dports.astype(np.uint64) + (np.uint64(base) if isinstance(base, int) else base)
    for _ in range(3):
        s = (s & np.uint64(_M16)) + (s >> np.uint64(16))
    c = ~s & np.uint64(_M16)
    c[c == 0] = _M16
    return c


def markers(family: int, cookies: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The marker word (UdpLayout.seq) for 32-bit ``cookies``."""
    if family == 4:
        ident = cookies & np.uint64(_M16)
        ident[ident == 0] = 1
        return ident << np.uint64(16)
    return (cookies & np.uint64(_M20)) | np.uint64(6 << 28)


def marker_of(family: int, cookie: int) -> int:
    """The IPv4 id or IPv6 flow label a probe with ``cookie`` carries (scalar)."""
    if family == 4:
        return (cookie & _M16) or 1
    return cookie & _M20
