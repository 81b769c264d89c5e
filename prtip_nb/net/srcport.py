"""A UDP scan's source port, held by bound UDP sockets while the scan runs (the TCP scans'
counterpart is net.synstate.reserve_port)."""

from __future__ import annotations

import random
import socket

__all__ = ["reserve_udp_port"]


def reserve_udp_port(port: int | None, avoid: tuple[tuple[int, int], ...]
                     ) -> tuple[int, list[socket.socket]]:
    """A source port held by bound UDP sockets (IPv4 and IPv6), outside ``avoid``."""
    def scanned(p: int) -> bool:
        return any(lo <= p <= hi for lo, hi in avoid)

    for attempt in range(256):
        p = port or random.randrange(40000, 60000)
        if not port and attempt < 200 and scanned(p):
            continue
        held: list[socket.socket] = []
        try:
            for af, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
                s = socket.socket(af, socket.SOCK_DGRAM)
                held.append(s)
                if af == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
                s.bind((addr, p))
            return p, held
        except OSError:
            for s in held:
                s.close()
            if port:
                return port, []
    raise OSError("no free UDP source port found in 40000-59999")
