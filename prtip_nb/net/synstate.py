"""What the SYN transmit and receive threads share: maps between the index space and
(address, port), per-host probe constants, and the answered bitmap.

Index ``j`` is host ``j % H``, port index ``j // H`` (targets.space). The receive side
runs the map backwards -- address -> host index, port -> port index -- so a reply
names its probe without any table of probes in flight.

MEMORY. Per index: one bit (answered) and, for spaces up to ``SENT_AT_LIMIT``, a
float32 send time (the RTT of each reply); 4.1 bytes a port. Larger spaces keep only the
bit and report no per-port RTT. Both are indexed by ``j`` over the whole space, so a
shard k/n pays for the space, not for its 1/n of it.
"""

from __future__ import annotations

import ctypes
import random
import socket
import struct
import threading
from bisect import bisect_right
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError
from ..probes.cookie import CookieKey
from ..probes.tcp import checksum_base
from ..targets import PortSet, TargetSet

__all__ = [
    "SENT_AT_LIMIT", "Answered", "HostInfo", "HostTable", "PortIndex",
    "reserve_port", "route_source",
]

SENT_AT_LIMIT = 1 << 24  # 64 MiB of send times at most
BITMAP_LIMIT = 1 << 34  # 2 GiB of bitmap: refuse beyond
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_M64 = (1 << 64) - 1
U64 = npt.NDArray[np.uint64]


class HostInfo(NamedTuple):
    family: int
    dst: bytes  # packed target address
    src: bytes  # packed source address the kernel routes from
    key: int  # cookie host key
    base: int  # TCP checksum base (probes.tcp.checksum_base)


def route_source(family: int, dst: bytes) -> bytes:
    """The source address the kernel would use towards ``dst`` (a UDP connect sends
    nothing). Zeros when there is no route: those probes fail to send and end filtered.

    ONE SOCKET A THREAD, DISCONNECTED AFTER EACH ASK. A connected UDP socket keeps the
    source address of its first connect (Linux fixes inet_saddr then), so connecting it
    again reports the first route's source for every destination (tried: discovery then
    missed hosts). A connect to AF_UNSPEC resets that address (udp_disconnect, for a
    socket never bound to one), so the next connect routes afresh: 5.5 -> 2.7 us a host,
    with the GIL, for each of a /15's 131K hosts (tested against a new socket each time).
    """
    socks: dict[int, socket.socket] = _ROUTE.__dict__.setdefault("socks", {})
    s = socks.get(family)
    if s is None:
        s = socks[family] = socket.socket(_AF[family], socket.SOCK_DGRAM)
    try:
        s.connect((socket.inet_ntop(_AF[family], dst), 9))
        return socket.inet_pton(_AF[family], s.getsockname()[0])
    except OSError:
        return bytes(len(dst))
    finally:
        if _disconnect(s.fileno()) != 0:  # not reset: never reuse it
            socks.pop(family, None)
            s.close()


_ROUTE = threading.local()
_UNSPEC = struct.pack("=H14x", socket.AF_UNSPEC)
_libc: ctypes.CDLL | None = None


def _disconnect(fd: int) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    result: int = _libc.connect(fd, _UNSPEC, len(_UNSPEC))
    return result


class HostTable:
    """Host index <-> address, and each host's probe constants (cached)."""

    def __init__(self, targets: TargetSet, key: CookieKey, sport: int,
                 templates: dict[int, bytes]) -> None:
        self.targets = targets
        self.size = targets.size
        self.key = key
        self.sport = sport
        self.templates = templates
        self.ranges = targets.ranges
        self.starts: list[int] = []
        n = 0
        for _fam, lo, hi in self.ranges:
            self.starts.append(n)
            n += hi - lo + 1
        self.n4 = sum(hi - lo + 1 for fam, lo, hi in self.ranges if fam == 4)
        # Per family: (first addresses, last addresses, start indices) for bisecting.
        self._by_fam = {
            fam: (
                [lo for f, lo, _ in self.ranges if f == fam],
                [hi for f, _, hi in self.ranges if f == fam],
                [s for (f, _, _), s in zip(self.ranges, self.starts, strict=True) if f == fam],
            )
            for fam in (4, 6)
        }
        self.cache: dict[int, HostInfo] = {}
        # HOST CONSTANTS BY INDEX: a host's source address costs a socket and a connect
        # (~10 us), its key and checksum base ~10 us more, and the cache above is cleared
        # every 65,536 hosts; so a /15 in permuted order recomputed them for about every
        # other probe (a quarter of the scan's CPU, capping it near 30K probes/s). Arrays
        # keep them at 17 bytes a host (2.2 MiB for a /15): which of a few distinct
        # sources (0: not computed yet), the key, the base. Above 2**24 hosts: none.
        small = self.size <= 1 << 24
        self._src_id = np.zeros(self.size if small else 0, np.uint8)
        self._keys = np.zeros(self.size if small else 0, np.uint64)
        self._bases = np.zeros(self.size if small else 0, np.uint64)
        self._sources: list[bytes] = [b""]
        # Each known source as (high, low) 64-bit halves, by source id (IPv4: all in low).
        self._src_hi = np.zeros(256, np.uint64)
        self._src_lo = np.zeros(256, np.uint64)
        self._lock = threading.Lock()  # the transmit and receive threads fill together
        self._base0: int | None = None  # IPv4 checksum base from zero addresses
        self._range_lo = np.array([lo for f, lo, _ in self.ranges if f == 4], np.uint64)
        self._range_start = np.array([s for (f, _, _), s in zip(self.ranges, self.starts,
                                                                strict=True) if f == 4],
                                     np.uint64)

    def family(self, h: int) -> int:
        return 4 if h < self.n4 else 6

    def info(self, h: int) -> HostInfo:
        hit = self.cache.get(h)
        if hit is None:
            if len(self.cache) >= 1 << 16:  # a big sweep: keep the memory bounded
                self.cache.clear()
            fam = self.family(h)
            dst = self.targets.packed(h)
            known = int(self._src_id[h]) if len(self._src_id) else 0
            if known:
                hit = HostInfo(fam, dst, self._sources[known], int(self._keys[h]),
                               int(self._bases[h]))
            else:
                src = route_source(fam, dst)
                key = self.key.host_key(src, dst, self.sport)
                base = checksum_base(self.templates[fam], fam, src, dst)
                hit = HostInfo(fam, dst, src, key, base)
                self._remember(h, hit)
            self.cache[h] = hit
        return hit

    def _remember(self, h: int, info: HostInfo) -> None:
        if not len(self._src_id):
            return
        with self._lock:
            if info.src not in self._sources:
                if len(self._sources) >= 256:
                    return  # more sources than a byte tells apart (never seen): no entry
                value = int.from_bytes(info.src, "big")
                self._src_hi[len(self._sources)] = value >> 64
                self._src_lo[len(self._sources)] = value & _M64
                self._sources.append(info.src)
            sid = self._sources.index(info.src)
        self._keys[h] = info.key
        self._bases[h] = info.base
        self._src_id[h] = sid  # last: a nonzero id says the row is complete

    def constants(self, h: npt.NDArray[np.integer]) -> tuple[U64, U64, U64, U64]:
        """(cookie key, checksum base, source high half, source low half) of each host
        index in ``h`` (an IPv4 source is all in the low half).

        HOT PATH. Both sides ask this for every batch (transmit: 4,096 probes; receive: a
        ring block), so a host's constants are computed once (``info``) and then read
        from the arrays in a few fancy-indexing steps: no ``np.unique`` and no Python
        object per host per batch, which had cost the receive thread a tenth of its time
        at a /15 and the transmit threads as much."""
        h = h.astype(np.intp, copy=False)
        if not len(self._src_id):  # more hosts than the arrays hold: per host (cached)
            return self._per_host(h)
        sid = self._src_id[h]
        missing = sid == 0
        if missing.any():
            # dict.fromkeys, not np.unique: a plain np.unique imports numpy.ma (5-7 ms) on
            # the first batch, before the first probe of a scan leaves.
            new = np.array(list(dict.fromkeys(h[missing].tolist())), dtype=np.intp)
            if not self._fill_v4(new):
                for x in new.tolist():
                    self._remember(x, self.info(x))
            sid = self._src_id[h]
            if not sid.all():  # a 256th source: no array entry (never seen in practice)
                return self._per_host(h)
        return self._keys[h], self._bases[h], self._src_hi[sid], self._src_lo[sid]

    def _fill_v4(self, hs: npt.NDArray[np.intp]) -> bool:
        """The constants of new IPv4 hosts ``hs`` computed together: the route per host
        (a kernel question, ~6 us), the key and checksum base in numpy. False: not this case
        (IPv6 hosts, a subclass's own ``info``, a 256th source), left to ``info``.

        VECTORISED because a host's constants in Python (``info``: key, base, HostInfo)
        cost ~20 us, paid by the transmit threads with the GIL for each of a /15's 131K
        hosts: ~0.2 us a probe at 100 ports a host, as much as building the packets."""
        if type(self).info is not HostTable.info or not len(hs) or int(hs.max()) >= self.n4:
            return False
        _, dst = self.destinations(hs)
        srcs = [route_source(4, d.to_bytes(4, "big")) for d in dst.tolist()]
        with self._lock:
            for new in set(srcs) - set(self._sources):
                if len(self._sources) >= 256:
                    return False
                self._src_lo[len(self._sources)] = int.from_bytes(new, "big")
                self._sources.append(new)
            sid = np.array([self._sources.index(x) for x in srcs], np.uint8) if len(
                set(srcs)) > 1 else np.full(len(hs), self._sources.index(srcs[0]), np.uint8)
        src = self._src_lo[sid]
        # CookieKey.host_key and checksum_base over arrays (an IPv4 address folds to
        # itself); tests hold them equal to the scalar forms.
        k = self.key
        x = _mix64(np.uint64(k.k0) ^ src)
        x = _mix64(x ^ dst ^ np.uint64(k.k1))
        self._keys[hs] = _mix64(x + np.uint64(self.sport))
        if self._base0 is None:
            self._base0 = checksum_base(self.templates[4], 4, bytes(4), bytes(4))
        m16 = np.uint64(0xFFFF)
        self._bases[hs] = (np.uint64(self._base0) + (src >> np.uint64(16)) + (src & m16)
                           + (dst >> np.uint64(16)) + (dst & m16))
        self._src_id[hs] = sid  # last: a nonzero id says the row is complete
        return True

    def _per_host(self, h: npt.NDArray[np.integer]) -> tuple[U64, U64, U64, U64]:
        uh, inv = np.unique(h, return_inverse=True)
        infos = [self.info(int(x)) for x in uh.tolist()]
        srcs = [int.from_bytes(i.src, "big") for i in infos]
        return (np.array([i.key for i in infos], np.uint64)[inv],
                np.array([i.base for i in infos], np.uint64)[inv],
                np.array([s >> 64 for s in srcs], np.uint64)[inv],
                np.array([s & _M64 for s in srcs], np.uint64)[inv])

    def destinations(self, h: npt.NDArray[np.integer]) -> tuple[U64, U64]:
        """(high, low) 64-bit halves of each host's address (IPv4: all in the low half);
        IPv4 vectorised over the target ranges, IPv6 one distinct host at a time."""
        hu = h.astype(np.uint64, copy=False)
        if self.n4 and (self.n4 == self.size or bool((hu < np.uint64(self.n4)).all())):
            r = np.searchsorted(self._range_start, hu, side="right") - 1
            return np.zeros(len(h), np.uint64), self._range_lo[r] + (hu - self._range_start[r])
        uh, inv = np.unique(h, return_inverse=True)
        vals = [int.from_bytes(self.targets.packed(int(x)), "big") for x in uh.tolist()]
        return (np.array([v >> 64 for v in vals], np.uint64)[inv],
                np.array([v & _M64 for v in vals], np.uint64)[inv])

    def index(self, family: int, addr: bytes) -> int:
        """Host index of a packed address, or -1 if it is not a target."""
        los, his, starts = self._by_fam[family]
        value = int.from_bytes(addr, "big")
        r = bisect_right(los, value) - 1
        if r < 0 or value > his[r]:
            return -1
        return starts[r] + value - los[r]


    def index_array(self, family: int, hi: U64, lo: U64 | None = None) -> npt.NDArray[np.int64]:
        """``index`` for many packed-as-integer addresses (IPv6: high and low halves).

        Vectorised per target range; an IPv6 range that crosses a 64-bit boundary (wider
        than a /64) is looked up one address at a time."""
        out = np.full(len(hi), -1, np.int64)
        los, his, starts = self._by_fam[family]
        for first, last, start in zip(los, his, starts, strict=True):
            if family == 4:
                m = (hi >= first) & (hi <= last)
                out[m] = start + (hi[m].astype(np.int64) - first)
            elif first >> 64 == last >> 64:
                assert lo is not None
                m = (hi == first >> 64) & (lo >= first & _M64) & (lo <= last & _M64)
                out[m] = start + (lo[m] - np.uint64(first & _M64)).astype(np.int64)
            else:
                assert lo is not None
                for k in np.flatnonzero(out < 0).tolist():
                    out[k] = self.index(6, int(hi[k]).to_bytes(8, "big")
                                        + int(lo[k]).to_bytes(8, "big"))
        return out


def _mix64(x: U64) -> U64:
    """probes.cookie.mix64 over a uint64 array (wraps like ``& (2**64 - 1)``)."""
    x = x ^ (x >> np.uint64(30))
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


class PortIndex:
    """TCP port <-> port index, scalar and vectorised."""

    def __init__(self, ports: PortSet) -> None:
        if ports.udp:
            raise ConfigError("a SYN scan probes TCP ports only", hint="drop the U: ports")
        self.lows = [lo for lo, _ in ports.tcp]
        self.highs = [hi for _, hi in ports.tcp]
        self.starts: list[int] = []
        n = 0
        for lo, hi in ports.tcp:
            self.starts.append(n)
            n += hi - lo + 1
        self._lows = np.array(self.lows, np.uint64)
        self._starts = np.array(self.starts, np.uint64)
        # PORT LOOKUP: port -> index in one 64K table (512 KiB), and index -> port, so
        # the receive side maps a block's ports in one gather, not a mask per range
        # (the top 100 ports are 90 ranges: that loop was a tenth of the receive thread).
        # One range (-p-, 1-1000) needs no index -> port table: an offset does it (the table
        # was 8 B a port of issue 3's memory figure). Several ranges keep it as uint64, the
        # dtype the receive side wants: no conversion per block on the hot path.
        self._index_of = np.full(65536, -1, np.int64)
        self._port_of = np.zeros(n if len(self.lows) > 1 else 0, np.uint64)
        for lo, hi, start in zip(self.lows, self.highs, self.starts, strict=True):
            self._index_of[lo : hi + 1] = np.arange(start, start + hi - lo + 1)
            if len(self._port_of):
                self._port_of[start : start + hi - lo + 1] = np.arange(lo, hi + 1)

    def index(self, port: int) -> int:
        r = bisect_right(self.lows, port) - 1
        if r < 0 or port > self.highs[r]:
            return -1
        return self.starts[r] + port - self.lows[r]

    def index_array(self, ports: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
        """``index`` for many ports (-1 for a port not in the set)."""
        return self._index_of[ports.astype(np.intp) & 0xFFFF]

    def ports(self, pidx: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
        if len(self.lows) == 1:
            return pidx + self._lows[0]
        return self._port_of[pidx.astype(np.intp, copy=False)]


class Answered:
    """One bit per index (bytearray for the receive thread's scalar updates, a numpy view
    of the same memory for the transmit side's vectorised checks) and send times."""

    def __init__(self, size: int, *, times: bool = True) -> None:
        if size > BITMAP_LIMIT:
            raise ConfigError(
                f"a scan of {size} probes needs {size >> 23} MiB of state",
                hint="scan fewer hosts or ports at a time",
            )
        self.bits = bytearray((size + 7) >> 3)
        self.view = np.frombuffer(self.bits, np.uint8)
        # Host discovery keeps its few send times per host itself (times=False).
        self.sent_at: npt.NDArray[np.float32] | None = (
            np.zeros(size, np.float32) if times and size <= SENT_AT_LIMIT else None
        )

    def has(self, i: int) -> bool:
        """Whether index ``i`` has its verdict (scalar; the receive paths of a few
        packets a host, such as discovery's)."""
        return bool(self.bits[i >> 3] >> (i & 7) & 1)

    def mark(self, i: int) -> bool:
        """Give index ``i`` its verdict; False if it had one already (a duplicate)."""
        byte, bit = i >> 3, 1 << (i & 7)
        if self.bits[byte] & bit:
            return False
        self.bits[byte] |= bit
        return True

    def times(self) -> memoryview | None:
        """The send times as a memoryview: scalar reads from it are Python floats, 3x
        faster than indexing the numpy array."""
        return None if self.sent_at is None else memoryview(self.sent_at.data)

    def unanswered(self, js: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        bit = (self.view[js >> np.uint64(3)] >> (js & np.uint64(7)).astype(np.uint8)) & 1
        return bit == 0


def reserve_port(port: int | None = None) -> tuple[int, list[socket.socket]]:
    """A source port for the scan, held by bound (not listening) TCP sockets."""
    for _ in range(64):
        p = port or random.randrange(40000, 60000)
        held: list[socket.socket] = []
        try:
            for af, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
                s = socket.socket(af, socket.SOCK_STREAM)
                held.append(s)
                if af == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((addr, p))
            return p, held
        except OSError:
            for s in held:
                s.close()
            if port:  # the caller's choice is in use: scan from it anyway, unreserved
                return port, []
    raise OSError("no free source port found in 40000-59999")
