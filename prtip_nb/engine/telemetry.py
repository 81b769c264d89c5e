"""The poller: one thread turns the hot loops' counters into telemetry rows.

It samples once at the start, at least every 100 ms for the scan's first 2 s (so a short
scan's chart starts near 0), then every ``interval`` seconds (250 ms by default): probes
sent, replies, open ports, retries, the send and reply rates since the last sample, the RSS
and CPU share (100 = one core) of the *process tree* (this process and every descendant: a
connect scan's worker processes, a LocalCluster's Dask workers; see ``ProcessTree``), this
process's thread count, and the send rate in force with its reason (see net.ratectl). Each
worker's own peak RSS is also reported apart, in the EngineStats event.
The hot loops never call into it; they only bump ``Counters``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..net.counters import Counters
from ..net.ratectl import RateState

if TYPE_CHECKING:
    from ..results import ResultBuilder

_PAGE = os.sysconf("SC_PAGE_SIZE")
TRIM_EVERY = 2.0  # seconds between release_free_memory() calls while a scan runs
DENSE_FOR, DENSE_WAIT = 2.0, 0.1  # the first 2 s are sampled at least every 100 ms


def rss_bytes() -> int:
    """This process's resident set size, read from /proc (cheap, no psutil)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return 0


def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM), in bytes."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


_TRIM: object = None  # libc.malloc_trim, looked up once (None: not yet; False: none)


def release_free_memory() -> None:
    """Hand freed heap memory back to the kernel: Arrow's pool (mimalloc or jemalloc) and
    glibc's arenas (``malloc_trim``).

    RETENTION: a big scan converts, writes and frees ~100 B a verdict on four threads;
    both allocators keep what was freed for reuse, and glibc's per-thread arenas fragment,
    so RSS crept up ~6 B a probe on a /17 with nothing live to show for it. A trim every
    few seconds costs a few milliseconds on the poller thread.
    """
    global _TRIM
    import pyarrow as pa  # already imported by any scan that writes rows

    pa.default_memory_pool().release_unused()
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (musl, macOS)
            _TRIM = False
    if _TRIM:
        _TRIM(0)  # type: ignore[operator]


def has_children() -> bool | None:
    """Whether this process has a child process, from each thread's /proc children list
    (None: the kernel does not say; CONFIG_PROC_CHILDREN)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as fh:
                if fh.read().strip():
                    return True
        except FileNotFoundError:
            if not os.path.isdir(f"/proc/self/task/{tid}"):
                continue  # the thread ended since the listing
            return None
        except OSError:
            return None
    return False


class ProcessTree:
    """RSS and CPU time of this process and all its descendants, sampled on demand.

    ``sample()`` -> (rss_bytes, cpu_seconds, processes). RSS is the sum over the processes
    (workers are exec'd, not forked, so they share little but libraries). CPU seconds are
    cumulative and never fall: a worker that exited is counted through this process's
    reaped-children times once it is waited for, and until then its last reading stands.
    Cost: with no child process (most scans), two small /proc reads and no psutil (its
    import and first listing of /proc/*/stat took 7-25 ms of a scan's start-up); else one
    psutil ``children(recursive=True)`` (reads /proc/*/stat: ~1 ms with 100 processes) and
    two small /proc reads per descendant.
    """

    def __init__(self) -> None:
        self._psutil: Any = None
        self._me: Any = None
        self._cpu = 0.0

    def sample(self) -> tuple[int, float, int]:
        t = os.times()
        rss = rss_bytes()
        cpu = t.user + t.system + t.children_user + t.children_system
        n = 1
        if self._psutil is None:
            if has_children() is False:
                self._cpu = max(self._cpu, cpu)
                return rss, self._cpu, n
            try:
                import psutil

                self._psutil, self._me = psutil, psutil.Process()
            except OSError:  # EMFILE under a low fd limit (ulimit -n 8): the import opens
                self._cpu = max(self._cpu, cpu)  # files; count this process alone and try
                return rss, self._cpu, n  # again at the next sample
        ps = self._psutil
        try:
            kids = self._me.children(recursive=True)
        except (ps.Error, OSError):  # /proc read failed (a process went mid-listing, a
            kids = []  # namespace's /proc): this sample counts this process alone
        for proc in kids:
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    c = proc.cpu_times()
                cpu += c.user + c.system
                n += 1
            except (ps.Error, OSError):  # exited (or a zombie) since the listing: counted
                continue  # once reaped; an OSError reading its /proc files, likewise
        self._cpu = max(self._cpu, cpu)
        return rss, self._cpu, n


class Poller:
    def __init__(
        self,
        counters: Counters,
        builder: ResultBuilder,
        t0: float,
        interval: float = 0.25,
        on_sample: Callable[[], None] | None = None,
        rate: Callable[[], RateState] | None = None,
    ) -> None:
        self.on_sample = on_sample  # e.g. publish a Progress event
        self.rate = rate  # the send rate in force and why
        self.counters = counters
        self.builder = builder
        self.t0 = t0
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prtip-poller", daemon=True)
        self.tree = ProcessTree()
        self._last = (t0, 0, 0, self.tree.sample()[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sample()  # the closing row, so every scan has at least one

    def sample(self) -> None:
        now = time.monotonic()
        rss, cpu_s, _n = self.tree.sample()
        last_t, last_sent, last_received, last_cpu = self._last
        c = self.counters
        dt = max(1e-9, now - last_t)
        cpu = round((cpu_s - last_cpu) / dt * 100, 1) + 0.0  # + 0.0: never "-0.0"
        self.builder.add_telemetry(
            now - self.t0,
            c.sent,
            c.received,
            c.open,
            c.retries,
            (c.sent - last_sent) / dt,
            rss,
            cpu,
            pps_received=(c.received - last_received) / dt,
            threads=threading.active_count(),
            rate=None if self.rate is None else self.rate(),
        )
        self._last = (now, c.sent, c.received, cpu_s)
        if self.on_sample is not None:
            self.on_sample()

    def _next_wait(self) -> float:
        """The interval, but at most ``DENSE_WAIT`` in the scan's first ``DENSE_FOR`` seconds:
        a one-second scan sampled every 250 ms drew four points, its chart starting at 0.25 s."""
        if time.monotonic() - self.t0 < DENSE_FOR:
            return min(self.interval, DENSE_WAIT)
        return self.interval

    def _run(self) -> None:
        # A FIRST SAMPLE AT ONCE: worker processes send from before the scan thread starts
        # (while the results' pyarrow loads), and a live view waiting a whole interval more
        # showed nothing for the first second of a multi-process scan.
        self.sample()
        next_trim = time.monotonic() + TRIM_EVERY
        while not self._stop.wait(self._next_wait()):
            self.sample()
            if time.monotonic() >= next_trim:
                release_free_memory()
                next_trim = time.monotonic() + TRIM_EVERY


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
