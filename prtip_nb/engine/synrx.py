"""The SYN scan's receive thread: parse, recompute the cookie, dedup, report.

Every reply is judged on its own (zmap's ``validate_packet``): its addresses and ports
name a probe, the cookie says we sent that probe, and one bit per index says whether it
already has a verdict. A SYN-ACK or RST counts only if ``ack - 1`` is the cookie (a reset
to a SYN carries ACK, RFC 9293 3.10.7.1, so a RST without one cannot be tied to a probe
and is ignored); an ICMP unreachable counts only if the header it quotes is a probe we
sent, cookie included. Anything else is counted in ``stats`` and dropped. What a reply
proves is the probe module's (probes.tcpsyn.SYN: ``accept``, ``validate``, ``classify``,
``parse_error``, ``validate_error``); this thread finds the probe a reply names (host and
port index), dedups and writes the records.

WHY WHOLE BLOCKS IN NUMPY. The transmit threads need the GIL for a moment between send
calls; a receive loop that holds it for 2 µs a packet made them wait (CPython hands the
GIL over only every 5 ms), and a loopback scan took 0.41-0.49 s instead of 0.21 s. So
a ring block of up to ~900 TCP replies is parsed, validated, deduplicated and turned
into verdict records by numpy in one go; only ICMP errors (rare) take a per-packet path.
The fields are read through strided views of the ring (every reply is cut to the same
length, so frames sit at one stride), not gathered: replaying a full scan's blocks, that
took parsing from 0.50 to 0.28 µs a reply for IPv4 and from 0.61 to 0.33 µs for IPv6.

HOSTILE INPUT. Anyone on the path chooses these bytes, and no cookie can be checked
before the headers are read. So nothing is read past a frame's snap length or its
block: the vectorised path masks out frames too short for the fields it reads, or whose
IP length or TCP data offset lies (counted ``invalid``); ICMP errors are cut to their
snap length and ``parse_icmp_error`` checks every header length (outer and quoted IHL,
IPv6 payload length) before it reads. Should a parser raise all the same, the block is
parsed again frame by frame, the frame that raises is dropped, and the scan goes on:
``stats["parse_errors"]`` counts it and ``warnings()`` says so once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ..net.capture import SNAPLEN, TP3_HDR, Capture
from ..net.counters import RttEstimator
from ..net.synstate import Answered, HostTable, PortIndex
from ..probes.rows import TCP4 as _TCP4
from ..probes.rows import TCP6 as _TCP6
from ..probes.rows import dtype as _dtype
from ..probes.rows import gather as _gather
from ..probes.tcpsyn import IGNORED, MALFORMED, SYN, parse_icmp_error
from ..probes.verdicts import CLOSED, ICMP4, ICMP4_CODES, ICMP6, NO_RESPONSE, OPEN
from ..probes.verdicts import syn_verdict as verdict
from ..targets.space import join_index

# The verdict names and the ICMP parser are re-exported: probes.verdicts and
# probes.tcpsyn own them.
__all__ = ["CLOSED", "ICMP4", "ICMP4_CODES", "ICMP6", "IGNORED", "MALFORMED", "NO_RESPONSE",
           "OPEN", "Out", "Receiver", "parse_icmp_error", "verdict"]

# VERDICT CODES: probes.verdicts owns them (and their words); ``verdict`` is its syn_verdict.
# What the probe module's ``parse_icmp_error`` returns for a packet it cannot use: not an
# error about a TCP probe (IGNORED, counted ``ignored``), or one whose lengths lie
# (MALFORMED, counted ``invalid``).

_M64 = (1 << 64) - 1
U64 = npt.NDArray[np.uint64]


class Out(Protocol):
    """Where verdicts go: probes.records.RecordBuffer."""

    def emit(self, index: int, code: int, rtt: float | None, ttl: int = 0) -> None: ...
    def write(self, records: bytes) -> None: ...
    def tick(self) -> None: ...


# tpacket3_hdr fields we use; the IP+TCP fields of a reply are probes.rows' TCP4 / TCP6.
_HDR = _dtype([("next", "<u4", 0), ("sec", "<u4", 4), ("nsec", "<u4", 8),
               ("snap", "<u4", 12), ("net", "<u2", 26)], 28)


@dataclass(eq=False, repr=False, kw_only=True)
class Receiver:
    """Drains ``capture`` on its own thread until ``stop`` is set. The fields are what the
    engine hands it; ``__post_init__`` adds the thread, its events and its counters."""

    capture: Capture
    hosts: HostTable
    ports: PortIndex
    answered: Answered
    sport: int
    out: Out
    rtt: RttEstimator
    total: int
    t_base: float  # time.time() at the start; send times are relative to it
    record_dtype: np.dtype
    # Called with the send times (seconds after t_base) of each block's new replies:
    # the adaptive rate charges them to the epochs they were sent in.
    on_replies: Callable[[np.ndarray], None] | None = None

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.all_answered = threading.Event()
        self.count = 0  # indices with a verdict
        # time.monotonic() before the last pass over the ring that has been fully parsed:
        # every reply that arrived (and was handed over) before it has been counted.
        self.caught_up = time.monotonic()
        self.stats = {"replies": 0, "invalid": 0, "duplicates": 0, "ignored": 0,
                      "parse_errors": 0}
        self.parse_error = ""  # the first parser exception, for warnings()
        self.thread = threading.Thread(target=self._run, name="prtip-syn-rx", daemon=True)
        self.error: BaseException | None = None
        rings = self.capture.rings
        self._arrays = {r.family: np.frombuffer(r.mm, np.uint8) for r in rings}
        self._block_size = {r.family: r.block_size for r in rings}

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        self.capture.wake()
        self.thread.join()
        self._arrays.clear()  # views of the rings: the capture cannot close while they live
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.capture.wait(0.05)
                mark = time.monotonic()
                for fam, _mm, off, n in self.capture.blocks():
                    self.stats["replies"] += n
                    try:
                        self._block(fam, self._arrays[fam], off, n)
                    except Exception as exc:  # noqa: BLE001 -- see _parse_failed
                        self._parse_failed(fam, off, n, exc)
                self.caught_up = mark
                self.out.tick()
        except BaseException as exc:  # surfaced by join() on the scan thread
            self.error = exc
            self.all_answered.set()

    def _parse_failed(self, fam: int, first: int, n: int, exc: Exception) -> None:
        """A parser raised on a block: a packet we did not foresee, never a reason to end
        the scan. Parse the block again one frame at a time (verdicts already recorded are
        duplicates by then, and the bitmap drops them) and drop the frames that raise."""
        self.stats["parse_errors"] += 1
        if not self.parse_error:
            self.parse_error = f"{type(exc).__name__}: {exc}"
        arr = self._arrays[fam]
        try:
            offs = _offsets(arr, first, n, self._block_end(fam, arr, first)).tolist()
        except Exception:  # noqa: BLE001 -- the block's own headers are unreadable
            self.stats["invalid"] += n
            return
        self.stats["invalid"] += n - len(offs)
        for off in offs:
            try:
                self._block(fam, arr, off, 1)
            except Exception:  # noqa: BLE001
                self.stats["invalid"] += 1

    def warnings(self) -> list[str]:
        """Once per scan: the receiver met packets its parsers raised on."""
        if not self.stats["parse_errors"]:
            return []
        return [f"the receiver could not parse {self.stats['parse_errors']} block(s) of "
                f"replies ({self.parse_error}); it dropped the packets at fault, counted "
                "them invalid and went on. Please report this, with a capture if you can"]

    def _block_end(self, fam: int, arr: npt.NDArray[np.uint8], first: int) -> int:
        """Where the ring block holding offset ``first`` ends: no frame reaches past it."""
        bs = self._block_size.get(fam)
        return len(arr) if not bs else min(len(arr), (first // bs + 1) * bs)

    # -- one ring block --------------------------------------------------------------------
    def _block(self, fam: int, arr: npt.NDArray[np.uint8], first: int, n: int) -> None:
        dt = _TCP4 if fam == 4 else _TCP6
        end = self._block_end(fam, arr, first)
        frames = _frames(arr, first, n, dt, end)
        if frames is not None:  # the usual block: zero-copy views of the ring, no gather
            hdr, tcp, stride, net = frames
            p = None
            small = hdr["snap"] < dt.itemsize
        else:
            offs = _offsets(arr, first, n, end)
            hdr = _gather(arr, offs, _HDR)
            p = offs + hdr["net"].astype(np.int64)  # each packet's IP header
            # SNAP LENGTH: a frame too short for the fields read (or whose header points
            # past its block) is read at a harmless offset and masked out.
            small = (hdr["snap"] < dt.itemsize) | (p + dt.itemsize > end)
            tcp = _gather(arr, np.where(small, 0, p), dt) if len(arr) >= dt.itemsize \
                else np.zeros(len(offs), dt)  # (every frame is small then)
            stride = net = 0
            self.stats["invalid"] += n - len(offs)  # frames past a broken next offset
        ts = hdr["sec"] + hdr["nsec"] * 1e-9
        if fam == 4:
            is_tcp = (tcp["vhl"] == 0x45) & (tcp["proto"] == 6) & ~small
            lies = tcp["len"] < 40
        else:
            is_tcp = (tcp["proto"] == 6) & ~small
            lies = tcp["plen"] < 20
        # A TCP header whose IP length or data offset says it is not all there.
        lies = (lies | (tcp["doff"] < 0x50)) & is_tcp
        snaps = hdr["snap"]
        for k in np.flatnonzero(~is_tcp & ~small).tolist():  # ICMP errors: rare, one by one
            at = int(p[k]) if p is not None else first + k * stride + net
            cut = min(at + min(int(snaps[k]), SNAPLEN), end)
            self._icmp(fam, bytes(arr[at:cut]), int(tcp["ttl"][k]), float(ts[k]))
        bad = small | lies
        if bad.any():  # (the usual block has none: one pass, no counting)
            self.stats["invalid"] += int(bad.sum())
            is_tcp &= ~lies
        if not is_tcp.all():
            tcp, ts = tcp[is_tcp], ts[is_tcp]
        if len(tcp):
            self._tcp(fam, tcp, ts)

    def _tcp(self, fam: int, tcp: np.ndarray, ts: npt.NDArray[np.float64]) -> None:
        # The probe module judges: which segments can answer a SYN (accept), which
        # answer one of ours (validate: the cookie, our address), and the verdict
        # (classify); the receiver only finds the probe (host, port) and dedups.
        st = self.stats
        keep = SYN.accept(tcp)
        st["ignored"] += int((~keep).sum())  # our own SYNs looping back on lo, strays
        h = self.hosts.index_array(fam, tcp["src"], None if fam == 4 else tcp["src_lo"])
        pi = self.ports.index_array(tcp["tport"])
        ok = keep & (h >= 0) & (pi >= 0) & (tcp["myport"] == self.sport)
        if not ok.any():
            st["invalid"] += int(keep.sum())
            return
        if not ok.all():  # usually all are: skip the copies
            tcp, ts, h, pi = tcp[ok], ts[ok], h[ok], pi[ok]
        good = SYN.validate(fam, tcp, *self._host_constants(fam, h))
        st["invalid"] += int(keep.sum()) - int(good.sum())
        j = join_index(h, pi, self.hosts.size)
        if not good.all():
            j, tcp, ts = j[good], tcp[good], ts[good]
        self._record(j, SYN.classify(fam, tcp), tcp["ttl"], ts)

    def _host_constants(self, fam: int, h: npt.NDArray[np.int64]) -> tuple[
            U64 | int, U64 | np.uint64, U64 | np.uint64]:
        """Cookie key and our source address (IPv6: high, low halves) for each reply's host:
        scalars for a one-host scan (no per-block ``np.unique``), else arrays."""
        if self.hosts.size == 1:
            info = self.hosts.info(0)
            src = int.from_bytes(info.src, "big")
            return info.key, np.uint64(src >> 64 if fam == 6 else src), np.uint64(src & _M64)
        key, _base, src_hi, src_lo = self.hosts.constants(h)
        return key, (src_hi if fam == 6 else src_lo), src_lo

    def _record(self, j: U64, codes: np.ndarray, ttl: np.ndarray, ts: np.ndarray) -> None:
        """Dedup ``j`` (within the block and against the bitmap), then write records."""
        if not len(j):
            return
        replies = len(j)
        # DEDUP, cheap first: the bitmap drops what earlier blocks answered; a repeat
        # within the block (rare) is looked for with one sort, and only then does
        # np.unique (a stable argsort, 3x the cost) pick each index's first reply.
        new = self.answered.unanswered(j)
        if not new.all():
            j, codes, ttl, ts = j[new], codes[new], ttl[new], ts[new]
        if len(j) > 1:
            s = np.sort(j)
            if (s[1:] == s[:-1]).any():
                j, first = np.unique(j, return_index=True)  # the block's first reply wins
                codes, ttl, ts = codes[first], ttl[first], ts[first]
        self.stats["duplicates"] += replies - len(j)
        if not len(j):
            return
        np.bitwise_or.at(self.answered.view, j >> np.uint64(3),
                         np.left_shift(1, (j & np.uint64(7)).astype(np.uint8)).astype(np.uint8))
        rec = np.zeros(len(j), self.record_dtype)
        rec["index"], rec["code"] = j, codes
        rec["t_us"] = (ts * 1e6).astype(np.int64)
        if "ttl" in rec.dtype.names:
            rec["ttl"] = ttl
        sent_at = self.answered.sent_at
        if sent_at is None:
            rec["rtt_ms"] = np.nan
            if self.on_replies is not None:  # no send times kept: about one RTT ago
                self.on_replies(ts - self.t_base - (self.rtt.srtt or 0.0))
        else:
            sent = sent_at[j]  # one gather (random reads of 4 B a probe: 52 MiB at a /15)
            if self.on_replies is not None:
                self.on_replies(sent)
            rtt = np.maximum(0.0, ts - self.t_base - sent)
            rec["rtt_ms"] = rtt * 1000.0
            for sample in rtt[:: max(1, len(rtt) // 8)].tolist():  # a sample is enough
                self.rtt.update(sample)
        self.out.write(rec.tobytes())
        self._counted(len(j))

    def _counted(self, n: int) -> None:
        self.count += n
        if self.count >= self.total:
            self.all_answered.set()

    # -- ICMP errors -----------------------------------------------------------------------
    def _icmp(self, fam: int, data: bytes, ttl: int, t: float) -> None:
        got = SYN.parse_error(fam, data)
        if isinstance(got, int):
            self.stats["ignored" if got == IGNORED else "invalid"] += 1
            return
        verdict, src, dst, sport, dport, seq = got
        h, pi = self.hosts.index(fam, dst), self.ports.index(dport)
        if h < 0 or pi < 0 or sport != self.sport:
            self.stats["invalid"] += 1
            return
        info = self.hosts.info(h)
        if not SYN.validate_error(info.key, dport, seq, src, info.src):  # not our probe
            self.stats["invalid"] += 1
            return
        j = join_index(np.array([h]), np.array([pi]), self.hosts.size)
        self._record(j, np.array([verdict]), np.array([ttl], np.uint8), np.array([t]))


def _frames(arr: npt.NDArray[np.uint8], first: int, n: int, dt: np.dtype,
            end: int | None = None) -> tuple[np.ndarray, np.ndarray, int, int] | None:
    """(headers, IP+TCP rows, stride, network offset) of a block's ``n`` frames as strided
    views of the ring, or None unless every frame has the same stride and network offset.

    The filter cuts every TCP reply to the same length, so that is the usual block; the
    views copy nothing (a fancy-index gather of each frame's bytes cost more than all the
    rest of a block's parsing). Every view stays before ``end`` (the block's end)."""
    end = len(arr) if end is None else end
    if n < 1 or first + _HDR.itemsize > end:
        return None
    stride = int(arr[first : first + 4].view("<u4")[0]) if n > 1 else 0
    last = first + (n - 1) * stride
    if (n > 1 and stride < _HDR.itemsize) or last + _HDR.itemsize > end:
        return None
    hdr = np.ndarray((n,), _HDR, arr, first, (stride,))
    if n > 1 and not (hdr["next"][:-1] == stride).all():
        return None
    nets = hdr["net"]
    net = int(nets[0])
    if last + net + dt.itemsize > end or not (nets == net).all():
        return None
    return hdr, np.ndarray((n,), dt, arr, first + net, (stride,)), stride, net


def _offsets(arr: npt.NDArray[np.uint8], first: int, n: int,
             end: int | None = None) -> npt.NDArray[np.int64]:
    """Byte offsets of a block's ``n`` packets, each with a whole tpacket3_hdr before
    ``end``. The filter cuts every TCP reply to the same length, so frames usually sit at
    a fixed stride: check that, else walk. A walk stops at a ``next`` offset that does not
    move forward or leaves the block: fewer offsets than ``n`` come back."""
    end = len(arr) if end is None else end
    room = end - _HDR.itemsize  # the last offset at which a frame header fits
    if n <= 1:
        return np.array([first] * n if first <= room else [], np.int64)
    stride = int(arr[first : first + 4].view("<u4")[0]) if first <= room else 0
    offs = first + np.arange(n, dtype=np.int64) * stride
    if stride >= _HDR.itemsize and offs[-1] <= room:
        nexts = _gather(arr, offs[:-1], np.dtype("<u4"))
        if (nexts == stride).all():
            return offs
    out, off = [], first
    unpack = TP3_HDR.unpack_from
    for k in range(n):
        if off > room:
            break
        out.append(off)
        step = unpack(arr.data, off)[0]
        if k < n - 1 and step < _HDR.itemsize:
            break
        off += step
    return np.array(out, np.int64)

