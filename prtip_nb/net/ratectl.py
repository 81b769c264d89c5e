"""The adaptive rate: how fast a scan sends when the user did not pin ``--rate``.

nmap's timing templates do not fix a rate; its congestion control grows the number of probes
in flight while replies keep up and shrinks it on loss. A stateless scanner has no list of
probes in flight, so this controller works on rates and on one observation that the
shuffled index space makes true:

ANSWER-RATIO LOGIC. The permutation spreads every host and port evenly over the scan, so the
fraction of probes that draw a reply (SYN-ACK, RST, ICMP error, ...) is the same in every
stretch of it, whatever that fraction is. Sends are counted in short *epochs* of send time,
and every reply is charged to the epoch its probe was sent in (the engines know each
probe's send time: it gives the reply's RTT). Once an epoch is older than the RTT timeout
its fraction is final: no lag to guess, no batch edges, exact counts. While the path
carries everything the fraction holds steady; when the rate passes what the path carries,
the excess is lost and the fraction falls. A fall beyond ``tolerance`` that is also
statistically significant (z > 3 against the reference fraction) is *loss*; random loss
below the tolerance (a lossy link, netem) is not congestion and does not slow the scan.

- **Growing** (slow start): while no loss has been seen, each window with enough evidence
  multiplies the rate by ``growth`` (the template's eagerness).
- **Backing off**: on loss the rate becomes ``min(rate · backoff, delivered · margin)``,
  where *delivered* is what the path carried in that window (replies / reference fraction).
  Snapping to the delivered rate settles near a bottleneck's capacity in one step; the
  multiplicative bound still falls when the reference itself was measured under loss.
- **Late is not lost**: a window that fails the loss test is judged again with the epochs
  sent after it (a batch stamped after its grant counts its replies there), and a cut's
  window keeps taking replies for ``UNDO_KEEP``: if late replies clear it, the cut is
  undone (see ``_Cut``).
- **Probing**: after the first loss the rate creeps up by ``probe`` a window, so a path
  that frees up is found again, and a bottleneck is re-found without a deep sawtooth.
- A window needs ``min_replies`` expected replies (up to ``max_window`` seconds) before it
  decides anything; with too few replies (a silent network) the rate stays where it is.
- It grows only while the senders use the rate they have (at least 80% of it): a sender
  bound by its own CPU must not build up a rate the path never saw.

``AdaptiveRate`` is the token bucket the transmit loops already take batches from, plus that
control: the receive side calls ``replied(send_times)`` for each block of replies, and
evaluations happen inside ``take`` (no thread of its own).
``new_round()`` starts a round: a retry round (only the probes that were silent: not a
uniform sample, see there) holds the rate round 0 found; a fresh sample (discovery's next
window of hosts) measures its reference again.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .throttle import TokenBucket

if TYPE_CHECKING:
    from ..config import ScanConfig
    from .counters import RttEstimator

__all__ = [
    "POLICIES", "START_RATES", "AdaptiveRate", "PinnedRate", "RatePolicy", "RateState",
    "connect_rate", "policy_for", "rate_plan",
]

MAX_EPOCHS = 20_000  # epochs kept waiting for their replies (40 s of send time)
UNDO_KEEP = 0.5  # seconds a backoff's window still takes late replies (see _Cut)
MAX_CUTS = 64  # backoffs under review at once (a longer run of cuts: the oldest is confirmed)
GRACE = 0.006  # seconds: at least the capture ring's block timeout (2 ms) and a scheduling slice
SLOW_START_STEPS = 3.0  # at most growth ** this per window in slow start (see _healthy)


@dataclass(frozen=True)
class RatePolicy:
    """How eagerly one timing template grows the rate and how hard it backs off."""

    initial: float  # probes/s before any reply has been seen
    growth: float  # factor per window while no loss has been seen
    probe: float  # factor per window after the first loss
    backoff: float  # at most this factor of the rate after a loss
    margin: float  # ... and at most this factor of the rate the path delivered
    tolerance: float = 0.1  # relative fall of the answer fraction that counts as loss
    floor: float = 50.0  # never below (probes/s)
    ceiling: float = 1_000_000.0  # never above
    window0: float = 10.0  # probes in flight that the first RTT sample lets us assume
    min_replies: int = 64  # expected replies a window needs before it decides
    min_window: float = 0.004  # seconds between looks at a window
    max_window: float = 1.0


#: nmap's templates differ mostly in timeouts; here they also set the pace of the ramp.
#: T3 starts at the old fixed T3 rate and doubles-ish per window; T5 starts high and
#: doubles. Backing off: T3 falls the most, T5 the least.
POLICIES: dict[str, RatePolicy] = {
    "normal": RatePolicy(initial=1000.0, growth=1.6, probe=1.03, backoff=0.6, margin=0.85,
                         window0=10),
    "aggressive": RatePolicy(initial=2000.0, growth=2.0, probe=1.05, backoff=0.7, margin=0.9,
                             window0=20),
    "insane": RatePolicy(initial=4000.0, growth=2.0, probe=1.08, backoff=0.75, margin=0.92,
                         window0=40),
}


def policy_for(template: str, *, min_rate: float | None = None,
               max_rate: float | None = None, initial: float | None = None,
               floor: float | None = None) -> RatePolicy:
    """The template's policy, bounded by ``--min-rate`` / ``--max-rate``."""
    base = POLICIES.get(template, POLICIES["normal"])
    lo = base.floor if floor is None else floor
    hi = base.ceiling
    if min_rate is not None:
        lo = max(lo, min_rate)
    if max_rate is not None:
        hi = min(hi, max_rate)
        lo = min(lo, hi)
    start = base.initial if initial is None else initial
    return _replace(base, floor=lo, ceiling=hi, initial=min(hi, max(lo, start)))


#: Where UDP and discovery start, and their floor: the fixed rates they had before the rate
#: adapted. A UDP probe's usual reply is an ICMP error that the target rate-limits (the UDP
#: engine paces its retries by that limit), and discovery's replies come per host, not per
#: probe; for both a falling answer fraction says less about the path, so the controller
#: may only raise them.
START_RATES: dict[str, dict[str, float]] = {
    "udp": {"normal": 5000.0, "aggressive": 10000.0, "insane": 20000.0},
    "discovery": {"normal": 5000.0, "aggressive": 10000.0, "insane": 20000.0},
}


def rate_plan(cfg: ScanConfig, *, loopback: bool, kind: str = "syn"
              ) -> float | RatePolicy | None:
    """The scan's rate: a pinned rate (probes/s), an adaptive policy, or None (no limit).

    ``--rate`` pins it; T0-T2 pin one probe per scan delay; loopback has no path to adapt
    to (the kernel answers inside our send call), so it is unlimited unless ``--max-rate``
    caps it; everything else adapts, within ``--min-rate`` / ``--max-rate``.
    """
    if cfg.rate is not None:
        return cfg.rate
    tmpl = cfg.template
    if tmpl.scan_delay > 0:
        return 1.0 / tmpl.scan_delay
    if loopback:
        return cfg.max_rate
    start = START_RATES.get(kind, {}).get(tmpl.name)
    return policy_for(tmpl.name, min_rate=cfg.min_rate, max_rate=cfg.max_rate,
                      initial=start, floor=start)


def connect_rate(cfg: ScanConfig) -> RateState:
    """A connect scan's pace: ``--rate`` pins it, ``--max-rate`` caps it; otherwise its
    window of connects in flight (the template's parallelism, within the fd budget) is the
    congestion control, as nmap's is: a completion frees a slot, a timeout holds it for the
    RTT timeout, so the pace follows what the path answers without a rate."""
    if cfg.rate is not None:
        return RateState(cfg.rate, "pinned")
    if cfg.max_rate is not None:
        return RateState(cfg.max_rate, "ceiling")
    return RateState(None, "window")


def _replace(p: RatePolicy, **kw: float) -> RatePolicy:
    import dataclasses

    return dataclasses.replace(p, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RateState:
    """What telemetry shows: the rate in force and why."""

    rate: float | None  # probes/s; None = no limit
    reason: str  # growing, probing, backoff, floor, ceiling, holding (adaptive); pinned, ...


def _deficit_z(sent: int, got: int, ref: float) -> float:
    """How significant a window's missing replies are against the reference fraction.

    The variance is the binomial one, floored as if at most 90% answered: the reference is
    itself an estimate, and near 100% the binomial alone would call a deficit of two
    replies significant."""
    expected = ref * sent
    return (expected - got) / math.sqrt(max(expected * max(1.0 - ref, 0.1), 1.0))


@dataclass
class _Cut:
    """A backoff under review: LATE IS NOT LOST (Linux TCP's undo, the Eifel idea).

    A window is judged a fixed time after its sends; under CPU load the responder, the
    kernel's receive path or the capture's block retire can hold replies past that, and the
    window looks like loss although nothing was lost (measured: most -T4 scans of a /24
    backed off on a busy box with every probe answered). So the judged window's epochs keep
    taking replies for ``UNDO_KEEP`` seconds; if those that come late lift it out of the
    loss test, the cut is undone (the rate and the slow-start state as before it). Real
    loss never gets its replies: the cut stands."""

    first: int  # the window's epochs, first ...
    last: int  # ... to last (inclusive)
    sent: int
    got: int
    ref: float  # the reference fraction the window was judged against
    rate: float  # the state before the cut
    ssthresh: float
    at: float  # when it was cut (``clock``)


class PinnedRate(TokenBucket):
    """A fixed rate (``--rate``, or a T0-T2 scan delay) with the controller's interface."""

    losses = 0
    undone = 0

    def state(self) -> RateState:
        return RateState(self.rate, "pinned")

    def new_round(self, *, retry: bool = True) -> None:
        pass

    def replied(self, send_times: Any) -> None:
        pass


class AdaptiveRate:
    """``take(want, cancel)`` as TokenBucket, with the rate set by the answer ratio.

    ``clock`` must be the clock of the send times given to ``replied``; ``timeout()`` is how
    long after a send its reply may still come (srtt + 4·rttvar, or None before any RTT
    sample)."""

    EPOCH = 0.002  # seconds of send time per epoch

    def __init__(self, policy: RatePolicy, *, timeout: Callable[[], float | None],
                 srtt: Callable[[], float | None] = lambda: None, max_batch: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.timeout = timeout
        self.srtt = srtt
        self.clock = clock
        #: The receive side's progress (``clock`` seconds): replies that arrived before it
        #: have been charged. A receiver that falls behind must not look like loss.
        self.horizon: Callable[[], float] | None = None
        # Batches of 1 ms of the rate, not 5: finer grants keep the sends of a window
        # even, and windows short.
        self.bucket = TokenBucket(policy.initial, max_batch=max_batch, batch_seconds=0.001,
                                  clock=clock)
        # nmap's first ``window0`` probes leave at once (its initial congestion window,
        # ``group_initial_cwnd``), not at the start rate: they bring the replies the first
        # window is judged on sooner. Measured on a RangeLab /24 x 100 ports: the first
        # jump of the rate came at 18-27 ms (T3), 11-29 ms (T4), 8-10 ms (T5) after the
        # first probe, most of it the start rate's pace over the first window's replies.
        # At most the bucket's cap (50 ms of the rate): --max-rate still bounds the burst.
        self.bucket.tokens = min(self.bucket.cap, float(policy.window0))
        self.lock = threading.Lock()
        self.reason = "growing"
        self.lossy = False  # a loss has been seen: probe instead of grow
        self.ssthresh = 0.0  # after a loss, grow as in slow start below this rate
        self.holding = False  # a retry round: the rate stays as round 0 left it
        self.ref: float | None = None  # the reference answer fraction of this round
        self.losses = 0  # backoffs that stand (undone ones are taken off again)
        self.undone = 0  # backoffs undone: their "missing" replies came late
        self.log: list[tuple[float, float, str]] = []  # (t, rate, reason) at each change
        self._confirmed = False  # a backoff outlived its review: the path did lose probes
        self._cuts: list[_Cut] = []  # backoffs under review, oldest first
        self._late: dict[int, _Cut] = {}  # epoch of a cut's window -> that cut
        self._epochs: dict[int, list[int]] = {}  # epoch -> [sent, replied], not yet final
        self._next_epoch = int(clock() / self.EPOCH)  # the oldest epoch not yet final
        self._from = self._next_epoch  # epochs before this do not count (after a change)
        self._win = [0, 0, 0]  # sent, replied, epochs of the window being gathered
        self._win_start = self._next_epoch

    @classmethod
    def for_rtt(cls, policy: RatePolicy, rtt: RttEstimator, *, max_batch: int = 256
                ) -> AdaptiveRate:
        """The controller every scan kind uses: fed by ``rtt``'s srtt, and its replies due
        within srtt + 4·rttvar (unclamped: the template's bounds are for retries)."""
        return cls(policy, max_batch=max_batch, srtt=lambda: rtt.srtt,
                   timeout=lambda: None if rtt.srtt is None else rtt.srtt + 4 * rtt.rttvar)

    # -- the engines' interface -----------------------------------------------------------
    @property
    def rate(self) -> float:
        return self.bucket.rate

    def state(self) -> RateState:
        return RateState(self.bucket.rate, self.reason)

    def take(self, want: int, cancel: threading.Event) -> int:
        return self.take_at(want, cancel)[0]

    def take_at(self, want: int, cancel: threading.Event) -> tuple[int, float]:
        """``take``, and the grant's time (``clock``): the probes are charged to its epoch,
        so the engine stamps them with it (engine.rounds.send_runs) and their replies
        come back to that epoch. A stamp read after ``take`` returned could land in a
        later epoch under GIL contention: one epoch short of its replies (a false loss),
        the next one over-answered."""
        got, granted = self.bucket.take_at(want, cancel)
        if got:
            with self.lock:
                e = int(granted / self.EPOCH)
                cell = self._epochs.get(e)
                if cell is None:
                    self._epochs[e] = [got, 0]
                else:
                    cell[0] += got
                self._settle(self.clock())
        return got, granted

    def replied(self, send_times: Any) -> None:
        """Charge replies to the epochs their probes were sent in (``clock`` seconds)."""
        import numpy as np

        t = np.asarray(send_times, dtype=np.float64)
        if not t.size:
            return
        es, counts = np.unique((t / self.EPOCH).astype(np.int64), return_counts=True)
        with self.lock:
            late: set[int] = set()
            for e, n in zip(es.tolist(), counts.tolist(), strict=True):
                cell = self._epochs.get(e)
                if cell is not None:
                    cell[1] += n
                    continue
                cut = self._late.get(e)  # a backed-off window's reply, late
                if cut is not None:
                    cut.got += n
                    late.add(id(cut))
                # any other epoch already final takes no late replies
            if late:
                self._review(self.clock(), late)

    def new_round(self, *, retry: bool = True) -> None:
        """A new round begins. ``retry``: it resends silent probes, and holds the rate.

        A retry round's probes are not a uniform sample: those lost to a first overshoot
        sit early in the order, the dropping hosts' everywhere, so its answer fraction
        falls as it goes, with nothing lost (measured: a T4 retry round on a 20k/s link with
        8 dropping hosts fell to the floor and took 90 s). Round 0 found the path's rate;
        a retry round keeps it. ``retry=False`` (discovery's next window of hosts) is a
        fresh uniform sample: the reference is measured again and control goes on."""
        with self.lock:
            self.ref = None
            self.holding = retry
            if retry:
                self.reason = "holding"
            self._restart(self.clock())
            # Cuts under review stay so: a retry round starts after round 0's replies had
            # their time, and an undo then restores the rate round 0 should have ended at.

    # -- control -------------------------------------------------------------------------
    def _settle(self, now: float) -> None:
        """Move the epochs that are final into the window, and judge it when it is full."""
        timeout = self.timeout()
        if timeout is None:  # no reply yet: nothing can be judged
            if len(self._epochs) > MAX_EPOCHS:  # a silent scan: keep no history of it
                self._forget(now)
            return
        # A reply is read a little after it arrives (the capture ring hands over a block
        # every few ms): an epoch is final a margin after the RTT timeout, so that a
        # reply is not taken for a loss for being read late.
        seen = now if self.horizon is None else min(now, self.horizon())
        last_final = int((seen - timeout - max(timeout, GRACE)) / self.EPOCH)
        p, win = self.policy, self._win
        while self._next_epoch < last_final:
            e = self._next_epoch
            self._next_epoch += 1
            cell = self._epochs.pop(e, None)
            if cell is None or e < self._from:
                continue
            win[0] += cell[0]
            win[1] += cell[1]
            win[2] = e - self._win_start + 1
            span = win[2] * self.EPOCH
            expected = win[1] if self.ref is None else self.ref * win[0]
            # Enough to decide: min_replies; at low rates a tenth of a second's worth (a
            # rate far below the path's must be able to climb back quickly); and for the
            # first reference, a third of it (it only sets where the ramp starts).
            enough = (expected >= p.min_replies or (span >= 0.1 and expected >= 16)
                      or (self.ref is None and not self.lossy and expected >= p.min_replies / 3))
            if (enough and span >= p.min_window) or span >= p.max_window:
                self._judge(now, win[0], win[1], span, enough, (self._win_start, e))
                self._win = win = [0, 0, 0]
                self._win_start = max(self._next_epoch, self._from)
        if len(self._epochs) > MAX_EPOCHS:  # an RTT timeout of minutes: bounded all the same
            self._forget(now)
        if self._cuts and (now - self._cuts[0].at > UNDO_KEEP or len(self._cuts) > MAX_CUTS):
            self._review(now, set())

    def _forget(self, now: float) -> None:
        self._epochs.clear()
        self._next_epoch = int(now / self.EPOCH)
        self._restart(now)

    def _judge(self, now: float, sent: int, got: int, span: float, enough: bool,
               epochs: tuple[int, int] = (0, -1)) -> None:
        p = self.policy
        if sent <= 0 or not enough or self.holding:
            return  # too few replies to tell (a silent network): keep the rate
        ratio = got / sent
        ref = self.ref
        if ref is None:  # the round's first decision: this fraction is the reference
            self.ref = min(1.0, ratio)
            self._healthy(now, sent / span, first=True, span=span)
            return
        z = _deficit_z(sent, got, ref)
        if self._lost(sent, got, ref) and self._lost(*self._after(epochs[1], now, sent, got),
                                                     ref):
            delivered = got / ref / span  # what the path carried of what we sent
            rate = self.bucket.rate
            self._cut(_Cut(epochs[0], epochs[1], sent, got, ref, rate, self.ssthresh, now), now)
            self.lossy = True
            self.losses += 1
            # At most a quarter per window: one window's collapse is more often a stall
            # than a path that lost everything at once (if it did, the next cuts follow).
            new = max(rate / 4, min(rate * p.backoff, delivered * p.margin))
            # Slow start again below the threshold (TCP's ssthresh): after a cut deeper
            # than the path's estimate, climb back quickly; probe gently from there on.
            self.ssthresh = min(rate * p.backoff, delivered * p.margin)
            self._set(new, "backoff", now)
        elif z < -3.0:
            # Clearly more answers than the reference: it was measured while the path
            # was already losing probes. Move towards the better fraction.
            self.ref = min(1.0, 0.5 * ref + 0.5 * ratio)
        elif z < 1.0 or ratio >= ref * (1.0 - p.tolerance / 2):
            self.ref = 0.75 * ref + 0.25 * ratio  # unbiased: a max would chase the noise
            self._healthy(now, sent / span, span=span)
        # else: neither clearly good nor bad; keep the rate and look again

    def _lost(self, sent: int, got: int, ref: float) -> bool:
        """The loss test: the fraction fell by more than the tolerance, and significantly."""
        return (_deficit_z(sent, got, ref) > 3.0
                and got < sent * ref * (1.0 - self.policy.tolerance))

    def _after(self, last: int, now: float, sent: int, got: int) -> tuple[int, int]:
        """The window's counts with those of the epochs sent after it (see _cut)."""
        current = int(now / self.EPOCH)
        for e, (s, g) in self._epochs.items():
            if last < e < current:
                sent += s
                got += g
        return sent, got

    def _cut(self, cut: _Cut, now: float) -> None:
        """Keep a backoff's window open to late replies (see _Cut), with the epochs sent
        after it at the old rate (the cut's restart leaves them unjudged).

        Those epochs matter: a batch stamped later than its grant (a transmit thread that
        waited for the GIL between the two, while the receive thread parsed a block) has
        its replies counted in a later epoch, and the window it was counted in looks short
        by that batch (measured: one 256-probe batch of a 1,536-probe window, z > 3); only
        the epochs after it can show that nothing was lost. The SYN and UDP engines now
        stamp with the grant's time (``take_at``); a caller of ``take`` still may not."""
        if cut.last < cut.first:
            return
        current = int(now / self.EPOCH)  # still being sent in (at the new rate, soon)
        for e in sorted(k for k in self._epochs if cut.last < k < current):
            sent, got = self._epochs.pop(e)
            cut.sent += sent
            cut.got += got
            cut.last = e
        self._cuts.append(cut)
        for e in range(cut.first, cut.last + 1):
            self._late[e] = cut

    def _review(self, now: float, touched: set[int]) -> None:
        """Undo the cuts that late replies cleared; confirm those past their review."""
        keep: list[_Cut] = []
        for i, cut in enumerate(self._cuts):
            if id(cut) in touched and not self._lost(cut.sent, cut.got, cut.ref):
                self._drop(cut)
                self._undo(cut, now, pending=len(keep) + len(self._cuts) - i - 1)
            elif now - cut.at > UNDO_KEEP or len(self._cuts) - i > MAX_CUTS:
                self._drop(cut)
                self._confirmed = True
            else:
                keep.append(cut)
        self._cuts = keep

    def _drop(self, cut: _Cut) -> None:
        for e in range(cut.first, cut.last + 1):
            if self._late.get(e) is cut:
                del self._late[e]

    def _undo(self, cut: _Cut, now: float, pending: int) -> None:
        """The cut's window lost nothing: the rate and slow start as before it (TCP's undo:
        the larger of the rate now and the rate before, the larger ssthresh)."""
        self.losses -= 1
        self.undone += 1
        # Slow start again unless a loss stands or another cut is still under review.
        self.lossy = self._confirmed or pending > 0
        self.ssthresh = max(self.ssthresh, cut.ssthresh)
        rate = max(self.bucket.rate, cut.rate)
        if self.holding:
            reason = "holding"
        elif not self.lossy or rate < self.ssthresh:
            reason = "growing"
        else:
            reason = "probing"
        self.log.append((now, rate, "undo"))
        self._set(rate, reason, now)

    def _healthy(self, now: float, used: float, first: bool = False, span: float = 0.0
                 ) -> None:
        """The path carried the rate: grow (slow start) or probe, if the rate was used."""
        p = self.policy
        rate = self.bucket.rate
        if used < 0.8 * rate:
            return  # the senders did not use it; a bigger rate would be untested
        slow_start = not self.lossy or rate < self.ssthresh
        srtt = self.srtt()
        steps = 1.0
        if not self.lossy and srtt:
            # PER RTT, AS NMAP'S. nmap's slow start doubles its window every RTT (one probe
            # more per reply); a window here is judged once its epochs are final, ~10 ms
            # after its sends, which is a hundred RTTs on a LAN (0.1 ms) and less than one
            # on the Internet. So a window that spanned several RTTs grows by ``growth``
            # per RTT, at most growth ** SLOW_START_STEPS (x8 at T4/T5, x4 at T3): an
            # overshoot then costs one window, which the snap to the delivered rate ends.
            # Measured on a RangeLab /24 x 100 ports, T4: the transmit threads waited for
            # tokens ~29 ms of a ~75 ms send phase while the rate doubled per window.
            steps = min(SLOW_START_STEPS, max(1.0, span / srtt))
        new = rate * (p.growth ** steps if slow_start else p.probe)
        if first and not self.lossy and srtt:
            # nmap's congestion window starts at ``window0`` probes in flight; on a LAN
            # (RTT ~0.2 ms) that is tens of thousands a second from the first reply on.
            new = max(new, p.window0 / max(srtt, 1e-4))
        self._set(new, "growing" if slow_start else "probing", now)

    def _set(self, rate: float, reason: str, now: float) -> None:
        p = self.policy
        if rate >= p.ceiling:
            rate, reason = p.ceiling, "ceiling"
        elif rate <= p.floor:
            rate, reason = p.floor, "floor"
        if rate != self.bucket.rate or reason != self.reason:
            self.bucket.set_rate(rate)
            self.reason = reason
            self.log.append((now, rate, reason))
            # Only probes sent at the new rate tell about it.
            self._restart(now)

    def _restart(self, now: float) -> None:
        self._from = int(now / self.EPOCH) + 1
        self._win = [0, 0, 0]
        self._win_start = self._from
