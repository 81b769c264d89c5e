"""Regex matching off the event loop, shared fairly between services: ``MatchPool``.

The detector's event loop must never run a long regex search: one slow search there
stalls every other connection. ``MatchPool.match`` matches on the loop for at most
``INLINE_S`` (each search there limited to it too), which settles an ordinary reply, then
hands the ``ReplyMatcher`` to worker threads (``regex`` releases the GIL while it searches)
and awaits the answer.

FAIRNESS. A FIFO queue would put a benign banner behind every hostile reply that came
first. Work is instead cut into slices of ``SLICE_S`` (CPU time, a rule at a time) and the
next slice always goes to the service that has spent the *least* matching time so far. A
slice also ends before any long search (a rule past ``FIRST_TRY_S``), and that job queues
as if it had spent the long search already: a new service waits for the searches already
running (at most ``RULE_TIMEOUT_S`` each) and a few short slices, however many hostile
replies are queued. A service past its ``Budget``
gets no more slices: its reply is answered with what was found so far.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .matcher import FIRST_TRY_S, SLOW, Budget, ReplyMatcher, indexed
from .servicedb import Match

SLICE_S = 0.002  # CPU time a job runs before the least-served job may go first
INLINE_S = 0.0005  # CPU time a reply is matched on the event loop before the pool takes over
WORKERS = max(1, min(2, os.cpu_count() or 1))
IDLE_S = 0.5  # seconds an idle worker thread waits for work before it exits


@dataclass(order=True)
class _Job:
    spent: float  # the service's matching time when queued: the least served goes first
    seq: int
    matcher: ReplyMatcher = field(compare=False)
    steps: Any = field(compare=False)  # ReplyMatcher.steps(window)
    future: asyncio.Future[Match | None] = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)


class MatchPool:
    """Worker threads matching replies, least-served service first (module docstring)."""

    def __init__(self, workers: int = WORKERS) -> None:
        self.workers = workers
        self._heap: list[_Job] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._names = itertools.count()
        self._pid = os.getpid()

    async def match(self, matcher: ReplyMatcher, window: bytes) -> Match | None:
        """``matcher.feed(window)``, run by the pool; cancelling the caller drops the job."""
        steps = matcher.steps(window)
        # INLINE: most replies are settled in a fraction of INLINE_S, less than handing
        # them to a thread costs (sv-1000's service stage: 3.12 s with every chunk sent to
        # the pool, against 2.63 s with re inline). Past INLINE_S, or before a search
        # that needs longer than INLINE_S, the pool takes over where this stopped.
        matcher.first_try = INLINE_S
        t0 = time.thread_time()
        slow = False
        try:  # a probe's first reply builds its chain index (ms): that goes to a thread
            while indexed(matcher.probe) and not slow and time.thread_time() - t0 < INLINE_S:
                slow = next(steps) == SLOW
        except StopIteration as stop:
            return stop.value
        finally:
            matcher.first_try = FIRST_TRY_S
        if self._pid != os.getpid():
            # FORK: a child (a worker process, a Dask shard) inherits no threads, and maybe
            # a lock held by one of them: start afresh rather than queue to nobody.
            self.__init__(self.workers)  # type: ignore[misc]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Match | None] = loop.create_future()
        budget = matcher.budget or Budget(float("inf"))
        key = budget.spent + (matcher.timeout if slow else 0.0)  # as _slice queues it
        job = _Job(key, next(self._seq), matcher, steps, future, loop)
        with self._cond:
            if len(self._threads) < self.workers:
                self._start_thread()
            heapq.heappush(self._heap, job)
            self._cond.notify()
        return await future

    def _start_thread(self) -> None:
        t = threading.Thread(target=self._work, name=f"prtip-match-{next(self._names)}",
                             daemon=True)  # fmt: skip
        self._threads.append(t)
        t.start()

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                idle_since = time.monotonic()
                while not self._heap:
                    # An idle worker goes away: a scan leaves no thread behind, and the
                    # next reply starts one again (a thread start is ~50 us).
                    left = idle_since + IDLE_S - time.monotonic()
                    if left <= 0:
                        self._threads.remove(me)
                        return
                    self._cond.wait(left)
                job = heapq.heappop(self._heap)
            if job.future.cancelled():
                continue  # its connection ended (deadline, cancel): nobody wants the answer
            self._slice(job)

    def _slice(self, job: _Job) -> None:
        budget = job.matcher.budget
        t0 = time.thread_time()
        done, result, error = False, None, None
        slow = False
        try:
            while time.thread_time() - t0 < SLICE_S:
                if next(job.steps) == SLOW:
                    slow = True  # a long search is next: let the less served go first
                    break
        except StopIteration as stop:
            done, result = True, stop.value
        except Exception as exc:  # a bug must reach the awaiting task, not kill the worker
            done, error = True, exc
        used = time.thread_time() - t0
        if budget is not None:  # the matcher charges its searches to the budget itself
            if not done and budget.exhausted:
                # The matcher stops at its next rule once the budget is gone: let it finish
                # now, so its state stays whole, rather than queue it again.
                for _ in job.steps:
                    pass
                done, result = True, job.matcher.result
        if not done:
            job.spent = budget.spent if budget is not None else job.spent + used
            if slow:  # queue it as if the long search had been spent already
                job.spent += job.matcher.timeout
            with self._cond:
                heapq.heappush(self._heap, job)
                self._cond.notify()
            return
        try:
            job.loop.call_soon_threadsafe(_settle, job.future, result, error)
        except RuntimeError:
            pass  # the loop closed while we matched: nobody is waiting any more


def _settle(future: asyncio.Future[Match | None], result: Match | None,
            error: BaseException | None) -> None:  # fmt: skip
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_shared: MatchPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> MatchPool:
    """The process's pool: one, so that fairness holds across every scan in the process."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = MatchPool()
        return _shared
