"""Reply rows: the packet fields a probe module reads, as numpy structured dtypes.

A receiver hands a probe module whole blocks of replies as rows of these dtypes (one
fancy-index copy, or zero-copy strided views of the capture ring): IP + TCP of a SYN
scan's answer, IP + UDP of a UDP answer, IP + ICMP + the quoted IP + UDP of an error about
a UDP probe. Fields are big-endian as on the wire; IPv6 addresses are two uint64 halves
(``src`` high, ``src_lo`` low). No IP options: a packet with them takes the slow path.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["ICMP4_UDP", "ICMP6_UDP", "M32", "M64", "TCP4", "TCP6", "U64", "UDP4", "UDP6",
           "dtype", "gather", "split128"]

M32, M64 = 0xFFFFFFFF, (1 << 64) - 1
U64 = npt.NDArray[np.uint64]


def dtype(fields: list[tuple[str, str, int]], size: int) -> np.dtype:
    """A structured dtype of ``(name, format, offset)`` fields, ``size`` bytes a row."""
    return np.dtype({"names": [f[0] for f in fields], "formats": [f[1] for f in fields],
                     "offsets": [f[2] for f in fields], "itemsize": size})


def gather(arr: npt.NDArray[np.uint8], offs: npt.NDArray[np.int64], dt: np.dtype) -> np.ndarray:
    """Rows of ``dt`` read at byte offsets ``offs`` of ``arr`` (one fancy-index copy)."""
    return arr[offs[:, None] + np.arange(dt.itemsize)].view(dt).ravel()


def split128(addrs: list[int], family: int) -> tuple[U64, U64]:
    """Addresses as ints → (high, low) uint64 halves; IPv4: (the address, its low bits)."""
    hi = np.array([a >> 64 if family == 6 else a for a in addrs], np.uint64)
    lo = np.array([a & M64 for a in addrs], np.uint64)
    return hi, lo


TCP4 = dtype([("vhl", "u1", 0), ("len", ">u2", 2), ("ttl", "u1", 8), ("proto", "u1", 9),
              ("src", ">u4", 12), ("dst", ">u4", 16), ("tport", ">u2", 20),
              ("myport", ">u2", 22), ("ack", ">u4", 28), ("doff", "u1", 32),
              ("flags", "u1", 33)], 40)
TCP6 = dtype([("plen", ">u2", 4), ("proto", "u1", 6), ("ttl", "u1", 7), ("src", ">u8", 8),
              ("src_lo", ">u8", 16), ("dst", ">u8", 24), ("dst_lo", ">u8", 32),
              ("tport", ">u2", 40), ("myport", ">u2", 42), ("ack", ">u4", 48), ("doff", "u1", 52),
              ("flags", "u1", 53)], 60)
UDP4 = dtype([("vhl", "u1", 0), ("len", ">u2", 2), ("ttl", "u1", 8), ("proto", "u1", 9),
              ("src", ">u4", 12), ("dst", ">u4", 16), ("tport", ">u2", 20),
              ("myport", ">u2", 22), ("ulen", ">u2", 24)], 28)
ICMP4_UDP = dtype([("type", "u1", 20), ("code", "u1", 21), ("qvhl", "u1", 28),
                   ("mark", ">u4", 32), ("qproto", "u1", 37), ("qsrc", ">u4", 40),
                   ("qdst", ">u4", 44), ("qsport", ">u2", 48), ("qdport", ">u2", 50)], 52)
UDP6 = dtype([("vtc", "u1", 0), ("plen", ">u2", 4), ("proto", "u1", 6), ("ttl", "u1", 7),
              ("src", ">u8", 8), ("src_lo", ">u8", 16), ("dst", ">u8", 24),
              ("dst_lo", ">u8", 32), ("tport", ">u2", 40), ("myport", ">u2", 42),
              ("ulen", ">u2", 44)], 48)
ICMP6_UDP = dtype([("type", "u1", 40), ("code", "u1", 41), ("mark", ">u4", 48),
                   ("qproto", "u1", 54), ("qsrc", ">u8", 56), ("qsrc_lo", ">u8", 64),
                   ("qdst", ">u8", 72), ("qdst_lo", ">u8", 80), ("qsport", ">u2", 88),
                   ("qdport", ">u2", 90)], 92)
