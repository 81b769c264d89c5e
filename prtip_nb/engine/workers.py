"""Connect-scan worker processes: one scan's shard split over several processes.

Why processes: on loopback a connect scan is bound by kernel time spent inside
``connect()`` (the target's TCP stack runs there). Two threads gained nothing (1.52 s vs
1.49 s for 65,535 ports: the GIL hand-off on every call serialises them); two processes
took 0.68–0.86 s. See docs/architecture.md.

Each worker takes sub-shard ``(k + n·w, n·W)`` of the scan's shard ``(k, n)`` (together they
partition it), runs ``ConnectEngine`` on it and streams verdict records (probes.records) on
stdout, with control records for its sent and retry counters and, last, its peak RSS. The
parent feeds the bytes to the same ``RecordSink`` an in-process scan uses.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

from ..errors import ScanError
from ..probes.records import PEAK_RSS, RECORD, RETRIES, SENT, SKIPPED, RecordBuffer
from ..targets import PortSet, TargetSet
from ..targets.space import sub_shard_start, sub_shards
from .probestream import probe_stream
from .telemetry import peak_rss_bytes

if TYPE_CHECKING:
    from .sink import RecordSink

# -- the child side --------------------------------------------------------------------------
class SignalSafeEvent(threading.Event):
    """A cancel flag that a signal handler may set.

    WHY: threading.Event.set() takes the lock that Event.wait() holds while the main thread
    sleeps in it (the rate limiter's pauses); a SIGTERM handler calling set() there waits
    for itself forever. Measured: 1 worker in 48 hung that way when its scanning parent
    was killed (PR_SET_PDEATHSIG sends the SIGTERM). Here set() is a plain store and wait()
    sleeps in 50 ms slices, taking no lock.
    """

    def __init__(self) -> None:
        super().__init__()
        self._signalled = False

    def set(self) -> None:
        self._signalled = True

    def is_set(self) -> bool:
        return self._signalled

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self._signalled:
            left = 0.05 if end is None else min(0.05, end - time.monotonic())
            if left <= 0:
                break
            time.sleep(left)
        return self._signalled


def _child_main() -> int:
    from ..net.connect import ConnectEngine
    from ..net.counters import Counters, RttEstimator

    job = json.loads(sys.stdin.buffer.read())
    targets = TargetSet([tuple(r) for r in job["targets"]])
    ports = PortSet(tcp=tuple(tuple(r) for r in job["tcp"]))
    cancel = SignalSafeEvent()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    # The parent decides whether an interrupt cancels the scan, and tells us with SIGTERM
    # (we run in a process group of our own; this covers a SIGINT sent to us directly).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    counters = Counters()

    def deliver(data: bytes) -> None:
        data += RECORD.pack(counters.sent, SENT, 0.0, 0, 0)
        data += RECORD.pack(counters.retries, RETRIES, 0.0, 0, 0)
        data += RECORD.pack(counters.skipped, SKIPPED, 0.0, 0, 0)
        while data:
            data = data[os.write(1, data) :]

    out = RecordBuffer(deliver)
    engine = ConnectEngine(
        emit=out.emit,
        concurrency=job["concurrency"],
        rtt=RttEstimator(*job["rtt"]),
        retries=job["retries"],
        counters=counters,
        cancel=cancel,
        scan_delay=job["scan_delay"],
        tick=out.tick,
        rate=job["rate"],
        host_timeout=job["host_timeout"],
        t_start=job.get("t_start"),
        emit_many=out.emit_many,
    )
    try:
        engine.run(
            probe_stream(targets, ports, job["seed"], tuple(job["shard"]), job.get("start", 0))
        )
        # wait4()'s ru_maxrss would charge the parent's size at fork time to this child; the
        # kernel's VmHWM of this process image is the worker's own peak.
        out.control(PEAK_RSS, peak_rss_bytes())
        out.flush()
    except BrokenPipeError:  # the parent closed our pipe: its scan is over, ours too
        return EXIT_ORPHANED
    return EXIT_CANCELLED if cancel.is_set() else 0


EXIT_CANCELLED = 3  # stopped by SIGTERM before the shard was done: not a complete shard
EXIT_ORPHANED = 4  # the parent stopped reading our records (it failed, or died)
REAP_TIMEOUT = 5.0  # seconds a worker gets to exit after SIGTERM, then after SIGKILL


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker if the scanning process dies (kill -9 included)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# -- the parent side -------------------------------------------------------------------------
class WorkerPool:
    """Runs ``job`` in ``workers`` child processes and feeds their records to a sink."""

    def __init__(
        self,
        *,
        targets: TargetSet,
        ports: PortSet,
        job: dict[str, Any],
        workers: int,
        cancel: threading.Event,
    ) -> None:
        self.job = {
            **job,
            "targets": [list(r) for r in targets.ranges],
            "tcp": [list(r) for r in ports.tcp],
        }
        self.workers = workers
        self.cancel = cancel
        self.procs: list[tuple[subprocess.Popen[bytes], Any]] = []
        self._drained = False  # every worker's output read to EOF
        self._failure: str | None = None  # the first failed worker's exit code and stderr

    def spawn(self) -> None:
        """Start the worker processes; they begin scanning as soon as they have imported.

        Called early (before the parent imports pyarrow) so the two start-ups overlap.
        """
        if self.procs:
            return
        start = self.job.get("start", 0)
        t_start = time.monotonic()  # one rate clock for all workers (CLOCK_MONOTONIC)
        for w, shard in enumerate(sub_shards(tuple(self.job["shard"]), self.workers)):
            part = {"shard": list(shard), "start": sub_shard_start(start, w, self.workers),
                    "t_start": t_start}
            err = tempfile.TemporaryFile()
            try:
                # A process group of its own: Ctrl-C and a notebook kernel's interrupt go
                # to the caller's whole group, and would kill a worker still starting up,
                # before it can ignore SIGINT (measured: an idle kernel interrupted 0-0.3 s
                # after Start failed the scan). The parent decides, and sends SIGTERM.
                proc = subprocess.Popen(
                    [sys.executable, "-m", "prtip_nb.engine.workers"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                    process_group=0,
                )
            except BaseException:
                err.close()
                raise
            self.procs.append((proc, err))
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({**self.job, **part}).encode())
            proc.stdin.close()

    def spawn_or_give_up(self) -> bool:
        """``spawn()``, or False (after a warning) when the OS refuses the resources.

        EMFILE/ENFILE (a low `ulimit -n`), EAGAIN/ENOMEM (process limits): each worker costs
        pipes and a process. The caller then scans in its own process: the same ports, only
        slower, instead of a failed scan."""
        try:
            self.spawn()
        except OSError as exc:
            self.stop()
            if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM):
                raise
            warnings.warn(
                f"could not start {self.workers} scan worker processes ({exc.strerror}); "
                "scanning in this process instead (raise `ulimit -n` to use them)",
                stacklevel=4,
            )
            return False
        return True

    def stop(self) -> None:
        """Reap every worker, terminating those still running, then close its pipe and
        stderr file (idempotent).

        WHY close here: a finished Scan keeps its pool, so anything left open would hold
        two descriptors per worker until the garbage collector found the Scan.
        """
        for proc, err in self.procs:
            if proc.returncode is None:
                if not self._drained and proc.stdout is not None:
                    # Nobody reads this pipe any more (the parent failed: a full disk). A
                    # worker blocked writing to it would never see our SIGTERM through its
                    # write; closing our end wakes it with EPIPE.
                    proc.stdout.close()
                self._reap(proc)
            if proc.stdout is not None:
                proc.stdout.close()
            if not err.closed:
                if proc.returncode != 0 and self._failure is None:
                    err.seek(0)
                    text = err.read().decode(errors="replace").strip()[-2000:]
                    self._failure = f"a scan worker exited with {proc.returncode}: {text}"
                err.close()

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        if self._drained:  # its stdout hit EOF: it is exiting on its own, let it
            try:
                proc.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                pass
        proc.send_signal(signal.SIGTERM)  # a no-op for a worker that has exited
        try:
            proc.wait(timeout=REAP_TIMEOUT)  # EVERY WAIT HAS A TIMEOUT: stop() must return
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(timeout=REAP_TIMEOUT)
            except subprocess.TimeoutExpired:  # unkillable (D state): leave it, say so
                self._failure = self._failure or f"scan worker {proc.pid} did not exit"

    def run(self, sink: RecordSink) -> None:
        """Feed every worker's records to ``sink`` until all have finished."""
        try:
            self.spawn()
            self._pump([p for p, _ in self.procs], sink)
        finally:
            self.stop()
        # A worker that stopped early without our cancel (killed, or SIGTERM from outside)
        # left its shard unfinished: that is a failed scan, never a "completed" one.
        if self._failure is not None and not self.cancel.is_set():
            raise ScanError(self._failure)

    def _pump(self, procs: list[subprocess.Popen[bytes]], sink: RecordSink) -> None:
        size = RECORD.size
        sel = selectors.DefaultSelector()
        rest: dict[int, bytes] = {}
        for w, proc in enumerate(procs):
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            sel.register(proc.stdout.fileno(), selectors.EVENT_READ, w)
            rest[w] = b""
        terminated = False
        while sel.get_map():
            if self.cancel.is_set() and not terminated:
                for proc in procs:
                    proc.send_signal(signal.SIGTERM)
                terminated = True
            for key, _ in sel.select(0.05):
                w = key.data
                try:
                    chunk = os.read(key.fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                data = rest[w] + chunk
                cut = len(data) - len(data) % size
                rest[w] = data[cut:]
                if cut:
                    sink.feed(data[:cut], worker=w)
        sel.close()
        self._drained = not terminated


if __name__ == "__main__":
    sys.exit(_child_main())
