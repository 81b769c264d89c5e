"""The rate limiter: a token bucket that hands out *batch sizes*, never single packets.

The transmit loop asks ``take(want)`` once per batch and sends what it is granted, so the
limiter costs one lock and one clock read per batch (masscan's throttler does the same).
A grant waits until a whole batch of tokens has accumulated -- at 50,000 pps that is
about 5 ms' worth, 250 probes -- which keeps the number of send calls low while every
100 ms window stays within a batch of its budget. The long-run mean is exact: tokens are
credited from the monotonic clock, whatever the sleep granularity.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]

#: A batch is at most this many seconds of the rate (and at most ``max_batch`` probes).
BATCH_SECONDS = 0.005
#: Unused credit is kept for at most this long (see ``take``).
CREDIT_SECONDS = 0.05


class TokenBucket:
    """``take(want, cancel)`` -> probes that may be sent now (0 only when cancelled)."""

    def __init__(self, rate: float, *, max_batch: int = 256,
                 batch_seconds: float = BATCH_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 start: float | None = None) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be positive, not {rate!r}")
        self.max_batch = max_batch
        self.batch_seconds = batch_seconds
        self.tokens = 0.0
        self.clock = clock
        # ``start``: when credit begins (default now). Worker processes of one connect scan
        # share the scan's, so one that started late has its (capped) credit at once.
        self.last = clock() if start is None else min(start, clock())
        self.lock = threading.Lock()
        self._size(float(rate))

    def _size(self, rate: float) -> None:
        self.rate = rate
        self.batch = max(1, min(self.max_batch, int(rate * self.batch_seconds)))
        self.cap = max(2.0 * self.batch, self.rate * CREDIT_SECONDS)

    def set_rate(self, rate: float) -> None:
        """Change the rate from now on; credit earned so far is kept (up to the new cap)."""
        if not rate > 0:
            raise ValueError(f"rate must be positive, not {rate!r}")
        with self.lock:
            now = self.clock()
            self.tokens = min(self.cap, self.tokens + (now - self.last) * self.rate)
            self.last = now
            self._size(float(rate))
            self.tokens = min(self.tokens, self.cap)

    def grant(self, want: int) -> int:
        """``take`` without waiting: the whole tokens there are now, at most ``want`` (0:
        none yet). For a loop that must go on polling meanwhile (the connect engine's
        epoll window); what it does not spend it gives back with ``refund``."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.cap, self.tokens + (now - self.last) * self.rate)
            self.last = now
            n = max(0, min(want, int(self.tokens + 1e-6)))
            self.tokens -= n
            return n

    def refund(self, n: int) -> None:
        """Tokens granted but not spent (or a probe our own kernel refused to send)."""
        if n > 0:
            with self.lock:
                self.tokens = min(self.cap, self.tokens + n)

    def take(self, want: int, cancel: threading.Event) -> int:
        return self.take_at(want, cancel)[0]

    def take_at(self, want: int, cancel: threading.Event) -> tuple[int, float]:
        """``take``, and the ``clock`` time of the grant (the time to stamp the probes
        with: see engine.rounds.send_runs)."""
        while True:
            with self.lock:
                # The batch is read afresh on every pass: set_rate may shrink it (and the
                # cap with it) while we wait, and a batch bigger than the cap never comes.
                need = max(1, min(want, self.batch))
                now = self.clock()
                # Credit is capped at 50 ms of the rate: a stall (a GIL hand-off, a busy
                # machine descheduling us) is made up, so the mean holds, while a burst
                # stays within half of a 100 ms window's budget.
                self.tokens = min(self.cap, self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= need - 1e-6:  # not a hair short after a rounding wait
                    self.tokens -= need
                    return need, now
                wait = (need - self.tokens) / self.rate
            if cancel.wait(wait):
                return 0, now
