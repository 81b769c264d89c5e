"""Traceroute, nmap's way: from each host's distance down, sharing the hops hosts have in
common, all hosts at once.

The walk (which TTL each host is probed at next) is ``probes.tracewalk.TtlWalk``, pure;
this module sends its probes and hands it the answers. For each host the caller gives a
probe that the scan found answered (``TraceTarget``: a SYN to an open port, else to a
closed one, else UDP to a closed port, else ICMP echo) and the TTL its replies arrived
with (the starting distance). Every wait is bounded (``timeout`` per probe, ``tries`` per
hop, ``MAX_TTL`` hops, ``deadline`` for the whole run).

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
from dataclasses import dataclass

from ..errors import ScanError
from ..probes import trace as tp
from ..probes.tracewalk import MAX_TTL, Hop, TtlWalk, distance_from_ttl
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
    """Trace ``targets`` (see the module docstring); ``run()`` -> {host: [Hop, ...]}."""

    def __init__(self, targets: Sequence[TraceTarget], *, timeout: float = 0.25,
                 tries: int = 2, deadline: float = 60.0,
                 cancelled: Callable[[], bool] = lambda: False) -> None:
        self.timeout, self.budget = timeout, deadline
        self.cancelled = cancelled
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

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> dict[str, list[Hop]]:
        families = set(self.family.values())
        if not self.targets:
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
            self._loop(send, recv)
        finally:
            for s in [*send.values(), *recv]:
                s.close()
        return self.walk.hops()

    def _send(self, host: str, ttl: int, send: dict[int, socket.socket], now: float) -> None:
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
            send[family].sendto(pkt, (t.host, 0))
        except OSError:
            pass  # no route now: the hop stays silent, as an unanswered probe

    def _loop(self, send: dict[int, socket.socket], recv: dict[socket.socket, tuple[int, str]]
              ) -> None:
        stop_at = time.monotonic() + self.budget
        buf = bytearray(2048)
        walk = self.walk
        while not self.cancelled():
            now = time.monotonic()
            if now >= stop_at:
                break
            for host in walk.expire(now):
                self._by_key.pop(self._key.pop(host, ("", 0, 0)), None)
            if walk.done:
                break
            for host, ttl in walk.due():
                self._send(host, ttl, send, now)
            nxt = walk.next_deadline()
            wait = max(0.0, (now if nxt is None else nxt) - time.monotonic())
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
                    owner = self._by_key.pop(ans.key, None)
                    if owner is None or self._key.get(owner) != ans.key:
                        continue  # late: the hop was already given up on
                    del self._key[owner]
                    walk.answer(owner, ans.responder, final=ans.final, reply_ttl=ans.ttl,
                                now=time.monotonic())

    def stats(self) -> dict[str, int]:
        """Probes sent per host (to check that a shared prefix was probed once)."""
        return self.walk.probes()
