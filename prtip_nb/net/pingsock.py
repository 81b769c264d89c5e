"""Host discovery's raw sockets: ICMP and TCP, IPv4 and IPv6, each with a kernel filter.

engine.pingsweep decides what to send and when; this module owns the sockets: it opens
them (from the pool opened before root was dropped, net.privileges, or afresh), attaches a
classic BPF program to each so the kernel keeps only packets that could be replies to us,
sends a probe, waits for readiness and reads replies with the kernel's arrival time. An
``OSError`` never escapes raw: opening maps to ``PrivilegeError`` / ``ScanError``, a send
the network refuses to a ``False`` (the probe stays silent, a retry resends), anything else
to ``ScanError``.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

from ..errors import PrivilegeError, ScanError
from ..probes import ping
from .rawsock import PRIVILEGE_FIX

__all__ = ["DISCOVERY_FIX", "PingSockets", "addr_text"]

ICMP6_FILTER = 1
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35
SO_ATTACH_FILTER = 26
DISCOVERY_FIX = PRIVILEGE_FIX.replace(
    "or use method='connect' (-sT), which needs no privileges",
    "or skip host discovery (-Pn) and scan with method='connect' (-sT)")
#: A send refused with one of these (no route, broadcast, a local firewall) stays silent.
SILENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENETUNREACH, errno.EHOSTUNREACH,
                           errno.EINVAL, errno.ENOBUFS, errno.EADDRNOTAVAIL})

_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


def _raw(family: int, proto: int) -> socket.socket:
    from .privileges import take_discovery

    pooled = take_discovery(family, proto)  # opened before root was dropped
    if pooled is not None:
        return pooled
    try:
        s = socket.socket(_AF[family], socket.SOCK_RAW, proto)
    except PermissionError as exc:
        raise PrivilegeError(
            f"host discovery sends ICMP and TCP probes through raw sockets "
            f"({exc.strerror}): {DISCOVERY_FIX}"
        ) from None
    except OSError as exc:
        raise ScanError(f"cannot open a raw IPv{family} socket: {exc}") from exc
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # RTTs from arrival, not from drain
    for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
            break
        except OSError:
            continue
    return s


def _filter(name: str, sport: int, ident: int) -> bytes:
    """Classic BPF for a receive socket: the kernel keeps only packets that could be
    replies to us (a raw TCP socket otherwise gets a copy of all of the host's TCP).
    IPv4 raw sockets see the IP header first; IPv6 ones the transport header."""
    from .capture import JEQ, LD_B_IND, LD_H_ABS, LD_H_IND, LDX_MSH, RET, _assemble

    keep, drop = ("keep", RET, 0xFFFF, None, None), ("drop", RET, 0, None, None)
    prog: list[tuple[Any, ...]]
    if name == "tcp4":
        prog = [(None, LDX_MSH, 0, None, None), (None, LD_H_IND, 2, None, None),
                (None, JEQ, sport, "keep", "drop")]
    elif name == "tcp6":
        prog = [(None, LD_H_ABS, 2, None, None), (None, JEQ, sport, "keep", "drop")]
    elif name == "icmp4":  # echo reply or timestamp reply carrying our identifier
        prog = [(None, LDX_MSH, 0, None, None), (None, LD_B_IND, 0, None, None),
                (None, JEQ, ping.ECHO_REPLY4, "id", None),
                (None, JEQ, ping.TS_REPLY4, "id", "drop"),
                ("id", LD_H_IND, 4, None, None), (None, JEQ, ident, "keep", "drop")]
    else:  # icmp6: ICMP6_FILTER already passes echo replies only
        prog = [(None, LD_H_ABS, 4, None, None), (None, JEQ, ident, "keep", "drop")]
    return _assemble([*prog, keep, drop])


def _attach(sock: socket.socket, code: bytes) -> None:
    import ctypes

    buf = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(code) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class PingSockets:
    """The raw sockets of one sweep, by name: ``icmp4``, ``tcp4``, ``icmp6``, ``tcp6``."""

    def __init__(self) -> None:
        self.socks: dict[str, socket.socket] = {}
        # A socket pair that ``wake`` writes to: a receive thread blocked in ``wait`` returns
        # at once when the sweep ends, instead of at its timeout (up to 50 ms a sweep).
        self._wake: tuple[socket.socket, socket.socket] | None = None

    def __bool__(self) -> bool:
        return bool(self.socks)

    def open(self, families: frozenset[int] | set[int], sport: int, ident: int) -> None:
        """Open and filter the sockets ``families`` need; on failure none stays open."""
        try:
            if 4 in families:
                self.socks["icmp4"] = _raw(4, socket.IPPROTO_ICMP)
                self.socks["tcp4"] = _raw(4, socket.IPPROTO_TCP)
            if 6 in families:
                s = self.socks["icmp6"] = _raw(6, socket.IPPROTO_ICMPV6)
                block = bytearray(b"\xff" * 32)  # a set bit blocks that ICMPv6 type
                word = struct.unpack_from("=I", block, 4 * (ping.ECHO_REPLY6 >> 5))[0]
                struct.pack_into("=I", block, 4 * (ping.ECHO_REPLY6 >> 5),
                                 word & ~(1 << (ping.ECHO_REPLY6 & 31)))
                s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, bytes(block))
                self.socks["tcp6"] = _raw(6, socket.IPPROTO_TCP)
            for name, s in self.socks.items():
                _attach(s, _filter(name, sport, ident))
            self._wake = socket.socketpair()
            self._wake[0].setblocking(False)
        except OSError as exc:
            self.close()
            raise ScanError(f"cannot set up host discovery's raw sockets: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for s in self.socks.values():
            s.close()
        self.socks = {}
        if self._wake is not None:
            for s in self._wake:
                s.close()
            self._wake = None

    def wake(self) -> None:
        """Make a ``wait`` under way (on another thread) return now."""
        if self._wake is not None:
            try:
                self._wake[1].send(b"\0")
            except OSError:
                pass  # full (already woken) or closed

    def send(self, name: str, packet: bytes, host: str, family: int) -> bool:
        """Send ``packet`` to ``host``: True if it left; False if the queue was full or the
        network refused it (the probe stays silent, a retry resends)."""
        dst = (host, 0) if family == 4 else (host, 0, 0, 0)
        try:
            self.socks[name].sendto(packet, dst)
            return True
        except BlockingIOError:
            time.sleep(0.001)  # a full queue; this probe is lost
            return False
        except OSError as exc:
            if exc.errno not in SILENT_ERRNOS:
                raise ScanError(f"sending a discovery probe to {host} failed: {exc}") from exc
            return False

    def wait(self, extra: list[Any], timeout: float) -> bool:
        """Whether a socket (or one of ``extra``, e.g. the neighbour watch) is readable
        within ``timeout`` seconds."""
        wake = [] if self._wake is None else [self._wake[0]]
        try:
            ready, _, _ = select.select([*self.socks.values(), *extra, *wake], [], [], timeout)
        except InterruptedError:
            return False
        if wake and wake[0] in ready:
            try:
                wake[0].recv(64)
            except OSError:
                pass
        return bool(ready)

    def replies(self, now: float, limit: int = 4096
                ) -> Iterator[tuple[str, int, bytes, float, bytes | None]]:
        """(socket name, family, packet, arrival time, IPv6 source or None) of what each
        socket holds, at most ``limit`` a socket (a flood cannot keep the caller here)."""
        for name, s in self.socks.items():
            fam = 4 if name.endswith("4") else 6
            for _ in range(limit):
                try:
                    data, anc, _flags, addr = s.recvmsg(2048, 64)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    raise ScanError(f"reading discovery replies failed: {exc}") from exc
                t = now
                for level, typ, value in anc:  # the kernel's arrival time (SO_TIMESTAMPNS)
                    if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(value) >= 16:
                        sec, nsec = struct.unpack_from("=qq", value)
                        t = sec + nsec * 1e-9
                src = None if fam == 4 else socket.inet_pton(socket.AF_INET6,
                                                             addr[0].split("%")[0])
                yield name, fam, data, t, src


def addr_text(family: int, addr: bytes) -> str:
    """A packed address as text (the kernel's own spelling, as nmap prints it)."""
    return socket.inet_ntop(_AF[family], addr)
