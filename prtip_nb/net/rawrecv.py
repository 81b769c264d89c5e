"""Raw receive sockets for the scheduled probes (OS detection, traceroute).

A raw IPPROTO_TCP and an IPPROTO_ICMP / ICMPV6 socket per address family get a copy of
every TCP and ICMP packet this namespace receives; the caller matches what is its own. They
are few probes a host with per-probe timing, so a select() over two to four sockets serves
(the port scans' millions of replies go through the capture ring, net.capture, instead).

The one place these sockets are opened: OSError becomes the exception tree here
(PermissionError -> PrivilegeError with the fix; anything else -> ScanError), so no bare
OSError escapes to the engine. Receiving is bounded: at most ``DRAIN`` packets a socket
a poll; the next poll picks up the rest.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterable
from typing import NamedTuple

from ..errors import PrivilegeError, ScanError
from .rawsock import PRIVILEGE_FIX

__all__ = ["DRAIN", "Packet", "RawReceivers"]

DRAIN = 512  # packets read from one socket per poll, at most
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_ICMP = {4: socket.IPPROTO_ICMP, 6: socket.IPPROTO_ICMPV6}


class Packet(NamedTuple):
    """One packet as a raw socket gave it. IPv4: the IP header included; IPv6: the payload
    only (``source`` says who sent it). ``t``: time.monotonic() when the poll returned."""

    family: int
    kind: str  # "tcp" or "icmp"
    data: bytes
    source: str
    t: float


class RawReceivers:
    """The raw TCP and ICMP sockets of ``families``, non-blocking; ``what`` names the
    feature in errors ("OS detection", "traceroute")."""

    def __init__(self, families: Iterable[int], *, what: str,
                 rcvbuf: int | None = 1 << 20) -> None:
        self._socks: dict[socket.socket, tuple[int, str]] = {}
        try:
            for family in sorted(set(families)):
                for proto, kind in ((socket.IPPROTO_TCP, "tcp"), (_ICMP[family], "icmp")):
                    s = socket.socket(_AF[family], socket.SOCK_RAW, proto)
                    self._socks[s] = (family, kind)
                    s.setblocking(False)
                    if rcvbuf:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        except PermissionError as exc:
            self.close()
            raise PrivilegeError(f"{what} needs raw sockets ({exc.strerror}): "
                                 f"{PRIVILEGE_FIX}") from None
        except OSError as exc:
            self.close()
            raise ScanError(f"{what} cannot open a raw socket: {exc}") from exc
        self._buf = bytearray(65535)

    def poll(self, timeout: float) -> list[Packet]:
        """What arrived within ``timeout`` seconds (returns as soon as anything did)."""
        if not self._socks:
            time.sleep(max(0.0, timeout))
            return []
        ready, _, _ = select.select(list(self._socks), [], [], max(0.0, timeout))
        now = time.monotonic()
        out: list[Packet] = []
        buf = self._buf
        for s in ready:
            family, kind = self._socks[s]
            for _ in range(DRAIN):
                try:
                    n, addr = s.recvfrom_into(buf)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break  # a queued ICMP error on the socket itself: nothing to read
                out.append(Packet(family, kind, bytes(buf[:n]), addr[0], now))
        return out

    def close(self) -> None:
        for s in self._socks:
            s.close()
        self._socks = {}
