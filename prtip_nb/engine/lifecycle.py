"""The one scan lifecycle: start, cancel, wait, result, events and the terminal event.

Every way of running a scan composes this, once:

- ``Scan`` (engine.scan) runs the engines, stages, poller and checkpoints of one process;
- ``DistributedScan`` (engine.distributed) runs shards, each an ordinary ``Scan`` on a Dask
  worker or in turn in this process (engine.shardtask), and merges them;
- a resume (engine.resume) builds one of those two from a checkpoint and hands it a
  ``RunPlan`` (``apply_plan``); nothing else differs;
- connect worker processes (engine.workers) are a ``Scan``'s engine, not a scan: the Scan's
  cancel event stops them and its sink takes their records.

A subclass fills the hooks below; ``start``/``cancel``/``wait``/``join``/``result``/
``subscribe``/``events`` and the order of the terminal event are written here only, so a
Scan and a DistributedScan fail, cancel and end the same way.

Hooks (called by the lifecycle, never by users):
    ``_begin()``      on the caller's thread in ``start()``: prepare, return ``ScanStarted``
                      (raise to refuse: nothing runs and ``status`` stays "created")
    ``_execute()``    on the scan thread: the scan itself; returns when done or cancelled
    ``_stopped()``    after ``_execute``: True when part of the run stopped early by itself
    ``_wind_down()``  on the scan thread, once the clock stopped, before the terminal event
    ``_conclude()``   the final ``ScanResult`` (the terminal event is already recorded)
    ``_closed()``     after the result, before the terminal event is published
    ``_snapshot()``   while running: the result so far
    ``_record(ev)``   keep a lifecycle event in the scan's events table
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, Self

from ..errors import PrivilegeError, ScanError
from ..net.ratectl import RateState
from .events import (
    Event,
    EventBus,
    Progress,
    ScanCancelled,
    ScanCompleted,
    ScanFailed,
    ScanStarted,
    Subscription,
)

if TYPE_CHECKING:
    from ..net.counters import Counters
    from ..results import ScanResult

__all__ = ["Lifecycle", "join_scan_thread", "raise_failure"]


def raise_failure(error: BaseException) -> NoReturn:
    """Raise what ``wait()`` raises for a run that failed with ``error``: the one rule.

    A ``PrivilegeError`` (it says how to get the privilege) and a ``ScanError`` (it says
    what failed: a dead worker, a part that could not be written) are raised as they are;
    anything else becomes a ``ScanError`` with ``error`` as its cause."""
    if isinstance(error, (PrivilegeError, ScanError)):
        raise error
    raise ScanError(f"scan failed: {error}") from error


def join_scan_thread(thread: threading.Thread, cancel: Any, timeout: float | None,
                     grace: float) -> None:
    """Wait for a scan's thread; Ctrl-C cancels the scan, waits ``grace`` s, re-raises."""
    try:
        thread.join(timeout)
    except KeyboardInterrupt:
        cancel()
        thread.join(grace)
        raise
    if thread.is_alive():
        raise TimeoutError(f"scan still running after {timeout} s; call wait() again")


class Lifecycle:
    """A scan on a background thread: ``start()``, ``cancel()``, ``wait()``, ``result``,
    ``events()``; subclasses say what runs (see the module's hooks)."""

    #: Seconds ``wait()`` gives the scan to stop after a Ctrl-C before re-raising it.
    STOP_GRACE = 2.0
    THREAD_NAME = "prtip-scan"

    counters: Counters

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: ScanResult | None = None
        self._error: BaseException | None = None
        self._t0 = 0.0
        self._t_end: float | None = None
        #: created, running, completed, cancelled or failed.
        self.status = "created"
        #: Subscribe before or during the scan: ``scan.bus.subscribe(callback, PortFound)``.
        self.bus = EventBus(record=self._record)

    # -- what users call -----------------------------------------------------------------
    def start(self) -> Self:
        """Start scanning on a background thread and return self at once."""
        if self._thread is not None:
            raise ScanError("this scan was already started; create a new one to scan again")
        started = self._begin()
        self.status = "running"
        self.bus.publish(started)
        self._thread = threading.Thread(target=self._main, name=self.THREAD_NAME, daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the scan to stop; it does promptly and keeps every result so far."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> ScanResult:
        """Block until the scan ends (starting it if needed); return its result, partial if
        it was cancelled. A failure raises as ``raise_failure`` says: a ``PrivilegeError``
        or ``ScanError`` as it is, anything else as a ``ScanError`` with its cause."""
        if self._thread is None:
            self.start()
        assert self._thread is not None
        join_scan_thread(self._thread, self.cancel, timeout, grace=self.STOP_GRACE)
        if self._error is not None:
            raise_failure(self._error)
        assert self._result is not None
        return self._result

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s for a started scan to end; True once it has, whatever
        its outcome. Unlike ``wait()`` it neither starts the scan nor raises its failure:
        what a loop that reports while the scan runs (a Dask shard, a CLI) polls."""
        thread = self._thread
        if thread is None:
            return False
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def result(self) -> ScanResult:
        """The final result, or while the scan runs, a snapshot of what was found so far."""
        if self._result is not None:
            return self._result
        return self._snapshot()

    @property
    def error(self) -> BaseException | None:
        """Why the scan failed (None while it runs, or when it did not fail)."""
        return self._error

    @property
    def progress(self) -> Progress:
        """A Progress event for now: done, total, rate, ETA and the send rate in force."""
        total, done, sent, _recv, n_open, _retries = self.counters.snapshot()
        end = self._t_end if self._t_end is not None else time.monotonic()
        elapsed = max(1e-9, end - self._t0) if self._t0 else 0.0
        rate = done / elapsed if elapsed else 0.0
        limit = self.rate_state()
        return Progress(elapsed, self.scan_id or "", done, total, sent, n_open, elapsed, rate,
                        limit.rate, limit.reason)

    def rate_state(self) -> RateState:
        """The send rate in force and why; a subclass that knows it says so."""
        return RateState(None, "")

    @property
    def scan_id(self) -> str | None:
        raise NotImplementedError

    def subscribe(
        self, callback: Callable[[Event], Any], types: type[Event] | tuple[type[Event], ...] | None
        = None,
    ) -> Subscription:
        """Call ``callback(event)`` for each event (of ``types``), on the bus's own thread."""
        return self.bus.subscribe(callback, types)

    def events(
        self, types: type[Event] | tuple[type[Event], ...] | None = None, *, maxsize: int = 1024
    ) -> Subscription:
        """Iterate events as they happen (``for ev in scan.events(): ...``, or ``async for``).

        Subscribe before ``start()`` to see every event; iteration ends after the terminal
        event. A slow reader loses old Progress events, never results.
        """
        return self.bus.subscribe(None, types, maxsize=maxsize)

    # -- public hooks for what composes a scan (stages, shards, resume) ------------------
    @property
    def started_at(self) -> float:
        """``time.monotonic()`` when the scan started (0.0 before): events' time origin."""
        return self._t0

    @property
    def cancel_event(self) -> threading.Event:
        """Set once the scan is cancelled: what a stage or a shard's relay polls."""
        return self._cancel

    # -- the scan thread -----------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._execute()
            stopped = self._cancel.is_set() or self._stopped()
            self.status = "cancelled" if stopped else "completed"
        except BaseException as exc:  # reported through wait(); the thread must not die silently
            self._error = exc
            self.status = "failed"
        finally:
            self._t_end = time.monotonic()
            self._wind_down()
            terminal = self._terminal()
            self._record(terminal)  # into the events table before the result is finished
            try:
                self._result = self._conclude()
            except BaseException as exc:
                if self._error is None:
                    self._error, self.status = exc, "failed"
                    terminal = self._terminal()
            self._closed()
            # Delivered last, so a subscriber that sees it can read the final result.
            self.bus.publish(terminal, record=False)
            self.bus.close(timeout=0)  # let callbacks drain on their thread; don't wait

    def _terminal(self) -> Event:
        sid, t = self.scan_id or "", (self._t_end or time.monotonic()) - self._t0
        c = self.counters
        if self.status == "completed":
            return ScanCompleted(t, sid, c.done + c.skipped, c.open, t)
        if self.status == "cancelled":
            return ScanCancelled(t, sid, c.done + c.skipped, c.open, t)
        return ScanFailed(t, sid, repr(self._error))

    # -- hooks (see the module docstring) --------------------------------------------------
    def _begin(self) -> ScanStarted:
        raise NotImplementedError

    def _execute(self) -> None:
        raise NotImplementedError

    def _stopped(self) -> bool:
        return False

    def _wind_down(self) -> None:
        return None

    def _conclude(self) -> ScanResult:
        raise NotImplementedError

    def _closed(self) -> None:
        return None

    def _snapshot(self) -> ScanResult:
        raise NotImplementedError

    def _record(self, ev: Event) -> None:
        return None
