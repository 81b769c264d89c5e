"""Counters that the hot loops bump, and the RTT estimator that sets probe timeouts.

Hot loops only increment plain attributes: one writer thread per counter set, readers
(poller, progress bar) tolerate a value that is one update old. No locks on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    total: int = 0  # probes the scan will send once each (its share of the index space)
    done: int = 0  # probes with a final verdict
    sent: int = 0  # packets / connect() calls, retries included
    received: int = 0  # replies seen (SYN-ACK, RST, ICMP, connect completion)
    open: int = 0
    retries: int = 0
    skipped: int = 0  # probes not sent because their host timed out (--host-timeout)

    def snapshot(self) -> tuple[int, int, int, int, int, int]:
        """(total, done, sent, received, open, retries); done includes skipped probes."""
        return (
            self.total, self.done + self.skipped, self.sent, self.received, self.open,
            self.retries,
        )


class RttEstimator:
    """nmap's timeout rule: srtt + 4·rttvar (RFC 6298), clamped to [min, max].

    Until the first sample, the timeout is the template's initial value.
    """

    __slots__ = ("srtt", "rttvar", "initial", "lo", "hi", "samples")

    def __init__(self, initial: float, lo: float, hi: float) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.initial = initial
        self.lo = lo
        self.hi = max(hi, lo)
        self.samples = 0

    def update(self, rtt: float) -> None:
        self.samples += 1
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            delta = rtt - self.srtt
            self.srtt += delta / 8
            self.rttvar += (abs(delta) - self.rttvar) / 4

    @property
    def timeout(self) -> float:
        if self.srtt is None:
            return self.initial
        return min(self.hi, max(self.lo, self.srtt + 4 * self.rttvar))
