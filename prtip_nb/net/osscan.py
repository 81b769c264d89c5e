"""Send the OS detection probes and collect their replies (IPv4, raw sockets).

The probes, their schedule (``osdetect.schedule.OsSchedule``: SEQ 1-6 100 ms apart, then
ECN, T2-T7, U1 and the two echoes, then retries of the unanswered) and the analysis are
pure (``prtip_nb.osdetect``); this module is the one that touches sockets.

Hosts run in parallel: each has its own source ports, so a reply names its host and probe.
Sending goes through one IPPROTO_RAW socket (we write the IP header: DF, TOS, TTL and ids
are part of the probes); replies come from net.rawrecv's raw TCP and ICMP sockets. The loop
is engine.probeloop's (bounded: the schedule's probes per host, and a deadline).
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import ScanError
from ..osdetect.probes import ProbeSet, build_probes
from ..osdetect.replies import Reply, ReplyMatcher, parse_reply
from ..osdetect.schedule import OS_SEQ_GAP, OsSchedule
from .rawrecv import Packet, RawReceivers
from .rawsock import open_raw_socket
from .synstate import route_source

__all__ = ["OS_SEQ_GAP", "OsProbeRun", "OsProber", "OsTarget", "on_link"]



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


class OsProber:
    """The OS probes of ``targets`` (IPv4), all hosts in parallel: the sockets and the
    matching; ``OsSchedule`` says when each probe goes, engine.probeloop runs the loop.
    ``runs`` holds one OsProbeRun per target, in order. Use as a context manager (it owns
    its sockets); ``budget`` is the deadline the loop is given."""

    def __init__(self, targets: Sequence[OsTarget], *, timeout: float = 0.5, retries: int = 1,
                 seq_gap: float = OS_SEQ_GAP, rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        self.runs: list[OsProbeRun] = []
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
            self.runs.append(OsProbeRun(t, probes, on_link=on_link(t.host)))
        self.sched = OsSchedule([(r.target.open_port is not None,
                                  r.target.closed_port is not None) for r in self.runs],
                                seq_gap=seq_gap, timeout=timeout, retries=retries)
        # The schedule ends after its last round; this holds whatever happens.
        self.budget = 6 * seq_gap + (1 + max(0, retries)) * timeout + 5.0
        self._matchers = [(ReplyMatcher(r.probes.probes["SEQ1"].packet[16:20], r.probes), k)
                          for k, r in enumerate(self.runs)]
        self._send: socket.socket | None = None
        self._recv: RawReceivers | None = None

    def __enter__(self) -> OsProber:
        if self.runs:
            self._recv = RawReceivers([4], what="OS detection")
            try:
                self._send = open_raw_socket(4)
            except BaseException:
                self._recv.close()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._send is not None:
            self._send.close()
        if self._recv is not None:
            self._recv.close()

    # -- engine.probeloop.Prober ------------------------------------------------------------
    def finished(self) -> bool:
        return self.sched.finished or self._send is None

    def send_due(self, now: float) -> None:
        assert self._send is not None
        for k, name in self.sched.due(now):
            run = self.runs[k]
            run.sent[name] = time.monotonic()
            run.tries[name] = run.tries.get(name, 0) + 1
            try:
                self._send.sendto(run.probes[name].packet, (run.target.host, 0))
            except OSError:
                pass  # unreachable now: the probe goes unanswered, as a filtered one would

    def wakeup(self, now: float) -> float:
        # Every reply in: the schedule ends at once (its ``due`` says finished).
        return now if self.sched.all_answered() else self.sched.wakeup()

    def poll(self, timeout: float) -> list[Packet]:
        assert self._recv is not None
        return self._recv.poll(timeout)

    def receive(self, packet: Packet) -> None:
        r = parse_reply(packet.data, packet.t)
        if r is None:
            return
        for m, k in self._matchers:
            name = m.match(r)
            if name is not None:
                self.runs[k].replies.setdefault(name, r)
                self.sched.replied(k, name)
                return
