"""TCP connect() scanning with non-blocking sockets and poll().

This is the only place that opens the sockets of a connect scan. The loop keeps at most
``concurrency`` connects in flight; every probe's timeout starts when its connect() was
issued (not when a batch started), and a probe that timed out is retried up to
``retries`` times before it is called filtered/no-response.

Measured here: on loopback the kernel runs the target's whole TCP handshake inside the
connect() call, so the scan is bound by kernel time (about 20 µs a probe), not by Python.
"""

from __future__ import annotations

import _socket
import errno
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from ..errors import ScanError
from ..probes.verdicts import NO_RESPONSE, connect_answer
from .counters import Counters, RttEstimator
from .throttle import TokenBucket

#: A probe: (index in the scan's space, address text, family 4|6, port).
Probe = tuple[int, str, int, int]
#: emit(index, code, rtt_seconds or None): code is the connect()'s errno (0 = open), or
#: NO_RESPONSE (-1) after the last retry; probes.verdicts.connect_verdict names it.
Emit = Callable[[int, int, "float | None"], None]
#: emit_many([(index, code, rtt_seconds), ...]): the answers a pass of the fill loop took
#: (probes.records.RecordBuffer.emit_many); without it, emit is called for each.
EmitMany = Callable[[list[tuple[int, int, float]]], None]

_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_UNLIMITED = 1 << 62
#: New connects per pass before the loop collects completions (without waiting). On a LAN
#: the kernel answers inside connect() itself, so the window never fills: a pass that opened
#: all 2,048 sockets of -T4's window before reading any completion held 2,048 sockets (out
#: of the CPU's caches) for nothing. Measured on a RangeLab /24 x 100 ports: 0.46-0.49 s
#: with the whole window per pass, 0.34-0.39 s with 64 (in flight then: 64). A slow path
#: still fills the whole window, 64 connects per pass.
FILL_BURST = 64
#: The smallest window the loss response cuts to (nmap's initial group window is 10).
MIN_WINDOW = 10
_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
_LINGER_RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # l_onoff=1, l_linger=0: close() sends RST

# Local resource exhaustion: not an answer from the target. Back off and try again.
_BACKOFF = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.EADDRNOTAVAIL, errno.EAGAIN}


class ConnectEngine:
    """Runs probes through non-blocking connect() calls; reports each verdict via ``emit``.

    It counts only what it sends (``sent``, ``retries``); verdicts are counted where they
    are collected (``engine.sink.RecordSink``).
    """

    def __init__(
        self,
        *,
        emit: Emit,
        concurrency: int,
        rtt: RttEstimator,
        retries: int,
        counters: Counters | None = None,
        cancel: threading.Event | None = None,
        scan_delay: float = 0.0,
        tick: Callable[[], None] | None = None,
        rate: float | None = None,
        host_timeout: float | None = None,
        t_start: float | None = None,
        emit_many: EmitMany | None = None,
    ) -> None:
        self.rate = rate  # connect() calls per second, None = as fast as the window allows
        # RATE: the token bucket every scan kind is paced by (net.throttle), asked without
        # waiting (``grant``) since this loop must go on polling. Its credit starts at
        # ``t_start`` (time.monotonic(), the same in every process): worker processes share
        # the scan's, so one that started late has its (capped) credit at once. No adaptive
        # rate (net.ratectl) here: the window of connects in flight is the congestion
        # control, as nmap's (a timeout holds its slot for the RTT timeout).
        self.bucket = None if rate is None else TokenBucket(rate, max_batch=1, start=t_start)
        self.host_timeout = host_timeout  # seconds from a host's first probe; then give up
        self._first_probe: dict[str, float] = {}
        self.emit = emit
        self.emit_many = emit_many
        self.tick = tick  # called after every poll (<= 50 ms apart): lets buffers age out
        self.concurrency = max(1, concurrency)
        self.rtt = rtt
        self.retries = retries
        self.counters = counters if counters is not None else Counters()
        self.cancel = cancel if cancel is not None else threading.Event()
        self.scan_delay = scan_delay

    def run(self, probes: Iterator[Probe]) -> None:
        """Send every probe; returns when all have a verdict or the scan is cancelled."""
        # poll(), not epoll: registering a socket with poll() is no system call, with
        # epoll it is one (epoll_ctl) and closing the socket another behind the scenes;
        # a pass hands the kernel at most the window's fds, and on a LAN only
        # FILL_BURST of them. Measured (RangeLab /24 x 100 ports, -T4, in process):
        # 320-355 ms against 333-386 ms with epoll, alternating runs.
        spare: dict[int, list[_socket.socket]] = {4: [], 6: []}
        try:
            self._loop(iter(probes), select.poll(), spare)
        finally:
            for pool in spare.values():
                for s in pool:
                    s.close()

    def _loop(self, probes: Iterator[Probe], ep: select.poll,
              spare: dict[int, list[_socket.socket]]) -> None:
        c = self.counters
        emit = self.emit
        rtt = self.rtt
        cancel = self.cancel
        max_tries = self.retries + 1
        # fd -> [sock, index, addr, family, port, tries, t_sent]
        pending: dict[int, list] = {}
        # (deadline, fd, pending entry), in send order: the entry, not the socket, tells
        # a timer from its probe's successor (a socket and its fd are used again).
        timers: deque[tuple[float, int, list]] = deque()
        again: deque[tuple[int, str, int, int, int]] = deque()  # (index, addr, fam, port, tries)
        limit = cap = self.concurrency
        # LOSS: an answer to a retried probe means its earlier try was lost (a silent host
        # answers no try, so filtering never counts). The window of connects in flight is
        # halved then, at most once per RTT timeout, and grows back by one per window of
        # answers (nmap's congestion avoidance), up to ``cap``. Without it a -T4 window of
        # 2,048 behind a link carrying 5,000 probes/s lost ~28% of the open ports.
        cut_until = 0.0
        growth = 0.0
        exhausted = False
        clock = time.monotonic
        last_send = 0.0
        rate = self.rate
        bucket = self.bucket
        host_timeout = self.host_timeout
        first_probe = self._first_probe  # host -> time of its first probe (host_timeout)
        # ONE HAND-OFF A PASS: the answers the fill took (on a LAN, all of them: ASK AGAIN, below)
        # go out together at the pass's end, and the RTT estimator takes the pass's largest
        # of them as its one sample (they are microseconds apart). Per answer, emit() and
        # rtt.update() were 20 and 8 ms of a 25,600-probe scan's ~180 ms.
        answered: list[tuple[int, int, float]] = []
        emit_many = self.emit_many

        while True:
            if cancel.is_set():
                for entry in pending.values():
                    entry[0].close()
                return
            # The rate limiter hands out what is due, so a slow pass is made up in the next
            # one and the mean rate holds. SMOOTH START: the bucket's credit is capped at
            # CREDIT_SECONDS of the rate, so a late start (a worker's 0.1-0.5 s import) or a
            # stall is not made up in one burst (measured: 8,700/s at a 3,000/s limit).
            budget = _UNLIMITED if bucket is None else bucket.grant(limit - len(pending))
            # 1. Fill the window: retries first (they are older), then new probes; at most
            # FILL_BURST of them before the completions are read (what is granted and not
            # sent goes back to the bucket below).
            burst = FILL_BURST
            timeout = rtt.timeout  # the estimate changes only when completions are read
            while len(pending) < limit and budget > 0 and burst > 0:
                burst -= 1
                if again:
                    index, addr, fam, port, tries = again.popleft()
                elif not exhausted:
                    try:
                        index, addr, fam, port = next(probes)
                    except StopIteration:
                        exhausted = True
                        break
                    tries = 0
                else:
                    break
                if host_timeout is not None:
                    began = first_probe.setdefault(addr, clock())
                    if clock() - began > host_timeout:
                        c.skipped += 1  # nmap gives up on the host: no probe, no row
                        continue
                if self.scan_delay:
                    wait = last_send + self.scan_delay - clock()
                    if wait > 0 and cancel.wait(wait):
                        break
                budget -= 1
                pool = spare[fam]
                try:
                    # The C socket type: socket.socket's Python __init__/close cost ~1.3 µs.
                    s = pool.pop() if pool else _socket.socket(_AF[fam], _STREAM_NONBLOCK)
                except OSError as exc:
                    if exc.errno in _BACKOFF and pending:
                        limit = cap = max(1, len(pending))  # the fd budget was smaller
                        again.appendleft((index, addr, fam, port, tries))
                        budget += 1  # not sent
                        break
                    raise ScanError(f"cannot open a socket: {exc}") from exc
                now = clock()
                last_send = now
                sa = (addr, port)
                err = s.connect_ex(sa)
                if err == errno.ECONNABORTED:  # a refused socket, used again: see _reuse
                    err = s.connect_ex(sa)
                c.sent += 1
                if err == errno.EINPROGRESS:
                    err = s.connect_ex(sa)  # see ASK AGAIN below
                if err == errno.ECONNREFUSED:
                    # The usual answer (every closed port), first: what the general path
                    # below does for it (_reuse keeps the socket), without its tests.
                    pool.append(s)
                    answered.append((index, err, clock() - now))
                    if tries and now >= cut_until:  # LOSS (above)
                        limit, cut_until = max(MIN_WINDOW, limit // 2), now + timeout
                    continue
                if err == errno.EALREADY:
                    fd = s.fileno()
                    entry = pending[fd] = [s, index, addr, fam, port, tries + 1, now]
                    timers.append((now + timeout, fd, entry))
                    ep.register(fd, select.POLLOUT)
                    continue
                if err in _BACKOFF:
                    s.close()
                    c.sent -= 1  # refused by our own kernel: no packet left the host
                    budget += 1
                    again.appendleft((index, addr, fam, port, tries))
                    limit = cap = max(1, len(pending))
                    break
                # Answered within connect() itself (loopback does this often), or by the
                # time it returned (a LAN's reset or SYN-ACK: ASK AGAIN, below).
                if err == 0 and _is_self_connect(s):
                    s.close()
                    c.retries += 1  # SELF-CONNECT: sent again, so sent = probes + retries
                    again.append((index, addr, fam, port, tries))
                    continue
                if err == 0:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                _reuse(s, err, pool)
                if connect_answer(err) is None:
                    again.append((index, addr, fam, port, tries + 1))
                    continue
                answered.append((index, err, clock() - now))
                if tries and now >= cut_until:  # LOSS (above)
                    limit, cut_until = max(MIN_WINDOW, limit // 2), now + timeout

            if answered:
                if limit < cap:
                    growth += len(answered) / limit
                    if growth >= 1.0:
                        limit, growth = min(cap, limit + int(growth)), growth % 1.0
                rtt.update(max(a[2] for a in answered))
                if emit_many is not None:
                    emit_many(answered)
                else:
                    for a in answered:
                        emit(*a)
                answered = []
            if bucket is not None:
                bucket.refund(budget)  # granted, not sent: the next pass has it
            if not pending:
                if exhausted and not again:
                    return
                if budget <= 0 and rate is not None:
                    cancel.wait(1.0 / rate)  # nothing in flight: sleep until a probe is due
                continue

            # 2. Wait for completions, at most until the oldest probe times out.
            now = clock()
            wait = 0.05 if rate is None else min(0.05, max(0.0005, 1.0 / rate))
            if burst <= 0:
                wait = 0.0  # more to send at once: only collect what has completed
            if timers:
                wait = min(wait, max(0.0, timers[0][0] - now))
            for fd, _events in ep.poll(wait * 1000.0):
                entry = pending[fd]
                s = entry[0]
                # connect() again gives the result (as SO_ERROR would) and resets a refused
                # socket, so its next probe needs no ECONNABORTED connect() (ASK AGAIN, below).
                err = s.connect_ex((entry[2], entry[4]))
                if err == errno.EALREADY:
                    continue  # not answered after all: still registered, still pending
                del pending[fd]
                ep.unregister(fd)
                now = clock()
                if err == 0 and _is_self_connect(s):
                    s.close()
                    c.retries += 1
                    again.append((entry[1], entry[2], entry[3], entry[4], entry[5] - 1))
                    continue
                if err == 0:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                _reuse(s, err, spare[entry[3]])
                if connect_answer(err) is None:
                    self._expire(entry, again, max_tries)
                    continue
                sample = now - entry[6]
                rtt.update(sample)
                emit(entry[1], err, sample)
                if entry[5] > 1:  # LOSS (above): a retry answered
                    if now >= cut_until:
                        limit, cut_until = max(MIN_WINDOW, limit // 2), now + rtt.timeout
                elif limit < cap:
                    growth += 1.0 / limit
                    if growth >= 1.0:
                        limit, growth = min(cap, limit + 1), growth - 1.0

            if self.tick is not None:
                self.tick()
            # 3. Expire probes whose deadline passed; the deque is in deadline order.
            now = clock()
            while timers and timers[0][0] <= now:
                _deadline, fd, entry = timers.popleft()
                late = pending.get(fd)
                if late is not entry:
                    continue  # answered already; the fd (or socket) may be in use again
                del pending[fd]
                ep.unregister(fd)
                late[0].close()
                self._expire(late, again, max_tries)

    def _expire(self, entry: list, again: deque, max_tries: int) -> None:
        """A probe got no answer in time: retry it, or record filtered/no-response."""
        tries = entry[5]
        if self.host_timeout is not None and (
            time.monotonic() - self._first_probe.get(entry[2], 0.0) > self.host_timeout
        ):
            self.counters.skipped += 1  # the host timed out: no retry, no row
            return
        if tries < max_tries:
            self.counters.retries += 1
            again.append((entry[1], entry[2], entry[3], entry[4], tries))
        else:
            self.emit(entry[1], NO_RESPONSE, None)


# ASK AGAIN: why the fill calls connect() a second time at once.
#
# On a LAN the answer is usually in before the first connect() returns EINPROGRESS: the
# SYN leaves from inside connect(), the softirq that runs when the send path re-enables
# bottom halves carries it through the veth/NIC driver to the target and the reset or
# SYN-ACK back, and release_sock() at connect()'s end runs the socket's backlog, which
# holds that answer (net/ipv4/af_inet.c, __inet_stream_connect; measured on a RangeLab
# /24: every one of 25,600 probes). A second connect() on the same socket then returns
# the verdict (0 when connected, else the error, e.g. ECONNREFUSED, and a refused socket
# is reset for use again), or EALREADY while the probe is really in flight. The answer
# costs one cheap system call instead of a poll registration, a poll() share and a
# getsockopt(SO_ERROR) (plus, for a refused socket, an ECONNABORTED connect(): see
# _reuse). A probe that was in flight is answered the same way once poll() reports it:
# connect() again, not getsockopt(SO_ERROR). Measured on the /24 x 100 ports, C: 0.118 s
# against 0.131 s; the engine: 0.29-0.47 s against 0.16 s. A path with a real round trip
# pays one EALREADY connect() (~0.3 us of kernel time) a probe.


def _reuse(s: _socket.socket, err: int, pool: list[_socket.socket]) -> None:
    """Close ``s``, or keep it for the next probe of its family when a reset refused it.

    SOCKETS USED AGAIN. A connect scan's usual answer is a reset (every closed port), and a
    socket refused by one is closed on our side (TCP_CLOSE, its port released): Linux connects
    it again. The connect() that reports the refusal resets it (the engine asks connect(), not
    SO_ERROR, for every result: ASK AGAIN, below); had the error been read otherwise, its next
    connect() returns ECONNABORTED at once, resetting it, no packet sent (net/ipv4/af_inet.c,
    __inet_stream_connect). That saves socket() and close() a probe, the costliest system calls
    after connect() (25% and 12% of the loop's samples): a RangeLab /24 x 100 ports at -T4 took
    200-235 ms in the engine against 250-290 ms. Only a refused socket is kept: one that
    connected, timed out or drew an ICMP error is closed. The pool holds at most the window's
    sockets (the fill takes from it before opening new ones)."""
    if err == errno.ECONNREFUSED:
        pool.append(s)
    else:
        s.close()


def _is_self_connect(s: _socket.socket) -> bool:
    """A connect to 127.0.0.1:P can be given source port P and 'succeed' against itself."""
    try:
        return bool(s.getsockname() == s.getpeername())
    except OSError:
        return False
