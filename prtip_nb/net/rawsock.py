"""The raw layer-3 sender: SYN probes out through IPPROTO_RAW sockets, in sendmmsg batches.

LAYER 3 ONLY. The socket is AF_INET/AF_INET6 with IPPROTO_RAW (header included): the
kernel routes each packet and builds the link layer. Nothing here can put a frame on an
interface of our choosing, so a probe cannot leave by a path the routing table did not
pick (the masscan/zmap hazard on a shared machine).

WHY sendmmsg THROUGH ctypes. A ctypes call releases the GIL for the whole batch, and on
loopback the kernel runs the target's TCP stack inside the send call (about 6 µs a
probe). One sendto per probe hands the GIL back and forth with the receive thread 65,535
times; measured here, a full loopback scan took 0.87-1.0 s with sendto and 0.38 s with
batches of 256 through sendmmsg. The message table is built once (numpy arrays whose
addresses go into the iovec and mmsghdr tables), never per probe -- building ctypes
structures per probe is what cancelled sendmmsg's gain in the reference measurement.
Per batch, numpy writes the changing fields of every slot at once (``load``).

OSError is translated here: EPERM/EACCES at socket() is a PrivilegeError with the fix.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import PrivilegeError, ScanError
from ..probes.tcp import LAYOUTS

__all__ = ["PRIVILEGE_FIX", "RawSender", "open_raw_socket"]

PRIVILEGE_FIX = (
    "run as root, or give the interpreter the capability "
    "(sudo setcap cap_net_raw+ep \"$(readlink -f $(which python3))\"), "
    "or use method='connect' (-sT), which needs no privileges"
)
IPV6_HDRINCL = 36
SO_SNDBUFFORCE = 32

_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_SOCKADDR_LEN = {4: 16, 6: 28}
# struct mmsghdr on 64-bit Linux: msghdr (56 bytes) + msg_len, padded to 64.
_MMSG = np.dtype(
    {
        "names": ["name", "namelen", "iov", "iovlen"],
        "formats": ["<u8", "<u4", "<u8", "<u8"],
        "offsets": [0, 8, 16, 24],
        "itemsize": 64,
    }
)
# Send errors that concern one probe (its route, a local firewall): skip it; it will be
# retried like any unanswered probe and end as filtered/no-response.
_SKIP = {
    errno.EPERM, errno.EACCES, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EINVAL,
    errno.EMSGSIZE, errno.EADDRNOTAVAIL, errno.ENETDOWN, errno.EHOSTDOWN,
}
_WAIT = {errno.ENOBUFS, errno.EAGAIN, errno.EINTR}  # a full queue: wait a little, resend

_libc: ctypes.CDLL | None = None


def _sendmmsg() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)  # CDLL (not PyDLL): calls drop the GIL
        _libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        _libc.sendmmsg.restype = ctypes.c_int
    return _libc.sendmmsg


def open_raw_socket(family: int) -> socket.socket:
    """An IPPROTO_RAW socket (we write the IP header, the kernel routes and fills the
    IPv4 checksum and id); PrivilegeError if the process may not open one. Taken from
    the socket pool when the program opened one before dropping root (net.privileges)."""
    from .privileges import take_raw

    pooled = take_raw(family)
    if pooled is not None:
        return pooled
    try:
        sock = socket.socket(_AF[family], socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError as exc:
        raise PrivilegeError(
            f"a SYN scan needs raw sockets ({exc.strerror}): {PRIVILEGE_FIX}"
        ) from None
    except OSError as exc:
        raise ScanError(f"cannot open a raw IPv{family} socket: {exc}") from exc
    if family == 6:  # implied by IPPROTO_RAW on Linux; explicit for older kernels
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_HDRINCL, 1)
    for opt in (SO_SNDBUFFORCE, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
            break
        except OSError:
            continue
    return sock


class RawSender:
    """Up to ``capacity`` probes of one family, sent with one or more sendmmsg calls.

    ``load(n, ...)`` patches slots ``[0, n)`` from arrays; ``send(start, count)`` sends
    slots ``[start, start + count)`` and returns how many the kernel took.
    """

    def __init__(self, family: int, template: bytes, capacity: int = 4096,
                 layout: Any = None) -> None:
        # ``layout``: where the patched fields are (default a SYN's; probes.udp has UDP's)
        lay = LAYOUTS[family] if layout is None else layout
        self.family = family
        self.capacity = capacity
        self.sock = open_raw_socket(family)
        self.fd = self.sock.fileno()
        self._send = _sendmmsg()
        self.errors: dict[int, int] = {}  # errno -> probes skipped
        self.waits = 0
        slot = (len(template) + 15) & ~15
        self.packets = np.zeros((capacity, slot), np.uint8)
        self.packets[:, : len(template)] = np.frombuffer(template, np.uint8)
        salen = _SOCKADDR_LEN[family]
        self.names = np.zeros((capacity, salen), np.uint8)
        self.names[:, 0:2] = np.frombuffer(struct.pack("=H", _AF[family]), np.uint8)
        self.iov = np.zeros((capacity, 2), np.uint64)
        self.iov[:, 0] = self.packets.ctypes.data + np.arange(capacity, dtype=np.uint64) * slot
        self.iov[:, 1] = len(template)
        self.msgs = np.zeros(capacity, _MMSG)
        self.msgs["name"] = self.names.ctypes.data + np.arange(capacity, dtype=np.uint64) * salen
        self.msgs["namelen"] = salen
        self.msgs["iov"] = self.iov.ctypes.data + np.arange(capacity, dtype=np.uint64) * 16
        self.msgs["iovlen"] = 1
        self._msgs_at = self.msgs.ctypes.data
        # Field views: big-endian integers at the template's offsets, one row per slot.
        if family == 4:
            pf = {"dst": (">u4", lay.dst), "src": (">u4", lay.src), "ident": (">u2", 4)}
            nf = {"dst": (">u4", 4)}
        else:
            pf = {"dst": (">u8", lay.dst), "dst_lo": (">u8", lay.dst + 8),
                  "src": (">u8", lay.src), "src_lo": (">u8", lay.src + 8)}
            nf = {"dst": (">u8", 8), "dst_lo": (">u8", 16)}
        pf.update(dport=(">u2", lay.dport), seq=(">u4", lay.seq), csum=(">u2", lay.csum))
        self.fields = self.packets.reshape(-1).view(_view(pf, slot))
        self.addrs = self.names.reshape(-1).view(_view(nf, salen))

    def close(self) -> None:
        self.sock.close()

    def load(
        self,
        n: int,
        dst: npt.NDArray[np.uint64] | int,
        dports: npt.NDArray[np.uint64],
        seqs: npt.NDArray[np.uint64],
        csums: npt.NDArray[np.uint64],
        *,
        dst_lo: npt.NDArray[np.uint64] | int = 0,
        src: npt.NDArray[np.uint64] | int = 0,
        src_lo: npt.NDArray[np.uint64] | int = 0,
        ident: npt.NDArray[np.uint64] | None = None,
    ) -> None:
        """Patch slots [0, n): addresses (IPv6: high and low 64 bits), port, seq, csum;
        ``ident``: IPv4 identification fields (None: the template's)."""
        f, a = self.fields, self.addrs
        f["dst"][:n] = dst
        a["dst"][:n] = dst
        f["src"][:n] = src
        if self.family == 6:
            f["dst_lo"][:n] = dst_lo
            a["dst_lo"][:n] = dst_lo
            f["src_lo"][:n] = src_lo
        f["dport"][:n] = dports
        f["seq"][:n] = seqs
        f["csum"][:n] = csums
        if ident is not None and self.family == 4:
            f["ident"][:n] = ident

    def send(self, start: int, count: int) -> int:
        """Send slots [start, start + count); returns how many the kernel accepted."""
        done = sent = stalled = 0
        send, fd, base = self._send, self.fd, self._msgs_at
        while done < count:
            r = send(fd, base + (start + done) * 64, count - done, 0)
            if r > 0:
                done += r
                sent += r
                stalled = 0
                continue
            err = ctypes.get_errno()
            if err in _WAIT:
                self.waits += 1
                stalled += 1
                if stalled > 4000:  # 2 s without progress: the interface is not draining
                    raise ScanError(f"the IPv{self.family} send queue stayed full for 2 s "
                                    f"({os.strerror(err)}); lower the rate")
                time.sleep(0.0005)
            elif err in _SKIP:
                self.errors[err] = self.errors.get(err, 0) + 1
                done += 1
            else:
                raise ScanError(f"sending a raw IPv{self.family} packet failed: "
                                f"{os.strerror(err)} (errno {err})")
        return sent


def _view(fields: dict[str, tuple[str, int]], itemsize: int) -> np.dtype:
    return np.dtype(
        {
            "names": list(fields),
            "formats": [f for f, _ in fields.values()],
            "offsets": [o for _, o in fields.values()],
            "itemsize": itemsize,
        }
    )
