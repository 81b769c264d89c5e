"""UDP scanning (nmap -sU): stateless transmit over raw sockets, IPv4 and IPv6, with
the target's ICMP rate limit measured and obeyed.

The shape is the SYN engine's (engine.syn): the transmit side walks the shuffled index
space in numpy batches and sends through sendmmsg (net.rawsock), one sender per payload
(probes.udp: most ports get an empty datagram, a few well-known ports a protocol
request); one receive thread (engine.udprx) validates, dedups and reports; the two share
the answered bitmap. Round 0 sends every probe, a retry round only the silent ones: the
round loop is engine.rounds, SYN's too; UDP's hooks (``round_limiter``, ``after_round``)
carry the ICMP rate-limit pacing below.

VERDICTS (nmap's). A UDP reply: open. ICMP port unreachable from the target: closed.
Other unreachables, or port unreachable from another address: filtered. Silence after
the retries: open|filtered -- which is why the retries and the rate matter so much more
than for SYN: a closed port whose ICMP error was not sent looks exactly like an open
one.

THE ICMP RATE LIMIT. Linux sends at most one ICMP error per ``icmp_ratelimit`` ms (1000
by default, burst 6) to each peer, and ``icmp_msgs_per_sec`` (1000, burst 50) in all;
IPv6 one per ``net.ipv6.icmp.ratelimit`` (100 ms; older kernels scale it by the
route's prefix). Not on loopback. Past the limit, closed ports fall silent. nmap's
answer: when probes are answered only after a retransmission, slow down, and retransmit
only as often as retransmissions have been seen to pay. Ours is the same idea, measured rather than
searched for:

- Round 0 is sent at the scan's rate. If ICMP errors then arrived much more slowly
  than probes left while ports stayed silent, a limit is SUSPECTED (never on loopback).
- Round 1 (the retransmission that tells a limit from silence) is spread over at least
  2 s; if it is answered, the LIMIT is the steady rate of the errors it drew (the
  first burst left out).
- Later rounds are paced at 1.25x the limit, so every token of the target's bucket is
  spent on one of our probes (``Pacer`` speeds a round up when most of its probes hit
  dropped ports); the pause before a round is 1.5 token intervals (3 s at most), so it
  starts with a token in hand.
- A retry round happens only while the previous retry round got new answers (nmap's
  max_successful_tryno), up to the template's max retries. A paced round that gets
  nothing back means no closed port is left silent; the rest are open|filtered.

PER HOST. The kernel's bucket is per peer (us), so each target machine limits us on
its own and the measured limit is their sum. Each host gets its share of it (by the
errors it drew), and paced rounds go at the fastest pace that keeps every host that
still has silent probes within 1.25x its own limit (``HostPlan``).

The cost is physics: C closed ports behind a limit of L errors/s take about C / L
seconds, for nmap as for us (docs/architecture.md has the measurements).

SOURCE PORT. One random port per scan, not in the scanned UDP set when avoidable (on
loopback a probe to our own port would look like a reply), held by bound UDP sockets
with a tiny receive buffer: replies are read from the capture ring, and the kernel
neither queues them nor answers them with ICMP port unreachable.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..net.capture import Capture
from ..net.counters import Counters, RttEstimator
from ..net.ratectl import AdaptiveRate, RatePolicy, RateState
from ..net.rawsock import RawSender
from ..net.srcport import reserve_udp_port
from ..net.synstate import Answered, HostInfo, HostTable, PortIndex, route_source
from ..net.throttle import TokenBucket
from ..probes.cookie import CookieKey
from ..probes.records import DTYPE as RECORD_DTYPE
from ..probes.udp import (
    UDP_LAYOUTS,
    addr_sum,
    payload_base,
    payloads,
)
from ..probes.udpprobe import UDP
from ..probes.verdicts import udp_verdict
from ..targets import Permutation, PortSet, TargetSet, TargetSpace, iter_batches, shard_len
from ..targets.space import split_index
from .rounds import RUN, RoundResult, RoundScan
from .synrx import Out
from .udppace import (
    MAX_PACED_HOSTS,
    MAX_PAUSE,
    PACE,
    PROBE_S,
    HostPlan,
    Pacer,
    host_rates,
    icmp_rates,
)
from .udprx import UdpReceiver

__all__ = ["UdpEngine", "udp_verdict"]

BATCH = 4096
class UdpHostTable(HostTable):
    """HostTable whose per-host checksum base is the addresses' share of a UDP checksum
    (the payload's share is per sender: probes.udp.payload_base)."""

    def info(self, h: int) -> HostInfo:
        hit = self.cache.get(h)
        if hit is None:
            if len(self.cache) >= 1 << 16:
                self.cache.clear()
            fam = self.family(h)
            dst = self.targets.packed(h)
            src = route_source(fam, dst)
            key = self.key.host_key(src, dst, self.sport)
            hit = self.cache[h] = HostInfo(fam, dst, src, key, addr_sum(src) + addr_sum(dst))
        return hit


class _Offset:
    """Records of a UDP-only index space, shifted into the scan's whole space (whose
    port indices list every TCP port first: targets.space)."""

    def __init__(self, out: Out, offset: int) -> None:
        self.inner, self.offset = out, offset

    def emit(self, index: int, code: int, rtt: float | None, ttl: int = 0) -> None:
        self.inner.emit(index + self.offset, code, rtt, ttl)

    def write(self, records: bytes) -> None:
        if self.offset:
            rec = np.frombuffer(records, RECORD_DTYPE).copy()
            rec["index"] += self.offset
            records = rec.tobytes()
        self.inner.write(records)

    def tick(self) -> None:
        self.inner.tick()


@dataclass
class _Pacing:
    """The UDP round policy's state across rounds (see the module docstring)."""

    ctl: AdaptiveRate | None  # the adaptive controller, when the rate adapts
    rate: float | None  # pinned, or paced by the ICMP limit once measured
    measure_at: int | None = None  # the measurement round, once a limit is suspected
    mute: bool = False  # round 0 drew no ICMP error at all
    low: float = 0.0  # the low estimate of the limit (the pause before a paced round)
    plan: HostPlan = field(default_factory=lambda: HostPlan(0.0, 0.0))
    marks: int = 0  # ICMP arrivals before this round
    round_pace: float | None = None  # this round's rate


class UdpEngine(RoundScan):
    """One UDP scan of ``targets`` × ``ports.udp`` (shard ``shard`` of that space).

    ``index_offset`` shifts the verdicts' indices into a bigger space (a SYN + UDP scan
    reports both into one sink).
    """

    def __init__(self, *, targets: TargetSet, ports: PortSet, out: Out, seed: int,
                 shard: tuple[int, int] = (1, 1), start: int = 0,
                 rate: float | RatePolicy | None = None,
                 retries: int = 1, rtt: RttEstimator, counters: Counters | None = None,
                 cancel: threading.Event | None = None, source_port: int | None = None,
                 secret: bytes | None = None, index_offset: int = 0) -> None:
        self.targets = targets
        self.ports = PortSet(udp=ports.udp)
        self.out = _Offset(out, index_offset)
        self.space = TargetSpace(targets, self.ports)
        self.perm = Permutation(self.space.size, seed)
        self.shard, self.start = shard, start
        self.secret = secrets.token_bytes(16) if secret is None else secret
        self.source_port, self._held = reserve_udp_port(source_port, self.ports.udp)
        self.sport = self.source_port
        # Pinned (probes/s), adaptive (a policy: round 0 and unpaced retries follow the
        # path, never below the template's start) or None (loopback: no limit).
        self.rate = rate
        self.limiter: AdaptiveRate | TokenBucket | None = None  # the one in force
        self.retries = retries
        self.rtt = rtt
        self.counters = counters if counters is not None else Counters()
        self.cancel = cancel if cancel is not None else threading.Event()
        self.port_index = PortIndex(PortSet(tcp=self.ports.udp))  # a port <-> index map
        self.total = shard_len(self.space.size, shard, start)
        self.families = {4, 6} & {fam for fam, _, _ in targets.ranges}
        self.hosts = UdpHostTable(targets, CookieKey(self.secret), self.sport, {})
        self.answered = Answered(self.space.size)
        # PAYLOADS: group 0 is the empty datagram; one group per payload that a scanned
        # port has, looked up through a 64 KiB table (port -> group).
        self.group_of = np.zeros(65536, np.uint8)
        self.payloads: list[bytes] = [b""]
        for port, p in sorted(payloads().items()):
            if ("udp", port) in self.ports:
                if p.data not in self.payloads:
                    self.payloads.append(p.data)
                self.group_of[port] = self.payloads.index(p.data)
        self.group_base = [payload_base(self.sport, data) for data in self.payloads]
        self.t_base = time.time()
        self.stats: dict[str, float] = {}
        self.limit: float | None = None  # the target's ICMP error rate, once measured
        self.host_limits: dict[int, tuple[float, float]] = {}  # per host: steady, low
        self.round_log: list[dict[str, float]] = []
        self._capture: Capture | None = None
        self._rx: UdpReceiver | None = None
        self._pacer: Pacer | None = None
        self._first_send = self._last_send = 0.0
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._senders: dict[tuple[int, int], RawSender] = {}
        self._pace = _Pacing(None, None)

    # -- the rounds (engine.rounds runs them) ------------------------------------------------
    PROBES, UNSENT = "UDP probes", "open|filtered"  # (RoundScan.warnings)

    def kind_warnings(self) -> list[str]:
        if self.limit is None:
            return []
        return [f"the target rate-limits ICMP errors (about {self.limit:.0f}/s): retries "
                "were paced to it so closed ports are not taken for open|filtered; this is "
                "what makes UDP scans slow"]

    def before_run(self) -> None:
        if self._pacer is not None:
            self._pacer.check()

    def _open(self) -> UdpReceiver:
        ifname = self.capture_interface()
        # 16 blocks, not 8: an ICMP error takes three times a SYN-ACK's room in the ring.
        capture = self._capture = Capture(self.families, self.sport, self.sport,
                                          ifname=ifname, proto=17, blocks=16)
        senders: dict[tuple[int, int], RawSender] = {}
        try:
            zeros = {4: bytes(4), 6: bytes(16)}
            for fam in self.families:
                for g, data in enumerate(self.payloads):
                    tmpl = UDP.prepare(fam, zeros[fam], self.sport, data)
                    cap = BATCH if g == 0 else min(BATCH, max(16, self.targets.size))
                    senders[(fam, g)] = RawSender(fam, tmpl, cap, layout=UDP_LAYOUTS[fam])
        except BaseException:
            capture.close()
            for s in senders.values():
                s.close()
            raise
        self._senders = senders
        rx = self._rx = UdpReceiver(
            capture=capture, hosts=self.hosts, ports=self.port_index, answered=self.answered,
            sport=self.sport, out=self.out, rtt=self.rtt, total=self.total,
            t_base=self.t_base, record_dtype=RECORD_DTYPE)
        ctl: AdaptiveRate | None = None
        # Send times are time.time() - t_base; the limiters' clock is monotonic.
        offset = self.clock_offset = time.monotonic() - (time.time() - self.t_base)
        if isinstance(self.rate, RatePolicy):
            ctl = AdaptiveRate.for_rtt(self.rate, self.rtt, max_batch=RUN)
            adaptive = ctl
            rx.on_replies = lambda st: adaptive.replied(st.astype(np.float64) + offset)
            ctl.horizon = lambda: rx.caught_up
        rx.start()
        # A float once pinned or paced by the ICMP limit; None: unlimited or adaptive.
        self._pace = _Pacing(ctl, None if isinstance(self.rate, RatePolicy) else self.rate)
        return rx

    def round_limiter(self, rnd: int) -> AdaptiveRate | TokenBucket | None:
        p, rx = self._pace, self._rx
        assert rx is not None
        p.marks, p.round_pace = len(rx.icmp_times), p.rate
        if rnd == p.measure_at:
            # MEASUREMENT ROUND: the retransmissions are spread over PROBE_S seconds, so
            # the target's bucket refills while they go out and the errors that come back
            # show its steady rate.
            spread = max(1.0, (self.total - rx.count) / PROBE_S)
            top = p.rate if p.ctl is None or p.rate is not None else p.ctl.rate
            p.round_pace = spread if top is None else min(top, spread)
        limiter: AdaptiveRate | TokenBucket | None
        if p.ctl is not None and p.round_pace is None:  # the path sets the pace
            if rnd:
                p.ctl.new_round()
            limiter = p.ctl
        else:
            limiter = TokenBucket(p.round_pace, max_batch=RUN) if p.round_pace else None
        self.limiter = limiter
        self._pacer = None
        if isinstance(limiter, TokenBucket) and self.limit is not None:
            # Paced rounds follow the ICMP limit up to the template's start rate (or the
            # user's), as before the rate adapted.
            ceiling = (self.rate.initial if isinstance(self.rate, RatePolicy)
                       else self.rate or limiter.rate)
            self._pacer = Pacer(limiter, p.plan, ceiling, rx)
        return limiter

    def send_round(self, rnd: int, limiter: AdaptiveRate | TokenBucket | None) -> None:
        self._round(rnd, self._senders, limiter)

    def after_round(self, rnd: int, result: RoundResult) -> float | None:
        p, rx = self._pace, self._rx
        assert rx is not None
        est = icmp_rates(rx.icmp_times[p.marks:], result.t0)
        sent, new = result.sent, result.new
        self.round_log.append({"round": rnd, "sent": sent, "new": new,
                               "rate": p.round_pace or 0.0, "s": time.monotonic() - result.t0})
        if rx.all_answered.is_set() or (rnd >= 1 and new == 0):
            return None  # retransmit only while retransmissions are answered (nmap)
        slow = est is not None and est[0] < 0.5 * sent / max(1e-3, result.t_sent - result.t0)
        loop = self.targets.is_loopback  # Linux never limits errors there
        if rnd == 0:
            # SUSPECTED LIMIT: errors came much slower than probes left, while ports
            # stayed silent. Only a retransmission can tell a limit (it is answered) from
            # silence (it is not): round 1 is the measurement.
            p.measure_at = 1 if slow and not loop else None
            p.mute = est is None and not loop
        elif p.measure_at is None:
            if rnd == 1 and p.mute and slow:
                # Round 0 drew no error at all, round 1 a few: the target's bucket was
                # empty from the start (another scan drained it). Measure now.
                p.measure_at = 2
        elif est is not None and rnd >= p.measure_at:
            # CONFIRMED: retransmissions spread over PROBE_S were answered. Pace the next
            # rounds at the limit (a paced round can only show it is higher), and start
            # each with a token in the target's bucket. The pause uses a low estimate
            # (arrivals beyond one burst, over the whole round): a pause too short would
            # let a round find the bucket empty and stop with closed ports still silent.
            self.limit = max(self.limit or 0.0, est[0])
            p.low = max(p.low, est[1])
            self._learn_hosts(rx, p.marks, est)
            p.plan, pause = self._host_plan(p.low, rx)
            paced = p.plan.base
            if self._pacer is not None:  # where the last paced round got to: its
                last = self._pacer  # speed-up for firewalls, not its hosts' limits
                last.plan.update()
                paced = max(paced, min(last.limiter.rate,
                                       paced * last.limiter.rate / last.plan.base))
            p.rate = paced if not isinstance(self.rate, float) else min(self.rate, paced)
            return min(pause, MAX_PAUSE)
        return 0.0

    def _close(self) -> None:
        rx, capture, senders = self._rx, self._capture, self._senders
        assert rx is not None and capture is not None
        rx.join()
        packets, drops = capture.stats()
        capture.close()
        for s in senders.values():
            s.close()
        self.stats = {**rx.stats, "capture_packets": packets, "capture_drops": drops,
                      "round0_sent": self.total, "rounds": len(self.round_log),
                      "icmp_limit_pps": self.limit or 0.0,
                      "send_errors": sum(sum(s.errors.values()) for s in senders.values())}

    def _learn_hosts(self, rx: UdpReceiver, marks: int, est: tuple[float, float]) -> None:
        """Each host's own ICMP limit (steady, low): the most a round has shown."""
        if self.hosts.size > MAX_PACED_HOSTS:
            return
        for h, (steady, low) in host_rates(rx.icmp_hosts[marks:], est).items():
            old = self.host_limits.get(h, (0.0, 0.0))
            self.host_limits[h] = (max(old[0], steady), max(old[1], low))

    def _host_plan(self, low: float, rx: UdpReceiver) -> tuple[HostPlan, float]:
        """The next paced round's plan (HostPlan) and the pause before it: 1.5 token
        intervals of the slowest measured host that still has silent probes."""
        assert self.limit is not None
        whole = HostPlan(PACE * self.limit, self.limit)
        n = self.hosts.size
        if not self.host_limits or n > MAX_PACED_HOSTS:
            return whole, 1.5 / low
        left = np.zeros(n, np.int64)
        for js in iter_batches(self.space, self.perm, shard=self.shard, start=self.start,
                               batch=1 << 16):
            silent = js[self.answered.unanswered(js)]
            if len(silent):
                left += np.bincount(split_index(silent, n)[0].astype(np.int64), minlength=n)
        lim, lows = np.zeros(n), np.zeros(n)
        for h, (steady, lo) in self.host_limits.items():
            lim[h], lows[h] = steady, lo
        known = (left > 0) & (lim > 0)
        if not known.any():
            return whole, 1.5 / low
        plan = HostPlan(PACE * self.limit, self.limit, lim, left, rx)
        return plan, 1.5 / max(1e-3, float(np.min(lows[known])))

    # -- transmit ----------------------------------------------------------------------------
    def rate_state(self) -> RateState:
        """The rate in force and why (paced rounds follow the target's ICMP limit)."""
        lim = self.limiter
        if lim is None:
            if self.rate is None:
                return RateState(None, "unlimited")
            start = self.rate.initial if isinstance(self.rate, RatePolicy) else self.rate
            return RateState(start, "")  # not sending yet
        if isinstance(lim, AdaptiveRate):
            return lim.state()
        if self.limit is not None:
            return RateState(lim.rate, "icmp-paced")
        # A round spread out to measure the target's ICMP limit, or the user's rate.
        return RateState(lim.rate, "measuring" if isinstance(self.rate, RatePolicy) else "pinned")

    def _round(self, rnd: int, senders: dict[tuple[int, int], RawSender],
               limiter: AdaptiveRate | TokenBucket | None) -> int:
        try:
            return self._transmit(rnd, senders, limiter)
        except BaseException as exc:
            self._error = self._error or exc
            self.cancel.set()
            return 0

    def _transmit(self, rnd: int, senders: dict[tuple[int, int], RawSender],
                  limiter: AdaptiveRate | TokenBucket | None) -> int:
        n_hosts, n4 = self.hosts.size, self.hosts.n4
        total = 0
        for js, h, ports in self.round_batches(rnd):
            fam_of = np.where(h < np.uint64(n4), 4, 6) if 0 < n4 < n_hosts else None
            groups = self.group_of[ports.astype(np.int64)]
            for (fam, g), sender in senders.items():
                m = groups == g
                if fam_of is not None:
                    m &= fam_of == fam
                elif (4 if n4 else 6) != fam:
                    continue
                if not m.all():
                    if not m.any():
                        continue
                    pjs, ph, pports = js[m], h[m], ports[m]
                else:
                    pjs, ph, pports = js, h, ports
                for at in range(0, len(pjs), sender.capacity):
                    sl = slice(at, at + sender.capacity)
                    self._load(sender, g, ph[sl], pports[sl])
                    total += self.send_runs(sender, pjs[sl], rnd, limiter)
        return total

    def _load(self, sender: RawSender, g: int, h: np.ndarray, ports: np.ndarray) -> None:
        uh, inv = np.unique(h, return_inverse=True)
        infos = [self.hosts.info(int(x)) for x in uh.tolist()]
        fam = sender.family
        key = np.array([i.key for i in infos], np.uint64)[inv]
        abase = np.array([i.base for i in infos], np.uint64)[inv]
        dst = [int.from_bytes(i.dst, "big") for i in infos]
        src = [int.from_bytes(i.src, "big") for i in infos]
        m64 = (1 << 64) - 1
        hi = np.array([d >> 64 if fam == 6 else d for d in dst], np.uint64)[inv]
        lo = np.array([d & m64 for d in dst], np.uint64)[inv]
        shi = np.array([s >> 64 if fam == 6 else s for s in src], np.uint64)[inv]
        slo = np.array([s & m64 for s in src], np.uint64)[inv]
        probe = UDP.make(fam, key, abase + np.uint64(self.group_base[g]), ports)
        sender.load(len(h), hi, ports, probe["seq"], probe["csum"], dst_lo=lo, src=shi,
                    src_lo=slo)
