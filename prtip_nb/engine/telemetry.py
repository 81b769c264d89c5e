"""The poller: one thread turns the hot loops' counters into telemetry rows.

It samples every ``interval`` seconds (250 ms by default): probes sent, replies, open
ports, retries, the send and reply rates since the last sample, this process's RSS, CPU
share (100 = one core), thread count, and the send rate in force with its reason (see
net.ratectl). Worker processes' memory is reported apart, in
the EngineStats event.
The hot loops never call into it; they only bump ``Counters``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..net.counters import Counters
from ..net.ratectl import RateState

if TYPE_CHECKING:
    from ..results import ResultBuilder

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident set size, read from /proc (cheap, no psutil)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return 0


def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM), in bytes."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Poller:
    def __init__(
        self,
        counters: Counters,
        builder: ResultBuilder,
        t0: float,
        interval: float = 0.25,
        on_sample: Callable[[], None] | None = None,
        rate: Callable[[], RateState] | None = None,
    ) -> None:
        self.on_sample = on_sample  # e.g. publish a Progress event
        self.rate = rate  # the send rate in force and why
        self.counters = counters
        self.builder = builder
        self.t0 = t0
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prtip-poller", daemon=True)
        self._last = (t0, 0, 0, os.times())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sample()  # the closing row, so every scan has at least one

    def sample(self) -> None:
        now = time.monotonic()
        times = os.times()
        last_t, last_sent, last_received, last_times = self._last
        c = self.counters
        dt = max(1e-9, now - last_t)
        cpu = (times.user + times.system - last_times.user - last_times.system) / dt * 100
        self.builder.add_telemetry(
            now - self.t0,
            c.sent,
            c.received,
            c.open,
            c.retries,
            (c.sent - last_sent) / dt,
            rss_bytes(),
            cpu,
            pps_received=(c.received - last_received) / dt,
            threads=threading.active_count(),
            rate=None if self.rate is None else self.rate(),
        )
        self._last = (now, c.sent, c.received, times)
        if self.on_sample is not None:
            self.on_sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
