"""The TCP SYN probe module: a SYN whose sequence number is the port's cookie.

``prepare`` is probes.tcp's template; ``make`` fills, for a whole batch, each probe's
sequence number (``cookie(host key, port)``, probes.cookie), TCP checksum (the host's
pre-summed base plus port and sequence) and, for IPv4, its IP identification.
engine.syn builds every probe it sends this way. A reply answers a probe of ours when it is a
SYN-ACK or a RST+ACK (``accept``) that acks the cookie + 1 and is addressed to our source
(``validate``); ``classify`` says open (SYN-ACK) or closed (RST). ICMP errors about a SYN
probe are parsed one at a time (``parse_error``: they are rare) and are ours when the
quoted header carries the cookie and our address (``validate_error``). engine.synrx judges
every reply through these; it only finds the probe a reply names and dedups.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .cookie import cookie, cookies
from .rows import M32, TCP4, TCP6, U64
from .tcp import fill_checksums, syn_template
from .verdicts import CLOSED, ICMP4, ICMP4_CODES, ICMP6, ICMP6_CODES, OPEN, syn_verdict

if TYPE_CHECKING:
    from .module import Batch

__all__ = ["IGNORED", "MALFORMED", "SYN", "SynModule", "parse_icmp_error"]

# What ``parse_icmp_error`` returns for a packet it cannot use: not an error about a TCP
# probe (counted ``ignored``), or one whose lengths lie (counted ``invalid``).
IGNORED, MALFORMED = -1, -2


class SynModule:
    """See the module docstring; ``SYN`` is the one instance."""

    name: ClassVar[str] = "tcp-syn"
    kind: ClassVar[str] = "syn"
    fills: ClassVar[tuple[str, ...]] = ("index", "code", "rtt_ms", "t_us", "ttl")

    @staticmethod
    def rows(family: int) -> np.dtype:
        """The reply rows (probes.rows) ``accept`` / ``validate`` / ``classify`` read."""
        return TCP4 if family == 4 else TCP6

    def prepare(self, family: int, src: bytes, sport: int) -> bytes:
        return syn_template(family, src, sport)

    def make(self, family: int, keys: U64 | int, bases: U64 | int, ports: U64) -> Batch:
        seq = cookies(keys, ports)
        batch = {"seq": seq, "csum": fill_checksums(bases, ports, seq)}
        if family == 4:
            # IPv4 IDENTIFICATION, ours and never 0: for a zero id the kernel picks one
            # (ip_select_ident: a keyed hash and atomics on tables both transmit threads
            # share): 5.56 -> 5.21 us of CPU a probe on a /18 x top 100. Any value does;
            # nmap sends a random one. Odd: never 0.
            batch["ident"] = (seq >> np.uint64(16)) | np.uint64(1)
        return batch

    @staticmethod
    def accept(rows: np.ndarray) -> np.ndarray:
        """SYN-ACKs and RST+ACKs: the segments that can answer a SYN (not our own SYNs
        looping back on lo, nor strays)."""
        flags = rows["flags"]
        rst = (flags & 0x14) == 0x14
        synack = ((flags & 0x12) == 0x12) & ((flags & 0x04) == 0)
        return rst | synack

    def validate(self, family: int, rows: np.ndarray, keys: U64 | int,
                 src_hi: U64 | np.uint64, src_lo: U64 | np.uint64) -> np.ndarray:
        """SYN-COOKIE: the probe's sequence number, recomputed; the reply must ack it, and
        be addressed to the source the probe left from."""
        good = cookies(keys, rows["tport"]) == ((rows["ack"].astype(np.uint64) - 1) & M32)
        good &= rows["dst"] == src_hi
        if family == 6:
            good &= rows["dst_lo"] == src_lo
        return good

    def classify(self, family: int, rows: np.ndarray) -> np.ndarray:
        return np.where((rows["flags"] & 0x14) == 0x14, CLOSED, OPEN)

    @staticmethod
    def parse_error(family: int, data: bytes) -> tuple[int, bytes, bytes, int, int, int] | int:
        """An ICMP / ICMPv6 unreachable about a TCP probe: see ``parse_icmp_error``."""
        return parse_icmp_error(family, data)

    @staticmethod
    def validate_error(key: int, dport: int, seq: int, quoted_src: bytes, src: bytes) -> bool:
        """The quoted SYN is one we sent: it carries the cookie, from our address."""
        return cookie(key, dport) == seq and quoted_src == src

    def verdict(self, code: int) -> tuple[str, str]:
        return syn_verdict(code)


SYN = SynModule()


def parse_icmp_error(fam: int, data: bytes) -> tuple[int, bytes, bytes, int, int, int] | int:
    """(verdict code, quoted source, quoted destination, source port, destination port,
    sequence number) of the TCP probe that an ICMP / ICMPv6 unreachable quotes; IGNORED
    for any other packet; MALFORMED when a header length says more than ``data`` holds.

    ``data`` starts at the IP header and ends at the snap length. Every length is checked
    before a read: the outer and quoted IPv4 IHL (5-15 words each; a packet where both
    claim 60 bytes needs 136, more than the capture keeps), the IPv4 total length and
    the IPv6 payload length (bytes beyond them are link-layer padding, not the packet).
    RFC 792 quotes the IP header and 8 bytes of the datagram: ports and sequence."""
    n = len(data)
    if fam == 4:
        if n < 20:
            return MALFORMED
        ihl = (data[0] & 15) * 4
        length = (data[2] << 8) | data[3]
        if data[0] >> 4 != 4 or ihl < 20 or length < ihl:
            return MALFORMED
        if data[9] != 1:
            return IGNORED
        n = min(n, length)
        if n < ihl + 8:
            return MALFORMED
        code = data[ihl + 1]
        if data[ihl] != 3 or code not in ICMP4_CODES:
            return IGNORED
        q = ihl + 8
        if n < q + 20:
            return MALFORMED
        qihl = (data[q] & 15) * 4
        if data[q] >> 4 != 4 or qihl < 20:
            return MALFORMED
        if data[q + 9] != 6:
            return IGNORED
        if n < q + qihl + 8:
            return MALFORMED
        sport, dport, seq = struct.unpack_from("!HHI", data, q + qihl)
        return ICMP4 + code, data[q + 12 : q + 16], data[q + 16 : q + 20], sport, dport, seq
    if n < 48 or data[0] >> 4 != 6:
        return MALFORMED
    if data[6] != 58:  # extension headers before ICMPv6: the capture filter keeps none
        return IGNORED
    n = min(n, 40 + ((data[4] << 8) | data[5]))
    if n < 48:
        return MALFORMED
    code = data[41]
    if data[40] != 1 or code not in ICMP6_CODES:
        return IGNORED
    if n < 88:
        return MALFORMED
    if data[54] != 6:  # a quoted extension header: not one of our probes
        return IGNORED
    if n < 96:
        return MALFORMED
    sport, dport, seq = struct.unpack_from("!HHI", data, 88)
    return ICMP6 + code, data[56:72], data[72:88], sport, dport, seq
