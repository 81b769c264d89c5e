"""Pacing a UDP scan's retries to the target's ICMP rate limit (engine.udp's THE ICMP RATE
LIMIT and PER HOST explain why): the arrival-rate estimates, the per-host plan of a
paced round, and the pacer that keeps a round's ICMP demand at the measured limit.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from ..net.throttle import TokenBucket

if TYPE_CHECKING:
    from .udprx import UdpReceiver

__all__ = ["BURST", "MAX_PACED_HOSTS", "MAX_PAUSE", "PACE", "PROBE_S", "HostPlan", "Pacer",
           "host_rates", "icmp_rates"]

RUN = 256  # the most probes a paced round hands sendmmsg at once (engine.udp.RUN)
PACE = 1.25  # retry rounds go this much faster than the measured ICMP limit
BURST = 6  # Linux's per-peer ICMP burst (XRLIM_BURST_FACTOR): not part of the steady rate
PROBE_S = 2.0  # a measurement round lasts at least this long (2 tokens at Linux's default)
MAX_PAUSE = 3.0  # the pause before a paced round: enough for a limit of one error per 2 s


def icmp_rates(times: list[np.ndarray], t0: float) -> tuple[float, float] | None:
    """(steady rate, low estimate) of ICMP error arrivals since ``t0``, or None if none.

    The steady rate leaves out the first ``BURST`` arrivals (the target's bucket was
    full when the scan began); the low estimate spreads all but those over the whole
    time since ``t0``."""
    n = sum(len(t) for t in times)
    if n == 0:
        return None
    arr = np.sort(np.concatenate(times))
    k = min(BURST, n // 2)
    span = float(arr[-1] - arr[k]) if n > k + 1 else 0.0
    elapsed = max(0.05, time.monotonic() - t0)
    steady = (n - k - 1) / span if span >= 0.05 else n / elapsed
    low = max(1.0, n - BURST) / elapsed
    return steady, min(low, steady)


#: Per-host pacing needs a count of silent probes per host: up to this many hosts.
MAX_PACED_HOSTS = 1 << 16


def host_rates(hosts: list[np.ndarray], est: tuple[float, float]
                ) -> dict[int, tuple[float, float]]:
    """``est`` (steady, low: icmp_rates of all errors) split over the target hosts in
    proportion to the errors each drew: a per-host rate from a handful of arrivals
    would be noise, the whole round's rate is not."""
    if not hosts:
        return {}
    h, counts = np.unique(np.concatenate(hosts), return_counts=True)
    frac = counts / counts.sum()
    return {int(x): (est[0] * f, est[1] * f) for x, f in zip(h.tolist(), frac.tolist(),
                                                           strict=True)}


class HostPlan:
    """A paced round's PER-HOST view. Each target limits its errors to us on its own, so
    the round's pace is the fastest at which no host gets probes faster than PACE x its
    own limit: host h gets the share R_h / R of the silent probes, so the pace is
    min_h PACE * L_h * R / R_h (several separately limited hosts: the sum of their limits
    while all have silent ports, one host's limit once it alone has). ``expected(pace)``
    is the error rate that pace can draw: sum_h min(L_h, pace * R_h / R). ``update()``
    takes the errors seen since the plan was made off R_h: when one host's closed ports
    are all answered mid-round, the others' limits are what remains.

    Addresses of one kernel share one bucket (Linux keys it on the peer, us): each then
    measures as its share of that limit, which gives the same pace while the shares hold
    and a slower one (never a wrong verdict) when they change. Hosts never measured
    (firewalled, or answered before the limit was found) do not bound the pace."""

    def __init__(self, base: float, limit: float, limits: np.ndarray | None = None,
                 left: np.ndarray | None = None, rx: UdpReceiver | None = None) -> None:
        self.base, self.limit = base, limit
        self.limits, self.left, self.rx = limits, left, rx  # per host: L_h, R_h
        self.marks = len(rx.icmp_hosts) if rx is not None else 0
        self._lim: np.ndarray | None = None
        self._share: np.ndarray | None = None
        if limits is not None:
            self.update()

    def update(self) -> None:
        if self.limits is None or self.left is None or self.rx is None:
            return
        left = self.left
        seen = self.rx.icmp_hosts[self.marks:]
        if seen:
            left = np.maximum(0, left - np.bincount(np.concatenate(seen),
                                                    minlength=len(left))[: len(left)])
        known = (left > 0) & (self.limits > 0)
        if not known.any():  # the measured hosts are done: the others were never limited
            self._lim = self._share = None
            return
        self._lim, self._share = self.limits[known], left[known] / left.sum()
        self.base = PACE * float(np.min(self._lim / self._share))

    def expected(self, pace: float) -> float:
        if self._lim is None or self._share is None:
            return self.limit
        return float(np.minimum(self._lim, pace * self._share).sum())


class Pacer:
    """Keeps a paced round's ICMP demand at the target's limit.

    A paced round sends at 1.25x the limit as if every silent port were closed. When most
    are not (a firewall drops them), errors come back well below the limit and tokens go
    unused: then the pace rises (at most 4x per window) until errors arrive at about the
    limit again, and never above the scan's rate; the next round starts at the pace this
    one reached, and halves it per window while errors arrive at the limit. Checked from
    the transmit loop, once per window of at least 0.5 s (4 token intervals for slow
    limits). Sending faster than the limit never costs a verdict: the target's tokens
    keep until a probe to a closed port takes them; it only costs rounds."""

    def __init__(self, limiter: TokenBucket, plan: HostPlan, ceiling: float,
                 rx: UdpReceiver) -> None:
        self.limiter, self.plan, self.ceiling, self.rx = limiter, plan, ceiling, rx
        self.window = max(0.5, 4.0 / plan.expected(plan.base))
        self.started = self.last = time.monotonic()

    def check(self) -> None:
        now = time.monotonic()
        if now - self.last < self.window or now - self.started < self.window:
            return
        self.last = now
        since = time.time() - self.window
        arrived = 0
        for ts in reversed(self.rx.icmp_times):  # appended in time order, block by block
            if not len(ts) or ts[-1] < since:
                break
            arrived += int((ts >= since).sum())
        rate = arrived / self.window
        lim = self.limiter
        self.plan.update()
        limit = self.plan.expected(lim.rate)  # the errors this pace can draw at most
        if rate >= 0.7 * limit:  # the limit binds: every token is being used ...
            if lim.rate > 2 * self.plan.base:  # ... so a fast start may slow down again
                self._set(max(self.plan.base, lim.rate / 2))
            return
        faster = min(self.ceiling, lim.rate * min(4.0, limit / max(rate, limit / 20)))
        if faster > lim.rate:
            self._set(faster)

    def _set(self, rate: float) -> None:
        self.limiter.set_rate(rate)
