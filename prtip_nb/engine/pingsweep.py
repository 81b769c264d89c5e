"""Host discovery (``-sn``) on the round engine: which targets are up, with nmap's probes
and reasons.

WHAT IS SENT (nmap's privileged defaults; probes.pingprobe builds the bytes):
- a target that is one of our own addresses: nothing; up, "localhost-response";
- an on-link target (a connected route, no gateway): one ICMP echo whose only job is to
  make the kernel ARP / NDP for it; the neighbour table's answer decides (net.neigh:
  "arp-response" / "nd-response", the reasons nmap gives for its own ARP/ND pings);
- any other target: ICMP echo, TCP SYN to 443, TCP ACK to 80 and, IPv4 only, an ICMP
  timestamp request (probes.ping); the first valid answer decides.

Everything goes out at layer 3 through raw IP sockets (net.pingsock; the kernel routes and
builds the link layer); replies come back on the same raw sockets, each checked against its
probe's keyed value, and the neighbour table is watched through netlink.

ROUNDS (engine.rounds, shared with SYN and UDP). Each host index j (its position in the
TargetSet) gets one verdict record (probes.records: code = probes.verdicts' "ping" code,
NO_RESPONSE = down), deduplicated by the answered bitmap, timed by the RTT estimator and
paced by the same limiters (net.throttle / net.ratectl). The hooks:
- ``parts``: windows of ``WINDOW`` hosts (bounded memory, and a bounded number of
  neighbour entries in flight: the kernel's table holds 1,024 by default); a window's
  silent hosts are recorded down when its rounds end;
- ``send_round``: round 0 probes every host of the window, round r > 0 those still
  silent (on-link: their INCOMPLETE entry is deleted first, so the kernel asks afresh
  instead of once a second);
- ``after_round``: one dump of the neighbour table after each quiet period (events lost to
  a full socket buffer).
The receive thread (``_Receiver``) reads the raw sockets and the neighbour events.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..net.counters import Counters, RttEstimator
from ..net.neigh import RESOLVED, STATIC, NeighWatch, Routes, is_local, local_addresses
from ..net.pingsock import DISCOVERY_FIX, PingSockets, addr_text
from ..net.ratectl import AdaptiveRate, PinnedRate, RatePolicy, RateState
from ..net.synstate import Answered, reserve_port, route_source
from ..probes.cookie import CookieKey
from ..probes.pingprobe import PING
from ..probes.records import DTYPE as RECORD_DTYPE
from ..targets import TargetSet
from .rounds import RoundResult, RoundScan

if TYPE_CHECKING:
    from .synrx import Out

__all__ = ["DISCOVERY_FIX", "WINDOW", "DiscoverEngine", "HostVerdict", "host_verdicts"]

WINDOW = 512
TAKE = 64  # the limiter's largest grant: probes go out one host at a time


class HostVerdict(NamedTuple):
    host: str
    family: int
    state: str  # up / down
    reason: str
    rtt_ms: float | None


def host_verdicts(targets: TargetSet, records: bytes) -> list[HostVerdict]:
    """The verdict records of a sweep of ``targets`` as rows, in target order."""
    rec = np.frombuffer(records, RECORD_DTYPE)
    rec = rec[np.argsort(rec["index"], kind="stable")]
    out = []
    for i, code, rtt in zip(rec["index"].tolist(), rec["code"].tolist(),
                            rec["rtt_ms"].tolist(), strict=True):
        state, reason = PING.verdict(code)
        out.append(HostVerdict(targets.address(i), targets.family(i), state, reason,
                               None if rtt != rtt else rtt))  # NaN: no answer timed
    return out


class _Host:
    __slots__ = ("index", "text", "family", "addr", "ifindex", "key", "src", "sent")

    def __init__(self, index: int, text: str, family: int, addr: bytes) -> None:
        self.index, self.text, self.family, self.addr = index, text, family, addr
        self.ifindex = 0  # on-link: the interface; 0: IP probes
        self.key = 0
        self.src = b""
        self.sent: list[float] = []  # send time of each round


class _Receiver:
    """Discovery's receive thread: replies on the raw sockets and neighbour events, read
    as they arrive (the engine's ``_drain``), until ``join``."""

    def __init__(self, engine: DiscoverEngine) -> None:
        self.engine = engine
        self.count = 0  # hosts with a verdict (answered, our own, or recorded down)
        self.all_answered = threading.Event()  # every host of the current window
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="prtip-ping-rx", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self._stop.set()
        self.engine.sockets.wake()  # out of its select now, not at the timeout
        self.thread.join()

    def _run(self) -> None:
        eng = self.engine
        try:
            while not self._stop.is_set():
                socks, neigh = eng.sockets, eng.neigh  # opened with the first window to probe
                if not socks:
                    self._stop.wait(0.01)
                    eng.drained_at = time.monotonic()
                    continue
                ready = socks.wait([] if neigh is None else [neigh], 0.05)
                mark = time.monotonic()
                if ready:
                    eng.drain(socks, neigh)
                eng.drained_at = mark
                with eng.lock:
                    eng.out.tick()
        except BaseException as exc:  # noqa: BLE001 -- the scan re-raises it
            eng._error = eng._error or exc
            eng.cancel.set()


class DiscoverEngine(RoundScan):
    """Discovery of ``targets``: ``run()`` writes one verdict record a host to ``out``."""

    def __init__(self, targets: TargetSet, *, out: Out, rtt: RttEstimator, retries: int = 1,
                 rate: float | RatePolicy | None = None,
                 cancel: threading.Event | None = None,
                 counters: Counters | None = None, secret: bytes | None = None,
                 window: int = WINDOW) -> None:
        self.targets = targets
        self.out = out
        self.rtt = rtt
        self.retries = max(0, retries)
        self.total = targets.size
        self.answered = Answered(targets.size, times=False)
        self.limiter: AdaptiveRate | PinnedRate | None = None
        self.drained_at = time.monotonic()  # replies read up to here (the horizon)
        if isinstance(rate, RatePolicy):
            # Each answer is charged to the send time of the probe round that drew it.
            self.limiter = AdaptiveRate.for_rtt(rate, rtt, max_batch=TAKE)
            self.limiter.horizon = lambda: self.drained_at
        elif rate:
            self.limiter = PinnedRate(rate, max_batch=TAKE)
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
        self.sockets = PingSockets()  # net.pingsock: the raw sockets, their filters
        self.neigh: NeighWatch | None = None
        self.lock = threading.Lock()  # the window's hosts, the bitmap, ``out``
        self._routes = Routes()
        self._local: set[bytes] = set()
        self._rx: _Receiver | None = None
        # The current window: its hosts to probe, on-link ones, keys; hosts still silent.
        self._hosts: dict[bytes, _Host] = {}
        self._onlink: dict[bytes, _Host] = {}
        self._keys: dict[bytes, int] = {}
        self._left = 0
        self._held: list[Any] = []  # the bound sockets holding our source port
        self._error: BaseException | None = None
        self._last_send = 0.0

    def rate_state(self) -> RateState:
        """The rate in force and why."""
        return RateState(None, "unlimited") if self.limiter is None else self.limiter.state()

    def warnings(self) -> list[str]:
        """Once per sweep: replies the parsers raised on (dropped, counted invalid)."""
        if not self.stats["parse_errors"]:
            return []
        return [f"host discovery could not parse {self.stats['parse_errors']} replies "
                f"({self.parse_error}); it dropped them and went on. Please report this"]

    # -- open / close (engine.rounds calls them once a sweep) -------------------------------
    def _open(self) -> _Receiver:
        self._local = local_addresses()
        rx = self._rx = _Receiver(self)
        rx.start()
        return rx

    def _open_sockets(self) -> None:
        """The raw sockets and the neighbour watch, opened with the first window that has a
        host to probe: a sweep of our own addresses (loopback) needs no privileges."""
        self.sport, self._held = reserve_port(None)
        ident = secrets.randbelow(0xFFFF) + 1
        socks = PingSockets()
        socks.open(self.targets.families, self.sport, ident)
        try:
            self.neigh = NeighWatch()
        except BaseException:
            socks.close()
            raise
        self.ident, self.sockets = ident, socks  # the receive thread starts reading them

    def _close(self) -> None:
        if self._rx is not None:
            self._rx.join()
        self.sockets.close()
        if self.neigh is not None:
            self.neigh.close()
            self.neigh = None

    # -- the hooks of engine.rounds ---------------------------------------------------------
    def parts(self) -> Iterator[list[_Host]]:
        for hosts in self._windows():
            if self.cancel.is_set():
                return
            self._start_window(hosts)
            yield hosts
            self._end_window(hosts)

    def round_limiter(self, rnd: int) -> AdaptiveRate | PinnedRate | None:
        if self._left:
            self.stats["rounds"] = max(self.stats["rounds"], rnd + 1)
            if self.limiter is not None:  # a new window's round 0 is a fresh sample
                self.limiter.new_round(retry=rnd > 0)
        return self.limiter

    def send_round(self, rnd: int, limiter: Any) -> None:
        """Round ``rnd`` to every host of the window still silent."""
        if rnd:
            self._forget_neighbours(first=False)
        self._last_send = time.monotonic()
        for h in list(self._hosts.values()):
            if self.cancel.is_set():
                break
            if self.answered.has(h.index):  # answered while we were sending
                continue
            h.sent.append(time.time())
            # On-link (h.ifindex): only the kernel's ARP / NDP matters; the echo sets it going.
            for sock_name, pkt in PING.make(h.family, h.src, h.addr, sport=self.sport,
                                            ident=self.ident, rnd=rnd, key=h.key,
                                            on_link=bool(h.ifindex)):
                if limiter is not None:
                    limiter.take(1, self.cancel)
                # A full queue, no route, broadcast, a local firewall: the probe stays
                # silent (a retry resends); any other failure is a ScanError.
                if self.sockets.send(sock_name, pkt, h.text, h.family):
                    self.stats["sent"] += 1
                    self.counters.sent += 1
                    if rnd:
                        self.counters.retries += 1
                else:
                    self.stats["send_errors"] += 1
            self._last_send = time.monotonic()

    def after_round(self, rnd: int, result: RoundResult) -> float | None:
        # Every round runs while hosts stay silent (nmap's -sn retries them all); one dump
        # of the neighbour table catches the events the watch lost or has not read yet.
        self._catch_up()
        return 0.0

    # -- windows -------------------------------------------------------------------------
    def _windows(self) -> Iterator[list[_Host]]:
        batch: list[_Host] = []
        index = 0
        for fam, lo, hi in self.targets.ranges:
            size = 4 if fam == 4 else 16
            for value in range(lo, hi + 1):
                addr = value.to_bytes(size, "big")
                batch.append(_Host(index, addr_text(fam, addr), fam, addr))
                index += 1
                if len(batch) >= self.window:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _start_window(self, hosts: list[_Host]) -> None:
        local = [h for h in hosts if is_local(h.family, h.addr, self._local)]
        probe = [h for h in hosts if not is_local(h.family, h.addr, self._local)]
        if probe and not self.sockets:
            self._open_sockets()
        for h in probe:
            h.ifindex = self._routes.onlink(h.family, h.addr)
            h.src = route_source(h.family, h.addr)
            h.key = self.ckey.host_key(h.src, h.addr, self.sport)
        rx = self._rx
        assert rx is not None
        with self.lock:
            rx.all_answered.clear()
            self._hosts = {h.addr: h for h in probe}
            self._keys = {h.addr: h.key for h in probe}
            self._onlink = {h.addr: h for h in probe if h.ifindex}
            self._left = len(probe)
            for h in local:
                self._decide(h, PING.code("localhost-response"), None)
            if not probe:
                rx.all_answered.set()
        self._forget_neighbours(first=True)

    def _end_window(self, hosts: list[_Host]) -> None:
        """The window's rounds are over: its silent hosts are down (unless cancelled)."""
        rx = self._rx
        assert rx is not None
        with self.lock:
            if not self.cancel.is_set():
                silent = [h.index for h in self._hosts.values() if self.answered.mark(h.index)]
                self.write_silent(np.array(silent, np.int64))
                rx.count += len(silent)
            self._hosts, self._keys, self._onlink, self._left = {}, {}, {}, 0
        self.counters.done += len(hosts)

    def _forget_neighbours(self, *, first: bool) -> None:
        """Delete our on-link targets' neighbour entries so the kernel asks afresh. Round 0:
        any left from before (a STALE entry would say "up" for a host that has gone);
        later rounds: the INCOMPLETE ones. A static entry, or one we may not delete
        (no CAP_NET_ADMIN), turns the host over to IP probes."""
        neigh = self.neigh
        if neigh is None or not self._onlink:
            return
        for fam in sorted({h.family for h in self._onlink.values()}):
            for nfam, dst, ifindex, state, _ll in neigh.dump(fam):
                h = self._onlink.get(dst)
                if h is None or nfam != h.family or self.answered.has(h.index):
                    continue
                if state & STATIC:
                    self._to_ip_probes(h)
                    continue
                try:
                    neigh.delete(fam, ifindex, dst)
                    self.stats["neigh_deleted"] += 1
                except PermissionError:
                    if first:
                        self._to_ip_probes(h)
                except OSError:
                    pass

    def _to_ip_probes(self, h: _Host) -> None:
        with self.lock:
            h.ifindex = 0
            self._onlink.pop(h.addr, None)

    # -- receive ---------------------------------------------------------------------------
    def drain(self, socks: PingSockets, neigh: NeighWatch | None) -> None:
        """Read what the sockets and the neighbour watch hold (the receive thread)."""
        now = time.time()
        # Bounded: at most 4096 packets a socket, a flood cannot keep us here; each with
        # the kernel's arrival time.
        for name, fam, data, t, src in socks.replies(now):
            try:
                rep = PING.classify(name, fam, data, src, ident=self.ident, sport=self.sport,
                                    keys=self._keys)
            except Exception as exc:  # noqa: BLE001 -- never a reason to end the sweep
                self.stats["parse_errors"] += 1
                self.parse_error = self.parse_error or f"{type(exc).__name__}: {exc}"
                rep = None
            if rep is None:
                self.stats["invalid"] += 1
                continue
            self.stats["replies"] += 1
            self._answered(rep[2], rep[0], rep[3], t)
        if neigh is not None:
            for fam, dst, _ifindex, state, lladdr in neigh.events():
                self._neighbour(fam, dst, state, lladdr, now)

    def _neighbour(self, fam: int, dst: bytes, state: int, lladdr: bool, now: float) -> None:
        h = self._onlink.get(dst)
        if h is not None and h.family == fam and state & RESOLVED and lladdr:
            self._answered(dst, "arp-response" if fam == 4 else "nd-response", -1, now)

    def _catch_up(self) -> None:
        """One dump of the neighbour table: events lost to a full socket buffer, or that
        arrived since the receive thread last read."""
        if self.neigh is None or not any(not self.answered.has(h.index)
                                         for h in list(self._onlink.values())):
            return
        now = time.time()
        for fam in sorted({h.family for h in list(self._onlink.values())}):
            for nfam, dst, _i, state, lladdr in self.neigh.dump(fam):
                self._neighbour(nfam, dst, state, lladdr, now)

    def _answered(self, addr: bytes, reason: str, rnd: int, now: float) -> None:
        """``addr`` answered at ``now`` (epoch seconds) to round ``rnd`` (-1: unknown)."""
        with self.lock:
            h = self._hosts.get(addr)
            if h is None or self.answered.has(h.index):
                return  # not of this window, a duplicate, or a second probe's answer
            if h.ifindex:  # on-link: the neighbour answered, whatever packet told us first
                reason = "arp-response" if h.family == 4 else "nd-response"
            # A neighbour resolved before our first probe (another program's traffic)
            # is timed from now: an RTT of 0, not an error.
            sent = h.sent[rnd] if 0 <= rnd < len(h.sent) else h.sent[-1] if h.sent else now
            rtt = max(0.0, now - sent)
            self._decide(h, PING.code(reason), rtt)
            self._left -= 1
            if self._left <= 0 and self._rx is not None:
                self._rx.all_answered.set()
            self.rtt.update(rtt)
            if self.limiter is not None:
                self.limiter.replied((sent + self._mono,))
        self.counters.received += 1
        self.counters.open += 1  # "up" hosts, shown as found on a progress bar

    def _decide(self, h: _Host, code: int, rtt: float | None) -> None:
        """Host ``h``'s verdict record (the caller holds the lock)."""
        if self.answered.mark(h.index):
            self.out.emit(h.index, code, rtt)
            assert self._rx is not None
            self._rx.count += 1

