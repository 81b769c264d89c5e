"""engine.probeloop, the loop of the scheduled probes (OS detection, traceroute), on a
prober whose replies are scripted: the loop sends what is due when it is due, hands every
packet over, and ends when the prober is finished, at the budget, or on cancel. The real
probers run it in tests/osdetect and tests/net/test_traceroute.py against nmap."""

from __future__ import annotations

import time

from prtip_nb.engine.probeloop import POLL, run_probes
from prtip_nb.net.rawrecv import Packet


class Scripted:
    """Sends a probe every ``gap`` seconds, ``count`` in all; each is answered ``delay``
    seconds later (or never, for the indices in ``silent``)."""

    def __init__(self, count: int, gap: float, delay: float, silent: set[int] = frozenset()
                 ) -> None:
        self.count, self.gap, self.delay, self.silent = count, gap, delay, silent
        self.sent: list[float] = []
        self.answers: list[tuple[int, float]] = []
        self._pending: list[tuple[float, int]] = []
        self.polls = 0

    def finished(self) -> bool:
        return len(self.sent) == self.count and not self._pending

    def send_due(self, now: float) -> None:
        if len(self.sent) < self.count and (not self.sent or now >= self.sent[-1] + self.gap):
            k = len(self.sent)
            self.sent.append(now)
            if k not in self.silent:
                self._pending.append((now + self.delay, k))

    def wakeup(self, now: float) -> float:
        times = [t for t, _ in self._pending]
        if len(self.sent) < self.count:
            times.append(self.sent[-1] + self.gap)
        return min(times, default=now + 10.0)

    def poll(self, timeout: float) -> list[Packet]:
        self.polls += 1
        time.sleep(timeout)
        now = time.monotonic()
        due = [k for t, k in self._pending if t <= now]
        self._pending = [(t, k) for t, k in self._pending if t > now]
        return [Packet(4, "tcp", bytes([k]), "198.51.100.1", now) for k in due]  # parse-only

    def receive(self, packet: Packet) -> None:
        self.answers.append((packet.data[0], packet.t))


def test_sends_on_schedule_and_ends_when_the_prober_is_finished() -> None:
    p = Scripted(count=5, gap=0.03, delay=0.01)
    t0 = time.monotonic()
    run_probes(p, budget=5.0)
    took = time.monotonic() - t0
    assert [k for k, _ in p.answers] == [0, 1, 2, 3, 4]
    gaps = [b - a for a, b in zip(p.sent, p.sent[1:], strict=False)]
    assert all(0.03 <= g < 0.03 + POLL for g in gaps), gaps
    assert took < 0.5, took  # finished: no wait for the budget


def test_the_budget_bounds_a_prober_that_never_finishes() -> None:
    p = Scripted(count=3, gap=0.0, delay=0.0, silent={0, 1, 2})
    p.finished = lambda: False  # type: ignore[method-assign]
    t0 = time.monotonic()
    run_probes(p, budget=0.3)
    took = time.monotonic() - t0
    assert 0.3 <= took < 0.3 + 2 * POLL, took
    assert len(p.sent) == 3 and p.answers == []


def test_cancel_stops_the_loop_within_one_poll() -> None:
    p = Scripted(count=1000, gap=0.01, delay=0.0)
    t0 = time.monotonic()
    run_probes(p, budget=10.0, cancelled=lambda: time.monotonic() - t0 > 0.2)
    took = time.monotonic() - t0
    assert took < 0.2 + 2 * POLL, took
    assert 0 < len(p.sent) < 1000
