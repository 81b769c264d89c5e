"""Traceroute's round policy: which TTL each host is probed at next, given the answers so
far. Pure: no sockets, no clock (the caller passes ``now``); net.traceroute sends and
receives, this module decides.

The walk, nmap's way, per host (``TtlWalk`` holds every host's and the shared state):

1. at the estimated distance (from the TTL the host's replies arrived with: the initial
   TTL is the next of 32, 64, 128, 255 at or above it; with none, one probe at
   ``MAX_TTL`` measures it, IPv4 only; IPv6 walks up from 1): the target answers (the
   estimate holds), or a router does (it was short: go up one hop at a time until the
   target answers);
2. then down from the hop below the target to TTL 1. A hop that answers from the same
   address at the same TTL as a hop of a host traced before ends the walk: the hops below
   are that host's (nmap's "Hops 1-4 are the same as for ..."), and are not probed again.
   A hop that stays silent after ``tries`` probes is listed with no address.

Hosts go in parallel; the first host to reach a (TTL, address) owns it, and a second host
reaching it follows the first. Every host has at most one probe in flight; ``due()`` says
which hosts need one and at what TTL, ``sent()``/``answer()``/``expire()`` tell the walk
what happened. Bounded: ``tries`` probes per hop, ``MAX_TTL`` hops, 5 silent hops going up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["MAX_TTL", "Hop", "TtlWalk", "distance_from_ttl"]

MAX_TTL = 30
SILENT_UP_MAX = 5  # silent hops in a row going up: the target is not reachable this way


@dataclass(frozen=True)
class Hop:
    ttl: int
    address: str | None  # None: no answer at this TTL
    rtt_ms: float | None


def distance_from_ttl(ttl: int) -> int:
    """Hops to a host whose replies arrive with ``ttl``: initial TTL (32/64/128/255, the
    first at or above) minus ``ttl``, plus one (the host itself is at that TTL)."""
    for initial in (32, 64, 128, 255):
        if ttl <= initial:
            return min(MAX_TTL, max(1, initial - ttl + 1))
    return 1


@dataclass
class _Host:
    host: str
    family: int
    reply_ttl: int | None
    hops: dict[int, Hop] = field(default_factory=dict)
    target_ttl: int | None = None
    ttl: int = 0  # the TTL being probed
    phase: str = "find"  # find -> (up) -> down -> done
    tries: int = 0
    sent_at: float = 0.0
    deadline: float = 0.0
    in_flight: bool = False
    follows: tuple[str, int] | None = None  # (host, ttl): hops below ttl are that host's
    silent_up: int = 0
    probes: int = 0


class TtlWalk:
    """Every host's walk (see the module docstring). ``hosts``: (address, family 4 or 6,
    the TTL its replies arrived with or None), in the order hosts are served."""

    def __init__(self, hosts: Sequence[tuple[str, int, int | None]], *, tries: int = 2) -> None:
        self.tries = tries
        self._hosts = [_Host(h, f, t) for h, f, t in hosts]
        self._by_name = {h.host: h for h in self._hosts}
        self._owner: dict[tuple[int, str], str] = {}  # (ttl, address) -> first host there
        for h in self._hosts:
            if h.reply_ttl:
                h.ttl, h.phase = distance_from_ttl(h.reply_ttl), "find"
            elif h.family == 4:  # one probe at MAX_TTL: the reply's TTL gives the distance
                h.ttl, h.phase = MAX_TTL, "find"
            else:  # IPv6 raw sockets do not show the hop limit: walk up from 1
                h.ttl, h.phase = 1, "up"

    # -- what to send -------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return all(h.phase == "done" for h in self._hosts)

    def due(self) -> list[tuple[str, int]]:
        """(host, TTL) of every host that needs a probe now (none in flight, not done)."""
        return [(h.host, h.ttl) for h in self._hosts if h.phase != "done" and not h.in_flight]

    def sent(self, host: str, now: float, timeout: float) -> None:
        """A probe went to ``host`` at its current TTL at ``now``; silent by ``now + timeout``."""
        h = self._by_name[host]
        h.in_flight, h.tries, h.probes = True, h.tries + 1, h.probes + 1
        h.sent_at, h.deadline = now, now + timeout

    def next_deadline(self) -> float | None:
        return min((h.deadline for h in self._hosts if h.in_flight), default=None)

    def expire(self, now: float) -> list[str]:
        """Hosts whose probe in flight went unanswered by ``now`` (their walks move on)."""
        late = [h for h in self._hosts if h.in_flight and now >= h.deadline]
        for h in late:
            self._on_silence(h)
        return [h.host for h in late]

    # -- what came back ------------------------------------------------------------------------
    def answer(self, host: str, responder: str, *, final: bool, reply_ttl: int | None,
               now: float) -> bool:
        """An answer to ``host``'s probe in flight: from the target itself (``final``) or a
        router. False (and ignored) when ``host`` has no probe in flight (a late answer)."""
        h = self._by_name.get(host)
        if h is None or not h.in_flight:
            return False
        h.in_flight = False
        rtt = now - h.sent_at
        if final:
            if h.phase == "find" and not h.reply_ttl and reply_ttl is not None:
                # The probe at MAX_TTL measured the distance; go there and walk down.
                h.target_ttl = distance_from_ttl(reply_ttl)
                h.ttl = h.target_ttl
                self._record(h, h.ttl, responder, rtt)
                self._next(h)
                return True
            if h.target_ttl is None or h.ttl <= h.target_ttl:
                for t in [t for t in h.hops if t >= h.ttl]:  # overestimated: drop beyond
                    del h.hops[t]
                h.target_ttl = h.ttl
                self._record(h, h.ttl, responder, rtt)
            if h.phase == "up":
                h.phase = "down"
            self._next(h)
            return True
        # A router's answer (time exceeded, or its unreachable).
        self._record(h, h.ttl, responder, rtt)
        if h.phase in ("find", "up"):
            self._owner.setdefault((h.ttl, responder), h.host)
            h.phase, h.silent_up = "up", 0
            self._next(h)
            return True
        owner = self._owner.setdefault((h.ttl, responder), h.host)
        if owner != h.host:
            h.follows = (owner, h.ttl)
            h.phase = "done"
            return True
        self._next(h)
        return True

    # -- the walk of one host ------------------------------------------------------------------
    @staticmethod
    def _record(h: _Host, ttl: int, address: str | None, rtt: float | None) -> None:
        h.hops[ttl] = Hop(ttl, address, None if rtt is None else round(rtt * 1000, 3))

    def _next(self, h: _Host) -> None:
        """Choose ``h``'s next TTL after an answer or a silent hop (h.tries reset)."""
        h.tries = 0
        if h.phase == "up":
            if h.ttl >= MAX_TTL or h.silent_up >= SILENT_UP_MAX:
                h.phase = "done"
                return
            h.ttl += 1
            return
        # down
        top = h.target_ttl if h.target_ttl is not None else h.ttl + 1
        nxt = min(h.ttl, top) - 1
        while nxt >= 1 and nxt in h.hops:  # found on the way up: not probed again
            nxt -= 1
        if nxt < 1:
            h.phase = "done"
            return
        h.ttl = nxt
        h.phase = "down"

    def _on_silence(self, h: _Host) -> None:
        h.in_flight = False
        if h.tries < self.tries:
            return  # probed again at the same TTL
        if h.phase == "find" and not h.reply_ttl:
            h.phase = "done"  # nothing answers even at MAX_TTL
            return
        self._record(h, h.ttl, None, None)
        if h.phase in ("find", "up"):
            h.phase = "up"
            h.silent_up += 1
        self._next(h)

    # -- the result ----------------------------------------------------------------------------
    def hops(self) -> dict[str, list[Hop]]:
        """Each host's hops, TTL 1 to its target, the followed hosts' below the shared hop."""
        out: dict[str, list[Hop]] = {}

        def full(h: _Host, depth: int = 0) -> dict[int, Hop]:
            hops = dict(h.hops)
            if h.follows is not None and depth < len(self._hosts):
                owner, ttl = h.follows
                below = full(self._by_name[owner], depth + 1)
                hops.update({t: hop for t, hop in below.items() if t < ttl})
            return hops

        for h in self._hosts:
            hops = full(h)
            if h.target_ttl is not None:
                hops = {t: v for t, v in hops.items() if t <= h.target_ttl}
            out[h.host] = [hops[t] for t in sorted(hops)]
        return out

    def probes(self) -> dict[str, int]:
        """Probes sent per host (to check that a shared prefix was probed once)."""
        return {h.host: h.probes for h in self._hosts}
