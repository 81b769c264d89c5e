"""Traceroute, nmap's way: from each host's distance down, sharing the hops hosts have in
common, all hosts at once.

The walk (which TTL each host is probed at next) is ``probes.tracewalk.TtlWalk``, pure;
this module sends its probes and hands it the answers. For each host the caller gives a
probe that the scan found answered (``TraceTarget``: a SYN to an open port, else to a
closed one, else UDP to a closed port, else ICMP echo) and the TTL its replies arrived
with (the starting distance). Every wait is bounded (``timeout`` per probe, ``tries`` per
hop, ``MAX_TTL`` hops, ``deadline`` for the whole run).

Sending goes through IPPROTO_RAW sockets (net.rawsock, layer 3: the kernel routes);
answers come from net.rawrecv's raw ICMP and TCP sockets, which get a copy of every ICMP
and TCP packet to this host: ``probes.trace`` parses them. The loop is engine.probeloop's.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..probes import trace as tp
from ..probes.tracewalk import MAX_TTL, Hop, TtlWalk, distance_from_ttl
from .rawrecv import Packet, RawReceivers
from .rawsock import open_raw_socket
from .synstate import route_source

__all__ = ["MAX_TTL", "Hop", "TraceTarget", "Tracer", "distance_from_ttl"]

SPORT_BASE = 40000
SPORT_SPAN = 16384


@dataclass(frozen=True)
class TraceTarget:
    host: str
    proto: str = "tcp"  # "tcp" (SYN), "udp" or "icmp"
    port: int = 0
    reply_ttl: int | None = None  # the TTL the host's replies arrived with, if known


class Tracer:
    """Trace ``targets`` (see the module docstring). A context manager (it owns its
    sockets) that engine.probeloop.run_probes drives; then ``hops()`` -> {host: [Hop, ...]}.
    ``budget`` is the deadline the loop is given."""

    def __init__(self, targets: Sequence[TraceTarget], *, timeout: float = 0.25,
                 tries: int = 2, deadline: float = 60.0) -> None:
        self.timeout, self.budget = timeout, deadline
        self._send_socks: dict[int, socket.socket] = {}
        self._recv: RawReceivers | None = None
        self.targets = {t.host: t for t in targets}
        self.family: dict[str, int] = {}
        self.src: dict[str, str] = {}
        for t in self.targets.values():
            family = 6 if ":" in t.host else 4
            packed = ipaddress.ip_address(t.host).packed
            self.family[t.host] = family
            self.src[t.host] = str(ipaddress.ip_address(route_source(family, packed)))
        self.walk = TtlWalk([(t.host, self.family[t.host], t.reply_ttl)
                             for t in self.targets.values()], tries=tries)
        self._key: dict[str, tuple[str, int, int]] = {}  # host -> key of its probe in flight
        self._by_key: dict[tuple[str, int, int], str] = {}
        self._sport = SPORT_BASE + secrets.randbelow(SPORT_SPAN)
        self._icmp_id = secrets.randbelow(0x10000)
        self.sent = 0

    # -- engine.probeloop.Prober ----------------------------------------------------------------
    def __enter__(self) -> Tracer:
        families = set(self.family.values())
        self._recv = RawReceivers(families, what="traceroute")
        try:
            for f in sorted(families):
                self._send_socks[f] = open_raw_socket(f)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self._send_socks.values():
            s.close()
        self._send_socks = {}
        if self._recv is not None:
            self._recv.close()

    def finished(self) -> bool:
        return self.walk.done or not self._send_socks

    def send_due(self, now: float) -> None:
        for host in self.walk.expire(now):
            self._by_key.pop(self._key.pop(host, ("", 0, 0)), None)
        for host, ttl in self.walk.due():
            self._send(host, ttl, now)

    def wakeup(self, now: float) -> float:
        nxt = self.walk.next_deadline()
        return now if nxt is None else nxt

    def poll(self, timeout: float) -> list[Packet]:
        assert self._recv is not None
        return self._recv.poll(timeout)

    def receive(self, packet: Packet) -> None:
        parse = tp.parse_icmp if packet.kind == "icmp" else tp.parse_tcp
        ans = parse(packet.family, packet.data, packet.source)
        if ans is None:
            return
        owner = self._by_key.pop(ans.key, None)
        if owner is None or self._key.get(owner) != ans.key:
            return  # late: the hop was already given up on
        del self._key[owner]
        self.walk.answer(owner, ans.responder, final=ans.final, reply_ttl=ans.ttl,
                         now=time.monotonic())

    def hops(self) -> dict[str, list[Hop]]:
        return self.walk.hops()

    def _send(self, host: str, ttl: int, now: float) -> None:
        t = self.targets[host]
        family = self.family[host]
        n = self.sent
        self.sent += 1
        sport = SPORT_BASE + (self._sport + n) % SPORT_SPAN
        seq = n & 0xFFFF
        pkt = tp.build_probe(family, self.src[host], t.host, t.proto, ttl=ttl, sport=sport,
                             dport=t.port, seq=secrets.randbits(32) if t.proto == "tcp" else seq,
                             icmp_id=self._icmp_id)
        ident = (self._icmp_id << 16 | seq) if t.proto == "icmp" else sport
        key = tp.probe_key(t.host, t.proto, ident)
        old = self._key.pop(host, None)
        if old is not None:
            self._by_key.pop(old, None)
        self._key[host] = key
        self._by_key[key] = host
        self.walk.sent(host, now, self.timeout)
        try:
            self._send_socks[family].sendto(pkt, (t.host, 0))
        except OSError:
            pass  # no route now: the hop stays silent, as an unanswered probe

    def stats(self) -> dict[str, int]:
        """Probes sent per host (to check that a shared prefix was probed once)."""
        return self.walk.probes()
