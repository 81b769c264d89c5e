"""TCP connect() scanning with non-blocking sockets and epoll.

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

_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_UNLIMITED = 1 << 62
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
        self.tick = tick  # called after every poll (<= 50 ms apart): lets buffers age out
        self.concurrency = max(1, concurrency)
        self.rtt = rtt
        self.retries = retries
        self.counters = counters if counters is not None else Counters()
        self.cancel = cancel if cancel is not None else threading.Event()
        self.scan_delay = scan_delay

    def run(self, probes: Iterator[Probe]) -> None:
        """Send every probe; returns when all have a verdict or the scan is cancelled."""
        ep = select.epoll()
        try:
            self._loop(iter(probes), ep)
        finally:
            ep.close()

    def _loop(self, probes: Iterator[Probe], ep: select.epoll) -> None:
        c = self.counters
        emit = self.emit
        rtt = self.rtt
        cancel = self.cancel
        max_tries = self.retries + 1
        # fd -> [sock, index, addr, family, port, tries, t_sent]
        pending: dict[int, list] = {}
        timers: deque[tuple[float, int, _socket.socket]] = deque()  # in send order
        again: deque[tuple[int, str, int, int, int]] = deque()  # (index, addr, fam, port, tries)
        limit = self.concurrency
        exhausted = False
        clock = time.monotonic
        last_send = 0.0
        rate = self.rate
        bucket = self.bucket
        host_timeout = self.host_timeout
        first_probe = self._first_probe  # host -> time of its first probe (host_timeout)

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
            # 1. Fill the window: retries first (they are older), then new probes.
            while len(pending) < limit and budget > 0:
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
                try:
                    # The C socket type: socket.socket's Python __init__/close cost ~1.3 µs.
                    s = _socket.socket(_AF[fam], _STREAM_NONBLOCK)
                except OSError as exc:
                    if exc.errno in _BACKOFF and pending:
                        limit = max(1, len(pending))  # the fd budget was smaller than thought
                        again.appendleft((index, addr, fam, port, tries))
                        budget += 1  # not sent
                        break
                    raise ScanError(f"cannot open a socket: {exc}") from exc
                now = clock()
                last_send = now
                err = s.connect_ex((addr, port))
                c.sent += 1
                if err == errno.EINPROGRESS:
                    fd = s.fileno()
                    pending[fd] = [s, index, addr, fam, port, tries + 1, now]
                    timers.append((now + rtt.timeout, fd, s))
                    ep.register(fd, select.EPOLLOUT)
                    continue
                if err in _BACKOFF:
                    s.close()
                    c.sent -= 1  # refused by our own kernel: no packet left the host
                    budget += 1
                    again.appendleft((index, addr, fam, port, tries))
                    limit = max(1, len(pending))
                    break
                # Answered within connect() itself (loopback does this often).
                if err == 0 and _is_self_connect(s):
                    s.close()
                    c.retries += 1  # SELF-CONNECT: sent again, so sent = probes + retries
                    again.append((index, addr, fam, port, tries))
                    continue
                if err == 0:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                s.close()
                if connect_answer(err) is None:
                    again.append((index, addr, fam, port, tries + 1))
                    continue
                emit(index, err, clock() - now)

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
            if timers:
                wait = min(wait, max(0.0, timers[0][0] - now))
            for fd, _events in ep.poll(wait, 4096):
                entry = pending.pop(fd)
                s = entry[0]
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                now = clock()
                if err == 0 and _is_self_connect(s):
                    s.close()
                    c.retries += 1
                    again.append((entry[1], entry[2], entry[3], entry[4], entry[5] - 1))
                    continue
                if err == 0:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                s.close()  # also removes fd from the epoll set
                if connect_answer(err) is None:
                    self._expire(entry, again, max_tries)
                    continue
                sample = now - entry[6]
                rtt.update(sample)
                emit(entry[1], err, sample)

            if self.tick is not None:
                self.tick()
            # 3. Expire probes whose deadline passed; the deque is in deadline order.
            now = clock()
            while timers and timers[0][0] <= now:
                _deadline, fd, s = timers.popleft()
                late = pending.get(fd)
                if late is None or late[0] is not s:
                    continue  # answered already; fd number may have been reused
                del pending[fd]
                s.close()
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


def _is_self_connect(s: _socket.socket) -> bool:
    """A connect to 127.0.0.1:P can be given source port P and 'succeed' against itself."""
    try:
        return bool(s.getsockname() == s.getpeername())
    except OSError:
        return False
