"""TCP SYN scanning: stateless transmit and receive over raw sockets, IPv4 and IPv6.

masscan's shape: transmit threads walk the shuffled index space and send; one receive
thread (engine.synrx) parses, checks the cookie, dedups and reports. They share only the
answered bitmap (written by the receiver, read by the transmitters when they resend).

TRANSMIT. For a batch of up to 4096 indices numpy computes ports, and the probe module
(probes.tcpsyn.SYN: ``prepare`` the template once, ``make`` each batch's cookies,
checksums and IPv4 ids) the per-probe fields, written into preallocated packet slots
(net.rawsock); sendmmsg then sends them in runs of at most 256, each run granted by the
rate limiter (net.throttle). No Python code runs per probe on this side.

WHY TWO TRANSMIT THREADS (no rate, or one above ``TWO_THREADS_PPS``). On loopback the
kernel runs the target's TCP stack inside our send call, about 6 µs a probe, with the GIL
released: two threads spread that kernel work over two cores. Measured: a 65,535-port
loopback scan took 0.38 s with one thread and 0.21 s with two (receive thread included).

ROUNDS (engine.rounds, shared with UDP). Round 0 sends every index of the shard; round
r > 0 resends only indices still unanswered, up to ``retries`` rounds. After each round
the loop waits for the RTT-estimated quiet period (srtt + 4·rttvar, clamped to the timing
template), or less if every index has answered. SYN's hook: nmap's retry rule
(``after_round``). Indices silent after the last round are filtered/no-response.

SOURCE PORT. One random port per scan (masscan's choice), reserved with a bound,
non-listening TCP socket so no local connection can be given it. Our kernel answers the
targets' SYN-ACKs with RST, as it does for nmap's probes; the receiver reads the
SYN-ACK before that and the RST is what closes the half-open connection on the target.
"""

from __future__ import annotations

import os
import secrets
import threading
import time

import numpy as np

from ..net.capture import Capture
from ..net.counters import Counters, RttEstimator
from ..net.ratectl import AdaptiveRate, PinnedRate, RatePolicy, RateState
from ..net.rawsock import RawSender
from ..net.synstate import Answered, HostTable, PortIndex, reserve_port
from ..probes.cookie import CookieKey
from ..probes.records import DTYPE as RECORD_DTYPE
from ..probes.tcpsyn import SYN
from ..probes.verdicts import CLOSED, NO_RESPONSE, OPEN
from ..probes.verdicts import syn_verdict as verdict
from ..targets import Permutation, PortSet, TargetSet, TargetSpace, shard_len
from ..targets.space import sub_shard_start, sub_shards
from .rounds import RUN, RoundResult, RoundScan
from .synrx import Out, Receiver

__all__ = ["CLOSED", "NO_RESPONSE", "OPEN", "SynEngine", "verdict"]

Limiter = AdaptiveRate | PinnedRate

BATCH = 4096  # indices per numpy batch
TWO_THREADS_PPS = 100_000  # one transmit thread sends about 170k pps on loopback
BIG_SCAN = 1 << 20  # probes from which the capture's blocks are retired later:
RETIRE_BIG_MS = 6  # (see _open)
BIG_BLOCK = 1 << 19  # bytes a capture block, for the same big scans (see _open)
SILENT_PROOF = 16  # a silent retry round this big ends the retries (see after_round)
RETRY_SPACING = 0.55  # s from a retry round's last probe to the next round (see after_round)

class SynEngine(RoundScan):
    """One SYN scan of ``targets`` × ``ports`` (shard ``shard`` of the permuted space)."""

    def __init__(self, *, targets: TargetSet, ports: PortSet, out: Out, seed: int,
                 shard: tuple[int, int] = (1, 1), start: int = 0,
                 rate: float | RatePolicy | None = None,
                 retries: int = 1, rtt: RttEstimator, counters: Counters | None = None,
                 cancel: threading.Event | None = None, source_port: int | None = None,
                 secret: bytes | None = None, threads: int | None = None) -> None:
        self.targets, self.ports, self.out = targets, ports, out
        self.space = TargetSpace(targets, ports)
        self.perm = Permutation(self.space.size, seed)
        self.shard = shard
        self.start = start  # positions of the shard already done (a resumed scan)
        self.secret = secrets.token_bytes(16) if secret is None else secret
        # Chosen (and held) now, so a checkpoint can record it before the first probe.
        self.source_port, self._held = reserve_port(source_port)
        self.rate = rate  # pinned (probes/s), adaptive (a policy) or None: no limit
        self.limiter: Limiter | None = None
        self.retries = retries
        self.rtt = rtt
        self.counters = counters if counters is not None else Counters()
        self.cancel = cancel if cancel is not None else threading.Event()
        top = rate.ceiling if isinstance(rate, RatePolicy) else rate
        fast = top is None or top > TWO_THREADS_PPS
        self.threads = threads or (2 if fast and (os.cpu_count() or 1) > 1 else 1)
        self.port_index = PortIndex(ports)
        self.total = shard_len(self.space.size, shard, start)
        self.stats: dict[str, float] = {}
        self.sport = self.source_port
        self.families = {4, 6} & {fam for fam, _, _ in targets.ranges}
        self.templates = {fam: SYN.prepare(fam, bytes(4 if fam == 4 else 16), self.sport)
                          for fam in self.families}
        self.hosts = HostTable(targets, CookieKey(self.secret), self.sport, self.templates)
        self.answered = Answered(self.space.size)
        self.t_base = time.time()  # send times are float32 seconds after this
        self._capture: Capture | None = None
        self._rx: Receiver | None = None
        self._lock = threading.Lock()
        self._first_send = self._last_send = self._round0_end = 0.0
        self._rounds_run = 0
        self._senders: list[dict[int, RawSender]] = []
        self._silent_before = False
        self._error: BaseException | None = None

    # -- the rounds (engine.rounds runs them) ------------------------------------------------
    def rate_state(self) -> RateState:
        """The rate in force and why (telemetry reads it while the scan runs)."""
        limiter = self.limiter
        if limiter is not None:
            return limiter.state()
        if self.rate is None:
            return RateState(None, "unlimited")
        start = self.rate.initial if isinstance(self.rate, RatePolicy) else self.rate
        return RateState(start, "")  # not sending yet

    def _make_limiter(self) -> Limiter | None:
        if self.rate is None:
            return None
        if not isinstance(self.rate, RatePolicy):
            return PinnedRate(self.rate, max_batch=RUN)
        return AdaptiveRate.for_rtt(self.rate, self.rtt, max_batch=RUN)

    def _open(self) -> Receiver:
        families, templates = self.families, self.templates
        ifname = self.capture_interface()
        # BLOCK RETIRE: the kernel hands a ring block over when it is full or after
        # retire_ms. A big scan's replies come steadily, so a longer timeout fills blocks
        # rather than cutting them (/18 at ~230k replies/s: 464 replies a block at 2 ms,
        # 786 at 6 ms) and the receiver's per-block numpy and Python are paid less often:
        # 5.62 -> 5.27 us of CPU a probe (medians of 3). A reply's time is the kernel's
        # stamp, so RTTs do not change; a small scan keeps 2 ms (its last replies, and
        # the end of its rounds, would wait for the timeout).
        #
        # BLOCK SIZE: a full 128 KiB block held ~750 replies, so at ~400k replies/s the
        # blocks filled before the timeout (~435 us of receive thread a block, much of it
        # per call, not per reply) every ~2 ms. 512 KiB blocks (4 MiB of ring, 3 more)
        # fill for the 6 ms: receive thread 0.68 -> 0.43 us of CPU a probe; /17 x top
        # 100, CPU a probe 5.7 -> 5.3 us (2 interleaved pairs).
        big = {"retire_ms": RETIRE_BIG_MS, "block_size": BIG_BLOCK} \
            if self.total >= BIG_SCAN else {}
        capture = self._capture = Capture(families, self.sport, self.sport, ifname=ifname,
                                          **big)
        senders: list[dict[int, RawSender]] = []
        try:
            for _ in range(self.threads):
                senders.append({fam: RawSender(fam, templates[fam], BATCH) for fam in families})
        except BaseException:
            capture.close()
            for group in senders:
                for sender in group.values():
                    sender.close()
            raise
        self._senders = senders
        limiter = self.limiter = self._make_limiter()
        on_replies = None
        # Send times are time.time() - t_base; the limiters' clock is monotonic.
        offset = self.clock_offset = time.monotonic() - (time.time() - self.t_base)
        if isinstance(limiter, AdaptiveRate):
            ctl = limiter
            on_replies = lambda st: ctl.replied(st.astype(np.float64) + offset)  # noqa: E731
        rx = Receiver(capture=capture, hosts=self.hosts, ports=self.port_index,
                      answered=self.answered, sport=self.sport, out=self.out, rtt=self.rtt,
                      total=self.total, t_base=self.t_base, record_dtype=RECORD_DTYPE,
                      on_replies=on_replies)
        if isinstance(limiter, AdaptiveRate):
            limiter.horizon = lambda: rx.caught_up
        self._rx = rx
        rx.start()
        self._silent_before = False
        return rx

    def round_limiter(self, rnd: int) -> Limiter | None:
        if rnd and self.limiter is not None:
            self.limiter.new_round()
        return self.limiter

    def send_round(self, rnd: int, limiter: Limiter | None) -> None:
        self._round(rnd, self._senders, limiter)
        if rnd == 0:
            self._round0_end = self._last_send

    def after_round(self, rnd: int, result: RoundResult) -> float | None:
        # nmap's rule (allowedTryno): retransmit again only while retransmissions get
        # answered. Ports that stayed silent through a retry round are filtered, not
        # lost; a T3 scan of dropping hosts does not wait 10 rounds. A round of a few
        # probes proves little, though: on a path losing 10% a try, three last probes all
        # fail once in a thousand rounds, and 5% loss each way cost 1-4 of 1,024 open
        # ports that way (nmap the same). A silent round of SILENT_PROOF probes ends the
        # retries; a smaller one only when the round before it was silent too (one round
        # more for a few filtered ports, ~0.1-0.2 s).
        silent = rnd >= 1 and result.new == 0
        if silent and (result.sent >= SILENT_PROOF or self._silent_before):
            return None
        self._silent_before = silent
        # A port whose SYN-ACK was lost is half-open on the target, which answers a repeated
        # SYN at most once per tcp_invalid_ratelimit (Linux: 500 ms): from the second retry
        # on, a port's probes are RETRY_SPACING apart, or they go unanswered.
        return RETRY_SPACING if rnd >= 1 else 0.0

    def _close(self) -> None:
        rx, capture, senders, limiter = self._rx, self._capture, self._senders, self.limiter
        assert rx is not None and capture is not None
        rx.join()
        packets, drops = capture.stats()
        capture.close()
        for group in senders:
            for s in group.values():
                s.close()
        self.stats = {**rx.stats, "capture_packets": packets, "capture_drops": drops,
                      "round0_sent": self.total, "threads": self.threads,
                      "rounds": self._rounds_run,
                      "rate_final": limiter.rate if limiter is not None else 0.0,
                      "rate_losses": limiter.losses if limiter is not None else 0,
                      "round0_send_s": self._round0_end - self._first_send,
                      "send_errors": sum(sum(s.errors.values())
                                         for g in senders for s in g.values())}

    def _round(self, rnd: int, senders: list[dict[int, RawSender]],
               limiter: Limiter | None) -> None:
        self._rounds_run = rnd + 1
        t = len(senders)
        # Thread w takes positions w, w + t, ... of the shard: together they partition it;
        # a resumed scan skips the first ``start`` positions, split the same way.
        subs = [(sub, sub_shard_start(self.start, w, t))
                for w, sub in enumerate(sub_shards(self.shard, t))]
        workers = [threading.Thread(target=self._transmit_guarded,
                                    args=(*subs[w], rnd, senders[w], limiter),
                                    name=f"prtip-syn-tx{w}", daemon=True)
                   for w in range(1, t)]
        for w in workers:
            w.start()
        self._transmit_guarded(*subs[0], rnd, senders[0], limiter)
        for w in workers:
            w.join()

    def _transmit_guarded(self, shard: tuple[int, int], start: int, rnd: int,
                          senders: dict[int, RawSender], limiter: Limiter | None) -> None:
        try:
            self._transmit(shard, start, rnd, senders, limiter)
        except BaseException as exc:  # stop the other threads; run() re-raises it
            self._error = self._error or exc
            self.cancel.set()

    # -- transmit --------------------------------------------------------------------------
    def _transmit(self, shard: tuple[int, int], start: int, rnd: int,
                  senders: dict[int, RawSender], limiter: Limiter | None) -> None:
        n_hosts, n4 = self.hosts.size, self.hosts.n4
        for js, h, ports in self.round_batches(rnd, shard, start):
            if 0 < n4 < n_hosts:  # both families in this scan: one pass for each
                v4 = h < np.uint64(n4)
                parts = [(4, js[v4], h[v4], ports[v4]), (6, js[~v4], h[~v4], ports[~v4])]
            else:
                parts = [(4 if n4 else 6, js, h, ports)]
            for fam, pjs, ph, pports in parts:
                if len(pjs):
                    self._load(senders[fam], pjs, ph, pports)
                    self.send_runs(senders[fam], pjs, rnd, limiter)

    def _load(self, sender: RawSender, js: np.ndarray, h: np.ndarray, ports: np.ndarray) -> None:
        # HOST CONSTANTS: read from HostTable's per-host arrays (computed once a host).
        key, base, shi, slo = self.hosts.constants(h)
        hi, lo = self.hosts.destinations(h)
        if sender.family == 4:  # an IPv4 address is all in the low half
            hi, shi = lo, slo
        # The probe module's per-probe fields (cookie, checksum, IPv4 id). Its dict costs
        # nothing measurable: 42 us a 4096-probe batch either way, as the direct calls.
        probe = SYN.make(sender.family, key, base, ports)
        sender.load(len(js), hi, ports, probe["seq"], probe["csum"], dst_lo=lo, src=shi,
                    src_lo=slo, ident=probe.get("ident"))
