"""The UDP probe module: a datagram (empty, or a payload group's) whose IPv4 id / IPv6
flow label is the port's keyed marker.

``prepare`` is probes.udp's template for one payload group; ``make`` fills, for a batch,
each probe's marker (``markers(cookie(host key, port))``) and UDP checksum (the host's and
the group's pre-summed bases plus the port). A UDP reply from the target port to our
source port and address is open (``validate`` / ``classify``). An ICMP error about a probe
is ours only when the quoted header carries the marker (``marked``); it is closed when port
unreachable comes from the target itself, else filtered with nmap's reason for its code
(``classify_error``); ``accept_error`` / ``validate_error`` say which errors can be about
a probe and which are about ours. Rows are probes.rows' UDP4/UDP6 and ICMP4_UDP/ICMP6_UDP.
engine.udp builds every probe with ``prepare`` / ``make`` and engine.udprx judges every
reply with these; the receiver only finds the probe a reply names and dedups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .cookie import cookies
from .rows import ICMP4_UDP, ICMP6_UDP, U64, UDP4, UDP6
from .udp import fill_udp_checksums, markers, udp_template
from .verdicts import CLOSED, ICMP4, ICMP4_CODES, ICMP6, ICMP6_CODES, OPEN, udp_verdict

if TYPE_CHECKING:
    from .module import Batch

__all__ = ["UDP", "UdpModule"]


class UdpModule:
    """See the module docstring; ``UDP`` is the one instance."""

    name: ClassVar[str] = "udp"
    kind: ClassVar[str] = "udp"
    fills: ClassVar[tuple[str, ...]] = ("index", "code", "rtt_ms", "t_us", "ttl")

    @staticmethod
    def rows(family: int) -> tuple[np.dtype, np.dtype]:
        """(answer rows, ICMP error rows)."""
        return (UDP4, ICMP4_UDP) if family == 4 else (UDP6, ICMP6_UDP)

    def prepare(self, family: int, src: bytes, sport: int, payload: bytes = b"") -> bytes:
        return udp_template(family, src, sport, payload)

    def make(self, family: int, keys: U64 | int, bases: U64 | int, ports: U64) -> Batch:
        return {"seq": markers(family, cookies(keys, ports)),
                "csum": fill_udp_checksums(bases, ports)}

    def validate(self, family: int, rows: np.ndarray, keys: U64 | int,
                 src_hi: U64 | np.uint64, src_lo: U64 | np.uint64) -> np.ndarray:
        """An answer addressed to the source our probe left from (UDP carries no cookie
        back: the target port and our source port already matched)."""
        good = rows["dst"] == src_hi
        if family == 6:
            good &= rows["dst_lo"] == src_lo
        return good

    def classify(self, family: int, rows: np.ndarray) -> np.ndarray:
        return np.full(len(rows), OPEN)

    @staticmethod
    def accept_error(family: int, err: np.ndarray) -> np.ndarray:
        """ICMP errors that can be about a UDP probe: destination unreachable with one of
        nmap's codes, quoting a UDP datagram (IPv4: a quoted header without options)."""
        if family == 4:
            ok = (err["type"] == 3) & (err["qvhl"] == 0x45) & (err["qproto"] == 17)
            return ok & np.isin(err["code"], list(ICMP4_CODES))
        return (err["type"] == 1) & (err["qproto"] == 17) & np.isin(err["code"],
                                                                   list(ICMP6_CODES))

    def validate_error(self, family: int, err: np.ndarray, keys: U64,
                       src_hi: U64, src_lo: U64) -> np.ndarray:
        """The quoted datagram is a probe we sent: from our source address, carrying the
        marker of its cookie."""
        good = err["qsrc"] == src_hi
        if family == 6:
            good &= err["qsrc_lo"] == src_lo
        return good & self.marked(family, err, keys)

    @staticmethod
    def marked(family: int, err: np.ndarray, keys: U64) -> np.ndarray:
        """PROBE MARKER: recomputed from the secret; a forged or stray error lacks it."""
        want = markers(family, cookies(keys, err["qdport"]))
        if family == 4:
            return (err["mark"] >> 16).astype(np.uint64) == want >> np.uint64(16)  # the id
        return (err["mark"].astype(np.uint64) & np.uint64(0xFFFFF)) == (
            want & np.uint64(0xFFFFF))

    @staticmethod
    def classify_error(family: int, ip: np.ndarray, err: np.ndarray) -> np.ndarray:
        """Port unreachable from the target itself (outer source = quoted destination) is
        closed; anything else filtered, ICMP4/ICMP6 + the code."""
        if family == 4:
            from_target = ip["src"] == err["qdst"]
            unreach = err["code"] == 3
            return np.where(unreach & from_target, CLOSED, ICMP4 + err["code"].astype(np.int32))
        from_target = (ip["src"] == err["qdst"]) & (ip["src_lo"] == err["qdst_lo"])
        unreach = err["code"] == 4
        return np.where(unreach & from_target, CLOSED, ICMP6 + err["code"].astype(np.int32))

    def verdict(self, code: int) -> tuple[str, str]:
        return udp_verdict(code)


UDP = UdpModule()
