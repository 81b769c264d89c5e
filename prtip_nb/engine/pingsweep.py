"""Host discovery (``-sn``): which targets are up, with nmap's probes and reasons.

WHAT IS SENT (nmap's privileged defaults):
- a target that is one of our own addresses: nothing; up, "localhost-response";
- an on-link target (a connected route, no gateway): one ICMP echo whose only job is to
  make the kernel ARP / NDP for it; the neighbour table's answer decides (net.neigh:
  "arp-response" / "nd-response", the reasons nmap gives for its own ARP/ND pings);
- any other target: ICMP echo, TCP SYN to 443, TCP ACK to 80 and, IPv4 only, an ICMP
  timestamp request (probes.ping); the first valid answer decides.

Everything goes out at layer 3 through raw IP sockets (the kernel routes and builds the
link layer); replies come back on the same raw sockets, each checked against its
probe's keyed value, and the neighbour table is watched through netlink.

ROUNDS. Targets are taken in windows of ``WINDOW`` hosts (bounded memory, and a bounded
number of neighbour entries in flight: the kernel's table holds 1,024 by default). A
window's round 0 probes every host; after the RTT-estimated quiet period (srtt +
4·rttvar, clamped to the timing template) round r > 0 probes again only the hosts still
silent (on-link: their INCOMPLETE entry is deleted first, so the kernel asks afresh
instead of once a second), up to ``retries`` rounds. Hosts silent after the last round
are down, "no-response". Every loop is bounded: by the window, the rounds and the clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from ..net.counters import Counters, RttEstimator
from ..net.neigh import RESOLVED, STATIC, NeighWatch, Routes, is_local, local_addresses
from ..net.pingsock import DISCOVERY_FIX, PingSockets, addr_text
from ..net.ratectl import AdaptiveRate, PinnedRate, RatePolicy, RateState
from ..net.synstate import reserve_port, route_source
from ..probes import ping
from ..probes.cookie import CookieKey
from ..probes.pingprobe import PING
from ..targets import TargetSet

__all__ = ["DISCOVERY_FIX", "WINDOW", "DiscoverEngine", "HostVerdict"]

WINDOW = 512
DRAIN_EVERY = 64  # probes sent between two looks at the receive sockets


class HostVerdict(NamedTuple):
    host: str
    family: int
    state: str  # up / down
    reason: str
    rtt_ms: float | None


class _Host:
    __slots__ = ("text", "family", "addr", "ifindex", "key", "src", "sent")

    def __init__(self, text: str, family: int, addr: bytes) -> None:
        self.text, self.family, self.addr = text, family, addr
        self.ifindex = 0  # on-link: the interface; 0: IP probes
        self.key = 0
        self.src = b""
        self.sent: list[float] = []  # send time of each round


class DiscoverEngine:
    """Discovery of ``targets``; ``run(emit)`` hands each window's verdicts to ``emit``."""

    def __init__(self, targets: TargetSet, *, rtt: RttEstimator, retries: int = 1,
                 rate: float | RatePolicy | None = None,
                 cancel: threading.Event | None = None,
                 counters: Counters | None = None, secret: bytes | None = None,
                 window: int = WINDOW) -> None:
        self.targets = targets
        self.rtt = rtt
        self.retries = max(0, retries)
        self.limiter: AdaptiveRate | PinnedRate | None = None
        self._drained_at = time.monotonic()  # replies read up to here (the horizon)
        if isinstance(rate, RatePolicy):
            # Each answer is charged to the send time of the probe round that drew it.
            self.limiter = AdaptiveRate.for_rtt(rate, rtt, max_batch=DRAIN_EVERY)
            self.limiter.horizon = lambda: self._drained_at
        elif rate:
            self.limiter = PinnedRate(rate, max_batch=DRAIN_EVERY)
        self._mono = time.monotonic() - time.time()  # wall send times -> monotonic
        self.cancel = cancel if cancel is not None else threading.Event()
        self.counters = counters if counters is not None else Counters()
        self.ckey = CookieKey(secret)
        self.window = window
        self.ident = 0
        self.sport = 0
        self.stats = {"sent": 0, "replies": 0, "invalid": 0, "neigh_deleted": 0,
                      "send_errors": 0, "rounds": 0, "parse_errors": 0}
        self.parse_error = ""  # the first parser exception, for warnings()
        self._socks = PingSockets()  # net.pingsock: the raw sockets, their filters
        self._neigh: NeighWatch | None = None
        self._routes: Routes | None = None
        self._pending: dict[bytes, _Host] = {}
        self._onlink: dict[bytes, _Host] = {}
        self._keys: dict[bytes, int] = {}
        self._found: dict[bytes, HostVerdict] = {}
        self._local: set[bytes] = set()

    # -- setup ---------------------------------------------------------------------------
    def _open(self) -> None:
        import secrets

        fams = self.targets.families
        self.ident = secrets.randbelow(0xFFFF) + 1
        try:
            self._socks.open(fams, self.sport, self.ident)
            self._neigh = NeighWatch()
        except BaseException:
            self._close()
            raise
        self._routes = Routes()

    def _close(self) -> None:
        self._socks.close()
        if self._neigh is not None:
            self._neigh.close()
            self._neigh = None

    def rate_state(self) -> RateState:
        """The rate in force and why."""
        return RateState(None, "unlimited") if self.limiter is None else self.limiter.state()

    # -- the scan --------------------------------------------------------------------------
    def run(self, emit: Callable[[list[HostVerdict]], None]) -> None:
        """Probe every target, window by window; ``emit`` gets each window's verdicts.

        The raw sockets open with the first window that has a host to probe: a sweep of
        our own addresses (loopback) needs no privileges."""
        held: list[Any] = []  # the bound sockets holding our source port
        self._local = local_addresses()
        try:
            for hosts in self._windows():
                if self.cancel.is_set():
                    return
                if not self._socks and not all(is_local(h.family, h.addr, self._local)
                                               for h in hosts):
                    self.sport, held = reserve_port(None)
                    self._open()
                emit(self._window(hosts))
        finally:
            for s in held:
                s.close()
            self._close()

    def _windows(self) -> Iterator[list[_Host]]:
        batch: list[_Host] = []
        for fam, lo, hi in self.targets.ranges:
            size = 4 if fam == 4 else 16
            for value in range(lo, hi + 1):
                addr = value.to_bytes(size, "big")
                batch.append(_Host(addr_text(fam, addr), fam, addr))
                if len(batch) >= self.window:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _window(self, hosts: list[_Host]) -> list[HostVerdict]:
        routes = self._routes or Routes()
        self._found = {}
        self._pending = {}
        self._onlink = {}
        self._keys = {}
        for h in hosts:
            if is_local(h.family, h.addr, self._local):
                self._found[h.addr] = HostVerdict(
                    h.text, h.family, *PING.verdict(PING.code("localhost-response")), None)
                continue
            h.ifindex = routes.onlink(h.family, h.addr)
            h.src = route_source(h.family, h.addr)
            h.key = self.ckey.host_key(h.src, h.addr, self.sport)
            self._pending[h.addr] = h
            self._keys[h.addr] = h.key
            if h.ifindex:
                self._onlink[h.addr] = h
        self._forget_neighbours(first=True)
        for rnd in range(self.retries + 1):
            if not self._pending or self.cancel.is_set():
                break
            self.stats["rounds"] = max(self.stats["rounds"], rnd + 1)
            if rnd:
                self._forget_neighbours(first=False)
            if self.limiter is not None:  # a new window's round 0 is a fresh sample
                self.limiter.new_round(retry=rnd > 0)
            last = self._send_round(rnd)
            self._wait(last)
            self._catch_up()
        for h in self._pending.values():
            self._found[h.addr] = HostVerdict(h.text, h.family, *PING.verdict(PING.DOWN), None)
        self.counters.done += len(hosts)
        return [self._found[h.addr] for h in hosts]

    def _forget_neighbours(self, *, first: bool) -> None:
        """Delete our on-link targets' neighbour entries so the kernel asks afresh. Round 0:
        any left from before (a STALE entry would say "up" for a host that has gone);
        later rounds: the INCOMPLETE ones. A static entry, or one we may not delete
        (no CAP_NET_ADMIN), turns the host over to IP probes."""
        neigh = self._neigh
        if neigh is None or not self._onlink:
            return
        fams = {h.family for h in self._onlink.values()}
        for fam in sorted(fams):
            for nfam, dst, ifindex, state, _ll in neigh.dump(fam):
                h = self._onlink.get(dst)
                if h is None or nfam != h.family or h.addr not in self._pending:
                    continue
                if state & STATIC:
                    h.ifindex = 0
                    del self._onlink[dst]
                    continue
                try:
                    neigh.delete(fam, ifindex, dst)
                    self.stats["neigh_deleted"] += 1
                except PermissionError:
                    if first:
                        h.ifindex = 0
                        del self._onlink[dst]
                except OSError:
                    pass

    # -- transmit --------------------------------------------------------------------------
    def _probes(self, h: _Host, rnd: int) -> list[tuple[str, bytes]]:
        # On-link (h.ifindex): only the kernel's ARP / NDP matters; the echo sets it going.
        return PING.make(h.family, h.src, h.addr, sport=self.sport, ident=self.ident,
                         rnd=rnd, key=h.key, on_link=bool(h.ifindex))

    def _send_round(self, rnd: int) -> float:
        """Send round ``rnd`` to every pending host; the time of the last send."""
        last = time.monotonic()
        n = 0
        for h in list(self._pending.values()):
            if self.cancel.is_set():
                break
            if h.addr not in self._pending:  # answered while we were sending
                continue
            h.sent.append(time.time())
            for sock_name, pkt in self._probes(h, rnd):
                if self.limiter is not None:
                    self.limiter.take(1, self.cancel)
                # A full queue, no route, broadcast, a local firewall: the probe stays
                # silent (a retry resends); any other failure is a ScanError.
                if self._socks.send(sock_name, pkt, h.text, h.family):
                    self.stats["sent"] += 1
                    self.counters.sent += 1
                    if rnd:
                        self.counters.retries += 1
                else:
                    self.stats["send_errors"] += 1
                n += 1
                if n % DRAIN_EVERY == 0:
                    self._drain()
            last = time.monotonic()
        return last

    # -- receive ---------------------------------------------------------------------------
    def _wait(self, last_send: float) -> None:
        """Collect replies until the quiet period after ``last_send`` ends (or all are in)."""
        extra: list[Any] = [] if self._neigh is None else [self._neigh]
        while self._pending and not self.cancel.is_set():
            left = last_send + self.rtt.timeout - time.monotonic()
            if left <= 0:
                break
            if self._socks.wait(extra, min(left, 0.05)):
                self._drain()

    def _drain(self) -> None:
        mark = time.monotonic()
        now = time.time()
        # Bounded: at most 4096 packets a socket, a flood cannot keep us here; each with
        # the kernel's arrival time.
        for name, fam, data, t, src in self._socks.replies(now):
            try:
                rep = self._parse(name, fam, data, src)
            except Exception as exc:  # noqa: BLE001 -- never a reason to end the sweep
                self.stats["parse_errors"] += 1
                self.parse_error = self.parse_error or f"{type(exc).__name__}: {exc}"
                rep = None
            if rep is None:
                self.stats["invalid"] += 1
                continue
            self.stats["replies"] += 1
            self._answered(rep[2], rep[0], rep[3], t)
        if self._neigh is not None:
            for fam, dst, _ifindex, state, lladdr in self._neigh.events():
                self._neighbour(fam, dst, state, lladdr, now)
        self._drained_at = mark

    def _parse(self, name: str, fam: int, data: bytes, src: bytes | None) -> ping.Reply | None:
        return PING.classify(name, fam, data, src, ident=self.ident, sport=self.sport,
                             keys=self._keys)

    def warnings(self) -> list[str]:
        """Once per sweep: replies the parsers raised on (dropped, counted invalid)."""
        if not self.stats["parse_errors"]:
            return []
        return [f"host discovery could not parse {self.stats['parse_errors']} replies "
                f"({self.parse_error}); it dropped them and went on. Please report this"]

    def _neighbour(self, fam: int, dst: bytes, state: int, lladdr: bool, now: float) -> None:
        h = self._onlink.get(dst)
        if h is not None and h.family == fam and state & RESOLVED and lladdr:
            self._answered(dst, "arp-response" if fam == 4 else "nd-response", -1, now)

    def _catch_up(self) -> None:
        """One dump of the neighbour table: events lost to a full socket buffer, or that
        arrived between the last drain and now."""
        if self._neigh is None or not any(h.addr in self._pending for h in
                                          self._onlink.values()):
            return
        now = time.time()
        self._drain()
        for fam in sorted({h.family for h in self._onlink.values()}):
            for nfam, dst, _i, state, lladdr in self._neigh.dump(fam):
                if dst in self._pending:
                    self._neighbour(nfam, dst, state, lladdr, now)

    def _answered(self, addr: bytes, reason: str, rnd: int, now: float) -> None:
        """``addr`` answered at ``now`` (epoch seconds) to round ``rnd`` (-1: unknown)."""
        h = self._pending.pop(addr, None)
        if h is None:
            return  # a duplicate, or a second probe's answer: the first one decided
        if h.ifindex:  # on-link: the neighbour answered, whatever packet told us first
            reason = PING.verdict(PING.code("arp-response" if h.family == 4 else "nd-response"))[1]
        sent = h.sent[rnd] if 0 <= rnd < len(h.sent) else h.sent[-1]
        rtt = max(0.0, now - sent)
        self.rtt.update(rtt)
        if self.limiter is not None:
            self.limiter.replied((sent + self._mono,))
        self.counters.received += 1
        self.counters.open += 1  # "up" hosts, shown as found on a progress bar
        state, reason = PING.verdict(PING.code(reason))  # the table's words
        self._found[addr] = HostVerdict(h.text, h.family, state, reason, rtt * 1000.0)
