"""The loop of scheduled probes: OS detection and traceroute, written once.

The port scans send every index in rounds (engine.rounds: millions of stateless probes, in
numpy batches, one quiet period a round). OS detection and traceroute are the other shape:
a few probes a host, each sent when a pure policy says so (osdetect.schedule.OsSchedule:
SEQ probes 100 ms apart, then phase 2 and its retries; probes.tracewalk.TtlWalk: the next
TTL of each host, one probe in flight a host), with per-probe timeouts. A ``Prober`` (in
net/: it owns the sockets) joins its policy to its packets; this loop owns the timing:

    until the prober is finished, cancelled, or ``budget`` seconds have passed:
        prober.send_due(now)                 # the policy's expiries, then what is due
        wait for replies until prober.wakeup(), in steps of at most POLL seconds
        prober.receive(packet) for each      # match, hand to the policy

Bounded: the policies bound the probes a host; ``budget`` bounds the time whatever happens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from ..net.rawrecv import Packet

__all__ = ["POLL", "Prober", "run_probes"]

POLL = 0.05  # longest wait between checks of cancel and the budget


class Prober(Protocol):
    def finished(self) -> bool: ...

    def send_due(self, now: float) -> None:
        """Expire what timed out by ``now``, then send what the policy says is due."""

    def wakeup(self, now: float) -> float:
        """The monotonic time the policy next has something to do (``now``: at once)."""

    def poll(self, timeout: float) -> list[Packet]: ...

    def receive(self, packet: Packet) -> None: ...


def run_probes(prober: Prober, *, budget: float,
               cancelled: Callable[[], bool] = lambda: False) -> None:
    """Drive ``prober`` until it is finished, cancelled or ``budget`` seconds are up."""
    stop_at = time.monotonic() + budget
    while not cancelled():
        now = time.monotonic()
        if now >= stop_at or prober.finished():
            return
        prober.send_due(now)
        if prober.finished():
            return
        wait = min(prober.wakeup(now), stop_at) - time.monotonic()
        for packet in prober.poll(min(max(wait, 0.0), POLL)):
            prober.receive(packet)
