"""Send the OS detection probes and collect their replies (IPv4, raw sockets).

The probes, their schedule (``osdetect.schedule.OsSchedule``: SEQ 1-6 100 ms apart, then
ECN, T2-T7, U1 and the two echoes, then retries of the unanswered) and the analysis are
pure (``prtip_nb.osdetect``); this module is the one that touches sockets.

Hosts run in parallel: each has its own source ports, so a reply names its host and probe.
Sending goes through one IPPROTO_RAW socket (we write the IP header: DF, TOS, TTL and ids
are part of the probes); replies are read from two raw sockets (IPPROTO_TCP and
IPPROTO_ICMP), which get a copy of every TCP and ICMP packet this namespace receives. Every
loop is bounded: the schedule's probes per host, and a deadline.
"""

from __future__ import annotations

import random
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import PrivilegeError, ScanError
from ..osdetect.probes import ProbeSet, build_probes
from ..osdetect.replies import Reply, ReplyMatcher, parse_reply
from ..osdetect.schedule import OS_SEQ_GAP, OsSchedule
from .rawsock import PRIVILEGE_FIX, open_raw_socket
from .synstate import route_source

__all__ = ["OS_SEQ_GAP", "OsProbeRun", "OsTarget", "on_link", "probe_hosts"]



@dataclass(frozen=True)
class OsTarget:
    """A host to fingerprint and the ports the scan found (None: none of that kind)."""

    host: str
    open_port: int | None
    closed_port: int | None
    closed_udp: int


@dataclass
class OsProbeRun:
    """What one host's probing gave: the probes, their send times and the replies."""

    target: OsTarget
    probes: ProbeSet
    sent: dict[str, float] = field(default_factory=dict)
    replies: dict[str, Reply] = field(default_factory=dict)
    tries: dict[str, int] = field(default_factory=dict)
    on_link: bool = False


def on_link(dst: str) -> bool:
    """True when the kernel's main table reaches ``dst`` without a gateway (one hop)."""
    want = struct.unpack("<I", socket.inet_aton(dst))[0]
    best, gateway = -1, 1
    try:
        with open("/proc/net/route") as fh:
            next(fh, None)
            for line in fh:
                f = line.split()
                if len(f) < 8:
                    continue
                net, gw, mask = int(f[1], 16), int(f[2], 16), int(f[7], 16)
                if want & mask == net and bin(mask).count("1") > best:
                    best, gateway = bin(mask).count("1"), gw
    except OSError:
        return False
    return best >= 0 and gateway == 0


def _receivers() -> list[socket.socket]:
    socks = []
    try:
        for proto in (socket.IPPROTO_TCP, socket.IPPROTO_ICMP):
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            socks.append(s)
    except PermissionError as exc:
        for s in socks:
            s.close()
        raise PrivilegeError(f"OS detection needs raw sockets ({exc.strerror}): "
                             f"{PRIVILEGE_FIX}") from None
    return socks


def probe_hosts(targets: Sequence[OsTarget], *, timeout: float = 0.5, retries: int = 1,
                seq_gap: float = OS_SEQ_GAP, cancelled: Callable[[], bool] = lambda: False,
                rng: random.Random | None = None) -> list[OsProbeRun]:
    """Probe every target (IPv4) in parallel; one OsProbeRun per target, in order."""
    rng = rng or random.Random()
    runs: list[OsProbeRun] = []
    for k, t in enumerate(targets):
        try:
            dst = socket.inet_aton(t.host)
        except OSError:
            raise ScanError(f"OS detection is IPv4 only for now; cannot probe {t.host!r}") \
                from None
        src = route_source(4, dst)
        base = 20000 + (k * 32 + rng.randrange(0, 32)) % 40000
        probes = build_probes(
            src, dst, open_port=t.open_port or 1, closed_port=t.closed_port or 1,
            closed_udp=t.closed_udp, sport_base=base, seq_base=rng.getrandbits(32),
            ack=rng.getrandbits(32), icmp_id=rng.getrandbits(16) & 0xFFFE,
            ip_id=rng.getrandbits(16))
        runs.append(OsProbeRun(t, probes, on_link=on_link(t.host)))
    if not runs:
        return runs
    send = open_raw_socket(4)
    recv = _receivers()
    matchers = [(ReplyMatcher(r.probes.probes["SEQ1"].packet[16:20], r.probes), k)
                for k, r in enumerate(runs)]
    sched = OsSchedule([(r.target.open_port is not None, r.target.closed_port is not None)
                        for r in runs], seq_gap=seq_gap, timeout=timeout, retries=retries)
    # BOUNDED: the schedule ends after its last round; this deadline holds whatever happens.
    stop_at = time.monotonic() + 6 * seq_gap + (1 + max(0, retries)) * timeout + 5.0

    def transmit(run: OsProbeRun, name: str) -> None:
        p = run.probes[name]
        run.sent[name] = time.monotonic()
        run.tries[name] = run.tries.get(name, 0) + 1
        try:
            send.sendto(p.packet, (run.target.host, 0))
        except OSError:
            pass  # unreachable now: the probe goes unanswered, as a filtered one would

    def drain(until: float) -> None:
        while not cancelled():
            left = until - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select(recv, [], [], min(left, 0.05))
            now = time.monotonic()
            for s in ready:
                for _ in range(256):  # bounded: the next select picks up the rest
                    try:
                        pkt = s.recv(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    r = parse_reply(pkt, now)
                    if r is None:
                        continue
                    for m, k in matchers:
                        name = m.match(r)
                        if name is not None:
                            runs[k].replies.setdefault(name, r)
                            sched.replied(k, name)
                            break
            if sched.all_answered():
                return

    try:
        while not sched.finished and not cancelled() and time.monotonic() < stop_at:
            for k, name in sched.due(time.monotonic()):
                transmit(runs[k], name)
            if not sched.finished:
                drain(min(sched.wakeup(), stop_at))
    finally:
        send.close()
        for s in recv:
            s.close()
    return runs
