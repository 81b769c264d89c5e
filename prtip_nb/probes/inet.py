"""What every IP probe shares: the Internet checksum and the protocol numbers.

(The socket module has the numbers too, but probe modules do not import it: see the
layers contract in pyproject.toml.)
"""

from __future__ import annotations

import struct

__all__ = ["IPPROTO_ICMP", "IPPROTO_ICMPV6", "IPPROTO_TCP", "IPPROTO_UDP", "checksum"]

IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6 = 1, 6, 17, 58


def checksum(data: bytes | bytearray) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
