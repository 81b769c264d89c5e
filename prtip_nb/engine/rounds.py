"""The round loop that every stateless scan kind runs: written once, with hooks for what
differs (SYN's retry rule, UDP's ICMP rate-limit pacing, discovery's windows of hosts).

A scan kind (engine.syn.SynEngine, engine.udp.UdpEngine, engine.pingsweep.DiscoverEngine)
opens its sockets and receive thread, sends a round, and closes them; ``RoundScan`` owns
the rest:

    for each part of the shard (kind.parts(); default: the whole shard at once)
      for each round r = 0 .. retries:
        limiter = kind.round_limiter(r)      # the rate for this round (hook)
        kind.send_round(r, limiter)          # round 0: every index; r > 0: the silent ones
        stop if cancelled or every index answered
        wait the quiet period                # srtt + 4·rttvar after the last probe
        pause = kind.after_round(r, result)  # None: no more rounds (hook)
        stop if every index answered; else wait ``pause`` more
    close; then filtered/no-response (UDP: open|filtered, discovery: down) records for
    every silent index (``write_silent``).

The raw-socket kinds (SYN, UDP) also share the transmit side's walk and send loop:
``round_batches`` (a round's indices, split into hosts and ports) and ``send_runs`` (runs
of at most RUN probes, each granted by the limiter, behind the capture's backpressure;
``before_run`` is UDP's pacer), the capture's interface and the warnings (each kind's
wording as data). What a probe's bytes are is the kind's probe module (probes.tcpsyn,
probes.udpprobe).

The receive thread dedups (the answered bitmap) and times replies (the RTT estimator);
the rate limiter is a token bucket or the adaptive controller (net.ratectl). Discovery's
hooks: windows of hosts as parts (the neighbour entries in flight stay bounded), the
neighbour table forgotten before a retry round (``send_round``) and read once more after
each quiet period (``after_round``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from ..net.capture import interface_of
from ..probes.records import DTYPE as RECORD_DTYPE
from ..probes.records import NO_RESPONSE
from ..targets import iter_batches
from ..targets.space import split_index

if TYPE_CHECKING:
    from ..net.counters import Counters, RttEstimator
    from ..net.rawsock import RawSender
    from ..net.synstate import Answered, HostTable, PortIndex
    from ..targets import Permutation, TargetSet, TargetSpace
    from .synrx import Out

__all__ = ["RUN", "RoundResult", "RoundScan"]

BATCH = 4096  # indices per numpy batch (probes to send, silent records)
RUN = 256  # probes per sendmmsg call when the rate is unlimited


class _Rx(Protocol):
    count: int
    all_answered: threading.Event

    def join(self) -> None: ...


@dataclass(frozen=True)
class RoundResult:
    """What one round did, for ``after_round``: probes sent (retries included), indices
    newly answered by the end of its quiet period, and when it started / stopped sending."""

    sent: int
    new: int
    t0: float
    t_sent: float


class RoundScan:
    """The base of a stateless scan kind: ``run()`` drives the rounds through the hooks.

    Subclasses set the attributes below in ``__init__`` and implement ``_open``,
    ``_close``, ``round_limiter``, ``send_round`` and ``after_round``; ``parts`` is
    optional.
    """

    total: int  # probes of round 0: the shard's positions from ``start`` on
    retries: int
    cancel: threading.Event
    counters: Counters
    rtt: RttEstimator
    space: TargetSpace
    perm: Permutation
    shard: tuple[int, int]
    start: int
    answered: Answered
    out: Out
    _held: list
    _error: BaseException | None
    _first_send: float
    _last_send: float
    _lock: threading.Lock  # the counters and send times, shared by transmit threads
    _capture: Any  # net.capture.Capture, once open
    _rx: Any  # the receive thread (synrx.Receiver or a subclass), once open
    stats: dict[str, float]
    targets: TargetSet
    hosts: HostTable
    port_index: PortIndex
    t_base: float  # time.time() at the start; send times are relative to it
    #: The limiters' clock (monotonic) minus the send-time scale (time.time() - t_base),
    #: fixed when the kind opens: send times are stamped from the limiter's grant with
    #: it, and the adaptive rate maps replies' send times back with the same constant.
    #: None: stamped with time.time() after the grant.
    clock_offset: float | None = None

    #: A kind's words for its warnings: what its probes are called, and what a port whose
    #: probe could not be sent is reported as.
    PROBES: ClassVar[str] = "probes"
    UNSENT: ClassVar[str] = "filtered"

    # -- hooks ---------------------------------------------------------------------------
    def _open(self) -> _Rx:
        """Open the capture ring and senders, start the receive thread; return it."""
        raise NotImplementedError

    def _close(self) -> None:
        """Join the receive thread, close what ``_open`` opened, fill ``stats``."""
        raise NotImplementedError

    def round_limiter(self, rnd: int) -> Any:
        """The limiter for round ``rnd``: anything with ``take(want, cancel)`` (a token
        bucket, the adaptive controller), or None: unlimited."""
        raise NotImplementedError

    def send_round(self, rnd: int, limiter: Any) -> None:
        """Send round ``rnd``. An exception on a transmit thread of its own is kept in
        ``_error`` (and cancels the scan); one raised here closes the kind and goes up."""
        raise NotImplementedError

    def after_round(self, rnd: int, result: RoundResult) -> float | None:
        """After the quiet period: None ends the retries, else extra seconds to wait."""
        raise NotImplementedError

    def kind_warnings(self) -> list[str]:
        """What only this kind has to say to a user (UDP: the target's ICMP limit)."""
        return []

    def before_run(self) -> None:
        """Called before each run of probes is sent (UDP: the pacer's check)."""

    def parts(self) -> Iterator[object]:
        """The parts of the shard that run their rounds one after another, between one
        ``_open`` and one ``_close`` (default: one part, the whole shard).

        Why a hook: host discovery probes a window of hosts at a time, so that the
        neighbour entries in flight (the kernel's table holds 1,024 by default) and its
        per-host state stay bounded. A kind sets a part up before yielding it, and after
        the yield (its rounds are over) may record its silent indices (``write_silent``);
        a part whose indices all have a verdict then leaves nothing to ``_emit_silent``."""
        yield None

    # -- what every raw-socket kind shares -----------------------------------------------
    def warnings(self) -> list[str]:
        """What a user should hear about this run (lost packets, refused sends)."""
        out = []
        if self.stats.get("capture_drops"):
            out.append(f"the packet capture dropped {self.stats['capture_drops']} replies "
                       "(the receive thread fell behind); set a lower rate")
        if self.stats.get("send_errors"):
            out.append(f"{self.stats['send_errors']} {self.PROBES} could not be sent (no "
                       f"route, or a local firewall); their ports are reported {self.UNSENT}")
        out += self.kind_warnings()
        if self._rx is not None:  # parser exceptions, said once
            out += self._rx.warnings()
        return out

    def capture_interface(self) -> str | None:
        """Where replies arrive: the interface that holds our source address. One target:
        that interface; loopback: lo; several targets elsewhere: every interface (None;
        the capture's filter still keeps only our port)."""
        if self.targets.is_loopback:
            return "lo"
        if self.targets.size == 1:
            first = self.hosts.info(0)
            return interface_of(first.family, first.src, first.dst)
        return None

    def round_batches(self, rnd: int, shard: tuple[int, int] | None = None,
                      start: int | None = None) -> Iterator[tuple[np.ndarray, ...]]:
        """(indices, host indices, ports) of round ``rnd``'s probes, BATCH at a time, in
        the permuted order: every index of ``shard`` (default: the scan's) from ``start``
        on in round 0, only the unanswered ones after; none once cancelled."""
        for js in iter_batches(self.space, self.perm, shard=shard or self.shard,
                               start=self.start if start is None else start, batch=BATCH):
            if self.cancel.is_set():
                return
            if rnd:
                js = js[self.answered.unanswered(js)]
                if not len(js):
                    continue
            h, pidx = split_index(js, self.hosts.size)
            yield js, h, self.port_index.ports(pidx)

    def send_runs(self, sender: RawSender, js: np.ndarray, rnd: int, limiter: Any) -> int:
        """Send the probes loaded into ``sender`` for indices ``js``, in runs of at most
        RUN, each granted by ``limiter`` (None: unlimited); return how many were sent."""
        total, off = len(js), 0
        c, capture, rx = self.counters, self._capture, self._rx
        assert capture is not None and rx is not None
        sent_at = self.answered.sent_at
        while off < total:
            if self.cancel.is_set():
                break
            # BACKPRESSURE: half the capture ring waits for the receiver; let it catch up
            # rather than have the kernel drop replies (a retry round costs far more).
            while capture.congested() and rx.thread.is_alive():
                time.sleep(0.0003)
            self.before_run()
            want = min(RUN, total - off)
            granted = None
            if limiter is not None:
                count, granted = limiter.take_at(want, self.cancel)
            else:
                count = want
            if not count:
                break
            if sent_at is not None:
                # THE GRANT'S TIME, when the limiter has one: the epoch the adaptive rate
                # charged these probes to (a stamp read now may be a GIL wait later).
                offset = self.clock_offset
                sent_at[js[off : off + count]] = (
                    time.time() - self.t_base if granted is None or offset is None
                    else granted - offset)
            t = time.monotonic()
            sender.send(off, count)
            off += count
            with self._lock:
                c.sent += count
                if rnd:
                    c.retries += count
                else:
                    self._first_send = self._first_send or t
                self._last_send = time.monotonic()
        return off

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        """Send, resend and collect until every index has a verdict, or cancel."""
        try:
            if self.total > 0:
                self._rounds()
        finally:
            for s in self._held:
                s.close()
            self._held = []

    def _rounds(self) -> None:
        rx = self._open()
        try:
            for _part in self.parts():
                if self.cancel.is_set():
                    break
                self._part_rounds(rx)
        finally:
            self._close()
        if self._error is not None:
            raise self._error
        if not self.cancel.is_set() and rx.count < self.total:
            self._emit_silent()

    def _part_rounds(self, rx: _Rx) -> None:
        for rnd in range(self.retries + 1):
            before, sent_before = rx.count, self.counters.sent
            t0 = time.monotonic()
            self.send_round(rnd, self.round_limiter(rnd))
            t_sent = time.monotonic()
            if self.cancel.is_set() or rx.all_answered.is_set():
                break
            self._quiet(rx, 0.0)
            pause = self.after_round(rnd, RoundResult(
                self.counters.sent - sent_before, rx.count - before, t0, t_sent))
            if pause is None or rx.all_answered.is_set():
                break
            if pause > 0:
                self._quiet(rx, pause)

    def _quiet(self, rx: _Rx, at_least: float) -> None:
        """Wait until the last probe's timeout (and ``at_least``) has passed, or every
        index answered."""
        while not (self.cancel.is_set() or rx.all_answered.is_set()):
            left = self._last_send + max(self.rtt.timeout, at_least) - time.monotonic()
            if left <= 0:
                return
            rx.all_answered.wait(min(left, 0.05))

    def _emit_silent(self) -> None:
        """A NO_RESPONSE record for every index of the shard that never answered."""
        for js in iter_batches(self.space, self.perm, shard=self.shard, start=self.start,
                               batch=BATCH):
            self.write_silent(js[self.answered.unanswered(js)])

    def write_silent(self, silent: np.ndarray) -> None:
        """NO_RESPONSE records for the indices ``silent`` (they never answered)."""
        if len(silent):
            rec = np.zeros(len(silent), RECORD_DTYPE)
            rec["index"], rec["code"], rec["rtt_ms"] = silent, NO_RESPONSE, np.nan
            rec["t_us"] = time.time_ns() // 1000
            self.out.write(rec.tobytes())
