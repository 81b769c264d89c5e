"""OS detection's round policy: which probes go to which host when, given the replies so
far. Pure: no sockets, no clock (the caller passes ``now``); net.osscan sends and
receives, this module decides.

nmap's two phases, all hosts in step:

1. SEQ 1-6 to the hosts with an open port, ``seq_gap`` apart (nmap's OS_SEQ_PROBE_DELAY,
   100 ms): the ISN and timestamp rates are measured over that spacing, so these are not
   retried or hurried.
2. Right after SEQ6: ECN, T2-T7, U1 and the two echoes, back to back (open-port probes
   only to a host with an open port, T5-T7 only with a closed one). A round lasts
   ``timeout`` or until every host has every reply; then the unanswered phase-2 probes go
   again, ``retries`` times at most.

``due(now)`` gives the (host index, probe name) pairs to send now, ``wakeup()`` when the
next ones are due, ``replied(k, name)`` records a reply; ``finished`` ends the run.
Bounded: at most 6 + 10 x (1 + retries) probes per host.
"""

from __future__ import annotations

from collections.abc import Sequence

from .probes import PROBE_ORDER

__all__ = ["OS_SEQ_GAP", "REST", "SEQ", "OsSchedule", "wanted"]

OS_SEQ_GAP = 0.1  # nmap's OS_SEQ_PROBE_DELAY: 100 ms between the SEQ probes
SEQ = PROBE_ORDER[:6]
REST = PROBE_ORDER[6:]


def wanted(has_open: bool, has_closed: bool) -> list[str]:
    """The phase-2 probes for a host: open-port ones only if it has an open port, T5-T7
    only if it has a closed one."""
    skip = set() if has_open else {"ECN", "T2", "T3", "T4"}
    if not has_closed:
        skip |= {"T5", "T6", "T7"}
    return [n for n in REST if n not in skip]


class OsSchedule:
    """The probes of every host, in nmap's phases (see the module docstring).
    ``hosts``: (has an open TCP port, has a closed TCP port) per host."""

    def __init__(self, hosts: Sequence[tuple[bool, bool]], *, seq_gap: float = OS_SEQ_GAP,
                 timeout: float = 0.5, retries: int = 1) -> None:
        self.seq_gap, self.timeout, self.retries = seq_gap, timeout, max(0, retries)
        self._open = [o for o, _c in hosts]
        self._rest = [wanted(o, c) for o, c in hosts]
        self._want = [(list(SEQ) if o else []) + r for o, r in zip(self._open, self._rest,
                                                                   strict=True)]
        self.replies: list[set[str]] = [set() for _ in hosts]
        self.sent: list[dict[str, int]] = [{} for _ in hosts]  # name -> times sent
        self._step = 0  # the next SEQ probe (0-5), then 6: phase 2
        self._attempt = -1  # phase 2's round (-1: not started)
        self._at = 0.0  # when the next step is due (0: at once)
        self.finished = not hosts

    def all_answered(self) -> bool:
        """Every host has every reply it can be sent a probe for."""
        return all(set(w) <= r
                   for r, w in zip(self.replies, self._want, strict=True))

    def replied(self, k: int, name: str) -> None:
        self.replies[k].add(name)

    def wakeup(self) -> float:
        """When ``due`` has something to say next (a SEQ step, the end of a round)."""
        return self._at

    def due(self, now: float) -> list[tuple[int, str]]:
        """The probes to send at ``now`` (and the schedule moves on); [] when it is not
        time yet, or ``finished``."""
        if self.finished:
            return []
        if self._attempt >= 0 and self.all_answered():
            self.finished = True
            return []
        if now < self._at:
            return []
        out: list[tuple[int, str]] = []
        if self._step < len(SEQ):
            name = SEQ[self._step]
            out += [(k, name) for k, o in enumerate(self._open) if o]
            self._step += 1
            self._at = now + self.seq_gap
            if self._step < len(SEQ) or not out:
                if out:
                    return self._mark(out)
                self._step = len(SEQ)  # no host has an open port: no SEQ phase at all
        # Phase 2: right after SEQ6, then a retry round per ``timeout`` of silence.
        self._attempt += 1
        if self._attempt > self.retries:
            self.finished = True
            return self._mark(out)
        for k, rest in enumerate(self._rest):
            out += [(k, n) for n in rest if n not in self.replies[k]]
        self._at = now + self.timeout
        return self._mark(out)

    def _mark(self, out: list[tuple[int, str]]) -> list[tuple[int, str]]:
        for k, name in out:
            self.sent[k][name] = self.sent[k].get(name, 0) + 1
        return out
