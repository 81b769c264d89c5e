"""The TCP SYN probe module: a SYN whose sequence number is the port's cookie.

``prepare`` is probes.tcp's template; ``make`` fills, for a whole batch, each probe's
sequence number (``cookie(host key, port)``, probes.cookie) and TCP checksum (the host's
pre-summed base plus port and sequence). A reply answers a probe of ours when it is a
SYN-ACK or a RST+ACK (``accept``) that acks the cookie + 1 and is addressed to our source
(``validate``); ``classify`` says open (SYN-ACK) or closed (RST). ICMP errors about a SYN
probe are parsed one at a time (engine.synrx.parse_icmp_error: they are rare).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .cookie import cookies
from .rows import M32, TCP4, TCP6, U64
from .tcp import fill_checksums, syn_template
from .verdicts import CLOSED, OPEN, syn_verdict

if TYPE_CHECKING:
    from .module import Batch

__all__ = ["SYN", "SynModule"]


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
        return {"seq": seq, "csum": fill_checksums(bases, ports, seq)}

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

    def verdict(self, code: int) -> tuple[str, str]:
        return syn_verdict(code)


SYN = SynModule()
