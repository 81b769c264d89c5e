"""The receiver: AF_PACKET sockets (cooked, so each packet starts at its IP header) with a
classic BPF filter and a TPACKET_V3 ring mapped into our memory. Receiving only.

WHY A RING. recv() costs a system call and a GIL round trip per packet; with the kernel
filling blocks of a shared ring, the receive thread wakes once per block and reads
hundreds of packets from memory. Measured on a full loopback scan: 0.59 s of CPU with a
recv_into loop against 0.37 s with the ring, for the same 65,535 replies.

WHAT IT SEES. One socket per IP family, bound to that ethertype (not ETH_P_ALL): such
sockets get incoming packets only, so our own probes leaving an interface never reach
the filter (on ``lo`` they come back in, and the filter drops them by port). The filter
keeps TCP segments to our source ports and ICMP / ICMPv6 destination-unreachable
errors, and cuts each to ``SNAPLEN`` bytes: enough for the IP and TCP headers or for an
ICMP error and the header it quotes (not when both IPv4 headers carry 40 bytes of
options: that error, 136 bytes before its quoted sequence number, is counted invalid).

RING SIZE. The ring is touched page by page as the kernel cycles through it, so its
size shows up in the scan's peak RSS whatever the number of ports; 1 MiB is 16 bytes a
port on a 65,535-port scan and held every reply of a loopback scan without a drop.

WARM RINGS. Setting up a ring (PACKET_RX_RING) waits for an RCU grace period in the
kernel (synchronize_net: 8-20 ms measured here), before the first probe. ``prewarm``
does it on a thread while the command line still imports the engine; ``Capture`` takes
a warm ring of its shape (unbound, protocol 0: it captures nothing until bound), attaches
its filter and binds it.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import select
import socket
import struct
import threading
from collections.abc import Iterator

from ..errors import PrivilegeError, ScanError

__all__ = ["SNAPLEN", "TP3_HDR", "Capture", "bpf_program", "discard_warm", "interface_of",
           "prewarm"]

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_USER = 1
SO_ATTACH_FILTER = 26
ETH_P = {4: 0x0800, 6: 0x86DD}
SNAPLEN = 128
# struct tpacket3_hdr: next offset, sec, nsec, snaplen, len, status, mac, net.
TP3_HDR = struct.Struct("<IIIIIIHH")
_BLOCK = struct.Struct("<8xIII")  # tpacket_block_desc: block status, packets, first offset
_STATUS = struct.Struct("<I")

# Classic BPF opcodes (linux/filter.h).
LD_B_ABS, LD_H_ABS, LD_B_IND, LD_H_IND, LDX_MSH = 0x30, 0x28, 0x50, 0x48, 0xB1
JEQ, JGT, JGE, JSET, RET, RET_A, TXA, ADD = 0x15, 0x25, 0x35, 0x45, 0x06, 0x16, 0x87, 0x04


def _assemble(prog: list[tuple]) -> bytes:
    """(label, code, k, jt, jf) rows -> struct sock_filter array; jumps name labels."""
    where = {row[0]: i for i, row in enumerate(prog) if row[0]}
    out = b""
    for i, (_label, code, k, jt, jf) in enumerate(prog):
        rel = [0 if t is None else where[t] - i - 1 for t in (jt, jf)]
        out += struct.pack("HBBI", code, rel[0], rel[1], k)
    return out


def bpf_program(family: int, sport_lo: int, sport_hi: int, proto: int = 6) -> bytes:
    """Keep TCP (``proto`` 6) or UDP (17) to ports [sport_lo, sport_hi] and ICMP
    unreachable; the packet starts at the IP header (SOCK_DGRAM). IPv4 fragments after
    the first are dropped.

    A kept TCP segment is cut to its IP header + 20 bytes (the fixed TCP header), a UDP
    datagram to its IP header + 8: every reply then takes the same room in the ring,
    which lets the receiver find the packets of a block by stride instead of walking
    them one by one."""
    head = 20 if proto == 6 else 8
    if family == 4:
        prog: list[tuple] = [
            (None, LD_H_ABS, 6, None, None),
            (None, JSET, 0x1FFF, "drop", None),
            (None, LD_B_ABS, 9, None, None),
            (None, JEQ, proto, None, "icmp"),
            (None, LDX_MSH, 0, None, None),
            (None, LD_H_IND, 2, None, None),
            (None, JGE, sport_lo, None, "drop"),
            (None, JGT, sport_hi, "drop", None),
            (None, TXA, 0, None, None),
            (None, ADD, head, None, None),
            (None, RET_A, 0, None, None),
            ("icmp", JEQ, 1, None, "drop"),
            (None, LDX_MSH, 0, None, None),
            (None, LD_B_IND, 0, None, None),
            (None, JEQ, 3, "keep", "drop"),
        ]
    else:
        prog = [
            (None, LD_B_ABS, 6, None, None),
            (None, JEQ, proto, None, "icmp"),
            (None, LD_H_ABS, 42, None, None),
            (None, JGE, sport_lo, None, "drop"),
            (None, JGT, sport_hi, "drop", None),
            (None, RET, 40 + head, None, None),
            ("icmp", JEQ, 58, None, "drop"),
            (None, LD_B_ABS, 40, None, None),
            (None, JEQ, 1, "keep", "drop"),
        ]
    prog += [("keep", RET, SNAPLEN, None, None), ("drop", RET, 0, None, None)]
    return _assemble(prog)


FRAME = 2048
#: Warm rings (see the module docstring): (family, block size, blocks, retire ms) -> list of
#: (socket, ring memory), filled by ``prewarm``'s thread.
_WARM: dict[tuple[int, int, int, int], list[tuple[socket.socket, mmap.mmap]]] = {}
_WARM_LOCK = threading.Lock()
_WARMING: list[threading.Thread] = []


def _ring_req(bs: int, nr: int, tov: int) -> bytes:
    """struct tpacket_req3 for ``nr`` blocks of ``bs`` bytes, retired after ``tov`` ms."""
    return struct.pack("7I", bs, nr, FRAME, bs // FRAME * nr, tov, 0, 0)


def _new_ring(fam: int, bs: int, nr: int, tov: int) -> tuple[socket.socket, mmap.mmap]:
    """An unbound packet socket (protocol 0) with its TPACKET_V3 ring mapped; OSError.

    The ring's setsockopt goes through ctypes, which lets go of the GIL: Python's own
    ``setsockopt`` holds it through the kernel's wait (~10 ms), which would stall the
    thread this one is meant to overlap."""
    import ctypes

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        req = _ring_req(bs, nr, tov)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setsockopt(sock.fileno(), SOL_PACKET, PACKET_RX_RING, req, len(req)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        mm = mmap.mmap(sock.fileno(), bs * nr, mmap.MAP_SHARED,
                       mmap.PROT_READ | mmap.PROT_WRITE)
    except BaseException:
        sock.close()
        raise
    return sock, mm


def prewarm(families: set[int] | list[int], *, block_size: int = 1 << 17, blocks: int = 8,
            retire_ms: int = 2) -> None:
    """Set up one receive ring per family on a thread, for a ``Capture`` of that shape to
    take (the kernel's wait for the ring overlaps the caller's work). Needs root or
    CAP_NET_RAW; without them it does nothing (the scan then says why it cannot capture)."""

    def work() -> None:
        for fam in families:
            try:
                ring = _new_ring(fam, block_size, blocks, retire_ms)
            except OSError:
                continue
            with _WARM_LOCK:
                _WARM.setdefault((fam, block_size, blocks, retire_ms), []).append(ring)

    t = threading.Thread(target=work, name="prtip-capture-warm", daemon=True)
    _WARMING.append(t)
    t.start()


def settle_warm() -> None:
    """Wait for the rings still being set up (kept for a ``Capture`` to take). Dropping root
    calls it first: a prewarm thread running across the drop would lose its ring to EPERM
    and leave a thread whose credentials changed under it."""
    while _WARMING:
        _WARMING.pop().join()


def _take_warm(fam: int, bs: int, nr: int, tov: int) -> tuple[socket.socket, mmap.mmap] | None:
    settle_warm()  # a ring still being set up is sooner ready than a new one
    with _WARM_LOCK:
        left = _WARM.get((fam, bs, nr, tov))
        return left.pop() if left else None


def discard_warm() -> None:
    """Release the warm rings nobody took, on a daemon thread (each close waits for the
    kernel, as ``Capture.close`` says)."""
    settle_warm()
    with _WARM_LOCK:
        rings = [r for left in _WARM.values() for r in left]
        _WARM.clear()
    if rings:
        threading.Thread(target=_release, args=(rings,), name="prtip-capture-close",
                         daemon=True).start()


def _release(rings: list[tuple[socket.socket, mmap.mmap]]) -> None:
    for sock, mm in rings:
        mm.close()
        sock.close()


class _Ring:
    __slots__ = ("family", "sock", "mm", "block_size", "blocks", "next")

    def __init__(self, family: int, sock: socket.socket, mm: mmap.mmap, bs: int, nr: int):
        self.family, self.sock, self.mm = family, sock, mm
        self.block_size, self.blocks, self.next = bs, nr, 0


class Capture:
    """Receive rings for ``families``; ``blocks()`` yields filled blocks to parse.

    ``ifname`` None listens on every interface (the filter still applies).
    """

    def __init__(
        self,
        families: set[int] | list[int],
        sport_lo: int,
        sport_hi: int,
        *,
        ifname: str | None = None,
        block_size: int = 1 << 17,
        blocks: int = 8,
        retire_ms: int = 2,
        proto: int = 6,
    ) -> None:
        self.rings: list[_Ring] = []
        self.poller = select.poll()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller.register(self._wake_r, select.POLLIN)
        try:
            for fam in sorted(families):
                self.rings.append(self._open(fam, sport_lo, sport_hi, ifname, block_size,
                                             blocks, retire_ms, proto))
        except BaseException:
            self.close()
            raise

    def _open(
        self, fam: int, lo: int, hi: int, ifname: str | None, bs: int, nr: int, tov: int,
        proto: int = 6,
    ) -> _Ring:
        # With an interface, open with protocol 0 (nothing is captured yet) and bind once
        # the filter and ring are in place: re-binding a socket that already captures
        # waits for an RCU grace period (15-25 ms measured here).
        # A socket from the pool (net.privileges: opened before root was dropped) has
        # protocol 0 too, and is bound the same way, to every interface without ``ifname``.
        warm = _take_warm(fam, bs, nr, tov)
        if warm is not None:
            return self._bind_warm(fam, lo, hi, ifname, bs, nr, proto, *warm)
        from .privileges import take_packet

        pooled = take_packet(fam)
        eth = 0 if ifname or pooled else socket.htons(ETH_P[fam])
        try:
            sock = pooled or socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, eth)
        except PermissionError as exc:
            from .rawsock import PRIVILEGE_FIX

            raise PrivilegeError(
                f"a SYN scan captures replies with AF_PACKET ({exc.strerror}): {PRIVILEGE_FIX}"
            ) from None
        try:
            import ctypes

            code = bpf_program(fam, lo, hi, proto)
            buf = ctypes.create_string_buffer(code)
            fprog = struct.pack("HL", len(code) // 8, ctypes.addressof(buf))
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, _ring_req(bs, nr, tov))
            mm = mmap.mmap(sock.fileno(), bs * nr, mmap.MAP_SHARED,
                           mmap.PROT_READ | mmap.PROT_WRITE)
            if ifname:
                sock.bind((ifname, ETH_P[fam]))
            elif pooled:
                _bind_all(sock, ETH_P[fam])
        except OSError as exc:
            sock.close()
            raise ScanError(f"cannot set up the IPv{fam} packet capture: {exc}") from exc
        self.poller.register(sock.fileno(), select.POLLIN | select.POLLERR)
        return _Ring(fam, sock, mm, bs, nr)

    def _bind_warm(self, fam: int, lo: int, hi: int, ifname: str | None, bs: int, nr: int,
                   proto: int, sock: socket.socket, mm: mmap.mmap) -> _Ring:
        """A warm ring (``prewarm``): its filter, then the bind that starts the capture."""
        import ctypes

        try:
            code = bpf_program(fam, lo, hi, proto)
            buf = ctypes.create_string_buffer(code)
            fprog = struct.pack("HL", len(code) // 8, ctypes.addressof(buf))
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            if ifname:
                sock.bind((ifname, ETH_P[fam]))
            else:
                _bind_all(sock, ETH_P[fam])
        except OSError as exc:
            _release([(sock, mm)])
            raise ScanError(f"cannot set up the IPv{fam} packet capture: {exc}") from exc
        self.poller.register(sock.fileno(), select.POLLIN | select.POLLERR)
        return _Ring(fam, sock, mm, bs, nr)

    def wait(self, timeout: float) -> None:
        """Block until a ring may have a filled block, ``wake()``, or ``timeout`` seconds."""
        if not any(_BLOCK.unpack_from(r.mm, r.next * r.block_size)[0] & TP_STATUS_USER
                   for r in self.rings):
            self.poller.poll(int(timeout * 1000))
            try:
                os.read(self._wake_r, 64)
            except BlockingIOError:
                pass

    def wake(self) -> None:
        """Make a ``wait()`` in another thread return now."""
        os.write(self._wake_w, b"!")

    def congested(self) -> bool:
        """True when half of some ring's blocks wait for the receiver: the transmit side
        should pause, or the kernel will soon drop replies (measured: 3,139 of 65,535
        dropped by an 8-block ring on a busy machine without this check)."""
        for r in self.rings:
            half = r.blocks // 2
            if _BLOCK.unpack_from(r.mm, ((r.next + half) % r.blocks) * r.block_size)[0] \
                    & TP_STATUS_USER:
                return True
        return False

    def blocks(self) -> Iterator[tuple[int, mmap.mmap, int, int]]:
        """(family, ring memory, offset of the first packet, packets) for each filled
        block; the block goes back to the kernel when the consumer asks for the next."""
        for r in self.rings:
            while True:
                base = r.next * r.block_size
                status, n, first = _BLOCK.unpack_from(r.mm, base)
                if not status & TP_STATUS_USER:
                    break
                # The kernel fills the descriptor, but the receiver trusts nothing it reads:
                # a first offset outside the block, or more packets than the block can
                # hold, would send the parser outside it.
                if not _BLOCK.size <= first < r.block_size:
                    first, n = _BLOCK.size, 0
                n = min(n, (r.block_size - first) // TP3_HDR.size)
                yield r.family, r.mm, base + first, n
                _STATUS.pack_into(r.mm, base + 8, 0)  # TP_STATUS_KERNEL: the ring's again
                r.next = (r.next + 1) % r.blocks

    def stats(self) -> tuple[int, int]:
        """(packets, drops) the filter passed since the last call, over all rings."""
        packets = drops = 0
        for r in self.rings:
            p, d, _freeze = struct.unpack(
                "III", r.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
            )
            packets, drops = packets + p, drops + d
        return packets, drops

    def close(self) -> None:
        """Release the rings. Closing a packet socket waits for an RCU grace period
        (synchronize_net, 20-40 ms measured here), so it happens on a daemon thread."""
        rings, self.rings = self.rings, []
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1

        threading.Thread(target=_release, args=([(r.sock, r.mm) for r in rings],),
                         name="prtip-capture-close", daemon=True).start()
        discard_warm()  # a ring warmed for a shape no scan took


def _bind_all(sock: socket.socket, eth: int) -> None:
    """Bind a packet socket to ``eth`` on every interface (ifindex 0), which Python's
    (name, proto) address cannot say."""
    import ctypes

    addr = struct.pack("=HHiHBB8s", socket.AF_PACKET, socket.htons(eth), 0, 0, 0, 0, b"")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.bind(sock.fileno(), ctypes.c_char_p(addr), len(addr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


SIOCGIFADDR = 0x8915


def interface_of(family: int, src: bytes, dst: bytes) -> str | None:
    """The interface that holds our source address ``src`` (so replies to it arrive
    there), 'lo' for a local destination, or None when it cannot be told."""
    if src == dst or (family == 4 and dst[0] == 127) or (family == 6 and dst == _V6_LOOPBACK):
        return "lo"
    if family == 6:
        want = src.hex()
        try:
            with open("/proc/net/if_inet6") as fh:
                for line in fh:
                    parts = line.split()
                    if parts and parts[0] == want:
                        return parts[-1]
        except OSError:
            return None
        return None
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _index, name in socket.if_nameindex():
            try:
                res = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()))
            except OSError:
                continue
            if res[20:24] == src:
                return name
    finally:
        probe.close()
    return None


_V6_LOOPBACK = bytes(15) + b"\x01"
