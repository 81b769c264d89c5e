"""Traceroute, nmap's way: from each host's distance down, sharing the hops hosts have in
common, all hosts at once.

For each host the caller gives a probe that the scan found answered (``TraceTarget``: a
SYN to an open port, else to a closed one, else UDP to a closed port, else ICMP echo) and
the TTL its replies arrived with. From that TTL the host's distance is estimated (the
initial TTL is the next of 32, 64, 128, 255 at or above it); with none, one probe at
``MAX_TTL`` measures it. Then, per host, one probe at a time:

1. at the estimated distance: the target answers (the estimate holds), or a router does
   (it was short: go up one hop at a time until the target answers);
2. then down from the hop below the target to TTL 1. A hop that answers from the same
   address at the same TTL as a hop of a host traced before ends the walk: the hops below
   are that host's (nmap's "Hops 1-4 are the same as for ..."), and are not probed again.
   A hop that stays silent after ``tries`` probes is listed with no address.

Hosts go in parallel, and the first host to reach a (TTL, address) owns it: a second host
reaching it at the same moment follows the first. Every wait is bounded (``timeout`` per
probe, ``tries`` per hop, ``MAX_TTL`` hops, ``deadline`` for the whole run).

Sending goes through IPPROTO_RAW sockets (net.rawsock, layer 3: the kernel routes);
answers come from raw ICMP and TCP sockets, which the kernel hands a copy of every ICMP
and TCP packet to this host: ``probes.trace`` parses them.
"""

from __future__ import annotations

import ipaddress
import secrets
import select
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import ScanError
from ..probes import trace as tp
from .rawsock import open_raw_socket
from .synstate import route_source

__all__ = ["Hop", "TraceTarget", "Tracer", "distance_from_ttl"]

MAX_TTL = 30
SPORT_BASE = 40000
SPORT_SPAN = 16384


@dataclass(frozen=True)
class TraceTarget:
    host: str
    proto: str = "tcp"  # "tcp" (SYN), "udp" or "icmp"
    port: int = 0
    reply_ttl: int | None = None  # the TTL the host's replies arrived with, if known


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
    target: TraceTarget
    family: int
    src: str
    hops: dict[int, Hop] = field(default_factory=dict)
    target_ttl: int | None = None
    ttl: int = 0  # the TTL being probed
    phase: str = "find"  # find -> (up) -> down -> done
    tries: int = 0
    sent_at: float = 0.0
    deadline: float = 0.0
    key: tuple[str, int, int] | None = None
    follows: tuple[str, int] | None = None  # (host, ttl): hops below ttl are that host's
    silent_up: int = 0
    probes: int = 0


class Tracer:
    """Trace ``targets`` (see the module docstring); ``run()`` -> {host: [Hop, ...]}."""

    def __init__(self, targets: Sequence[TraceTarget], *, timeout: float = 0.25,
                 tries: int = 2, deadline: float = 60.0,
                 cancelled: Callable[[], bool] = lambda: False) -> None:
        self.timeout, self.tries, self.budget = timeout, tries, deadline
        self.cancelled = cancelled
        self.hosts: list[_Host] = []
        for t in targets:
            family = 6 if ":" in t.host else 4
            packed = ipaddress.ip_address(t.host).packed
            src = str(ipaddress.ip_address(route_source(family, packed)))
            self.hosts.append(_Host(t, family, src))
        self._owner: dict[tuple[int, str], str] = {}  # (ttl, address) -> first host there
        self._by_key: dict[tuple[str, int, int], _Host] = {}
        self._sport = SPORT_BASE + secrets.randbelow(SPORT_SPAN)
        self._icmp_id = secrets.randbelow(0x10000)
        self.sent = 0

    # -- the walk of one host -------------------------------------------------------------------
    def _start(self, h: _Host) -> None:
        rt = h.target.reply_ttl
        if rt:
            h.ttl, h.phase = distance_from_ttl(rt), "find"
        elif h.family == 4:  # one probe at MAX_TTL: the reply's TTL gives the distance
            h.ttl, h.phase = MAX_TTL, "find"
        else:  # IPv6 raw sockets do not show the hop limit: walk up from 1
            h.ttl, h.phase = 1, "up"

    def _record(self, h: _Host, ttl: int, address: str | None, rtt: float | None) -> None:
        h.hops[ttl] = Hop(ttl, address, None if rtt is None else round(rtt * 1000, 3))

    def _next(self, h: _Host) -> None:
        """Choose ``h``'s next TTL after an answer or a silent hop (h.tries reset)."""
        h.tries = 0
        if h.phase == "up":
            if h.ttl >= MAX_TTL or h.silent_up >= 5:
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

    def _on_answer(self, h: _Host, ans: tp.Answer, now: float) -> None:
        rtt = now - h.sent_at
        h.key = None
        if ans.final:
            if h.phase == "find" and not h.target.reply_ttl and ans.ttl is not None:
                # The probe at MAX_TTL measured the distance; go there and walk down.
                h.target_ttl = distance_from_ttl(ans.ttl)
                h.ttl = h.target_ttl
                self._record(h, h.ttl, ans.responder, rtt)
                self._next(h)
                return
            if h.target_ttl is None or h.ttl <= h.target_ttl:
                for t in [t for t in h.hops if t >= h.ttl]:  # overestimated: drop beyond
                    del h.hops[t]
                h.target_ttl = h.ttl
                self._record(h, h.ttl, ans.responder, rtt)
            if h.phase == "up":
                h.phase = "down"
            self._next(h)
            return
        # A router's answer (time exceeded, or its unreachable).
        self._record(h, h.ttl, ans.responder, rtt)
        if h.phase in ("find", "up"):
            self._owner.setdefault((h.ttl, ans.responder), h.target.host)
            h.phase, h.silent_up = "up", 0
            self._next(h)
            return
        owner = self._owner.setdefault((h.ttl, ans.responder), h.target.host)
        if owner != h.target.host:
            h.follows = (owner, h.ttl)
            h.phase = "done"
            return
        self._next(h)

    def _on_silence(self, h: _Host) -> None:
        h.key = None
        if h.tries < self.tries:
            return  # probed again at the same TTL
        if h.phase == "find" and not h.target.reply_ttl:
            h.phase = "done"  # nothing answers even at MAX_TTL
            return
        self._record(h, h.ttl, None, None)
        if h.phase in ("find", "up"):
            h.phase = "up"
            h.silent_up += 1
        self._next(h)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> dict[str, list[Hop]]:
        families = {h.family for h in self.hosts}
        if not self.hosts:
            return {}
        send = {f: open_raw_socket(f) for f in families}
        recv: dict[socket.socket, tuple[int, str]] = {}
        try:
            for f in families:
                af = socket.AF_INET if f == 4 else socket.AF_INET6
                icmp = socket.IPPROTO_ICMP if f == 4 else socket.IPPROTO_ICMPV6
                for proto, kind in ((icmp, "icmp"), (socket.IPPROTO_TCP, "tcp")):
                    try:
                        s = socket.socket(af, socket.SOCK_RAW, proto)
                    except OSError as exc:
                        raise ScanError(f"traceroute cannot open a raw socket: {exc}") from exc
                    s.setblocking(False)
                    recv[s] = (f, kind)
            for h in self.hosts:
                self._start(h)
            self._loop(send, recv)
        finally:
            for s in [*send.values(), *recv]:
                s.close()
        return self._hops()

    def _send(self, h: _Host, send: dict[int, socket.socket], now: float) -> None:
        t = h.target
        n = self.sent
        self.sent += 1
        h.probes += 1
        sport = SPORT_BASE + (self._sport + n) % SPORT_SPAN
        seq = n & 0xFFFF
        pkt = tp.build_probe(h.family, h.src, t.host, t.proto, ttl=h.ttl, sport=sport,
                             dport=t.port, seq=secrets.randbits(32) if t.proto == "tcp" else seq,
                             icmp_id=self._icmp_id)
        ident = (self._icmp_id << 16 | seq) if t.proto == "icmp" else sport
        h.key = tp.probe_key(t.host, t.proto, ident)
        self._by_key[h.key] = h
        h.tries += 1
        h.sent_at, h.deadline = now, now + self.timeout
        try:
            send[h.family].sendto(pkt, (t.host, 0))
        except OSError:
            pass  # no route now: the hop stays silent, as an unanswered probe

    def _loop(self, send: dict[int, socket.socket], recv: dict[socket.socket, tuple[int, str]]
              ) -> None:
        stop_at = time.monotonic() + self.budget
        buf = bytearray(2048)
        while not self.cancelled():
            now = time.monotonic()
            if now >= stop_at:
                break
            active = [h for h in self.hosts if h.phase != "done"]
            if not active:
                break
            for h in active:
                if h.key is not None and now >= h.deadline:
                    self._by_key.pop(h.key, None)
                    self._on_silence(h)
                if h.phase != "done" and h.key is None:
                    self._send(h, send, now)
            waits = [h.deadline for h in self.hosts if h.key is not None]
            wait = max(0.0, min(waits, default=now) - time.monotonic())
            ready, _, _ = select.select(list(recv), [], [], min(wait, 0.05))
            for s in ready:
                family, kind = recv[s]
                for _ in range(512):  # drain, bounded
                    try:
                        nbytes, addr = s.recvfrom_into(buf)
                    except BlockingIOError:
                        break
                    except OSError:
                        break
                    data = bytes(buf[:nbytes])
                    parse = tp.parse_icmp if kind == "icmp" else tp.parse_tcp
                    ans = parse(family, data, addr[0])
                    if ans is None:
                        continue
                    waiting = self._by_key.get(ans.key)
                    if waiting is None or waiting.key != ans.key:
                        continue  # late: the hop was already given up on
                    del self._by_key[ans.key]
                    self._on_answer(waiting, ans, time.monotonic())

    def _hops(self) -> dict[str, list[Hop]]:
        """Each host's hops, TTL 1 to its target, the followed hosts' below the shared hop."""
        by_host = {h.target.host: h for h in self.hosts}
        out: dict[str, list[Hop]] = {}

        def full(h: _Host, depth: int = 0) -> dict[int, Hop]:
            hops = dict(h.hops)
            if h.follows is not None and depth < len(self.hosts):
                owner, ttl = h.follows
                below = full(by_host[owner], depth + 1)
                hops.update({t: hop for t, hop in below.items() if t < ttl})
            return hops

        for h in self.hosts:
            hops = full(h)
            if h.target_ttl is not None:
                hops = {t: v for t, v in hops.items() if t <= h.target_ttl}
            out[h.target.host] = [hops[t] for t in sorted(hops)]
        return out

    def stats(self) -> dict[str, int]:
        """Probes sent per host (to check that a shared prefix was probed once)."""
        return {h.target.host: h.probes for h in self.hosts}
