"""Connect-scan worker processes: one scan's shard split over several processes.

Why processes: on loopback a connect scan is bound by kernel time spent inside
``connect()`` (the target's TCP stack runs there). Two threads gained nothing (1.52 s vs
1.49 s for 65,535 ports: the GIL hand-off on every call serialises them); two processes
took 0.68–0.86 s. See docs/architecture.md.

Each worker takes sub-shard ``(k + n·w, n·W)`` of the scan's shard ``(k, n)`` (together they
partition it), runs ``ConnectEngine`` on it and streams verdict records (engine.records) on
stdout, with control records for its sent and retry counters and, last, its peak RSS. The
parent feeds the bytes to the same ``RecordSink`` an in-process scan uses.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ScanError
from ..targets import Permutation, PortSet, TargetSet, TargetSpace, iter_batches
from .records import PEAK_RSS, RECORD, RETRIES, SENT, SKIPPED, RecordBuffer
from .telemetry import peak_rss_bytes

if TYPE_CHECKING:
    from .sink import RecordSink

Probe = tuple[int, str, int, int]


def probe_stream(
    targets: TargetSet, ports: PortSet, seed: int, shard: tuple[int, int]
) -> Iterator[Probe]:
    """(index, address, family, port) for every index of ``shard``, in permuted order."""
    space = TargetSpace(targets, ports)
    n_hosts = targets.size
    perm = Permutation(space.size, seed)
    cache: dict[int, tuple[str, int]] = {}
    for batch in iter_batches(space, perm, shard=shard):
        for j in batch.tolist():
            h = j % n_hosts
            hit = cache.get(h)
            if hit is None:
                if len(cache) > 4096:
                    cache.clear()
                hit = cache[h] = (targets.address(h), targets.family(h))
            yield (j, hit[0], hit[1], ports[j // n_hosts][1])


def sub_shards(shard: tuple[int, int], workers: int) -> list[tuple[int, int]]:
    """Split shard k/n into ``workers`` shards that partition it exactly."""
    k, n = shard
    return [(k + n * w, n * workers) for w in range(workers)]


# -- the child side --------------------------------------------------------------------------
def _child_main() -> int:
    from ..net.connect import ConnectEngine
    from .counters import Counters, RttEstimator

    job = json.loads(sys.stdin.buffer.read())
    targets = TargetSet([tuple(r) for r in job["targets"]])
    ports = PortSet(tcp=tuple(tuple(r) for r in job["tcp"]))
    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    signal.signal(signal.SIGINT, lambda *_: cancel.set())
    counters = Counters()

    def deliver(data: bytes) -> None:
        data += RECORD.pack(counters.sent, SENT, 0.0, 0)
        data += RECORD.pack(counters.retries, RETRIES, 0.0, 0)
        data += RECORD.pack(counters.skipped, SKIPPED, 0.0, 0)
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
    )
    engine.run(probe_stream(targets, ports, job["seed"], tuple(job["shard"])))
    # wait4()'s ru_maxrss would charge the parent's size at fork time to this child; the
    # kernel's VmHWM of this process image is the worker's own peak.
    out.control(PEAK_RSS, peak_rss_bytes())
    out.flush()
    return 0


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

    def spawn(self) -> None:
        """Start the worker processes; they begin scanning as soon as they have imported.

        Called early (before the parent imports pyarrow) so the two start-ups overlap.
        """
        if self.procs:
            return
        for shard in sub_shards(tuple(self.job["shard"]), self.workers):
            err = tempfile.TemporaryFile()
            proc = subprocess.Popen(
                [sys.executable, "-m", "prtip_nb.engine.workers"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            )
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({**self.job, "shard": list(shard)}).encode())
            proc.stdin.close()
            self.procs.append((proc, err))

    def stop(self) -> None:
        """Terminate and reap every worker (idempotent)."""
        for proc, _err in self.procs:
            proc.send_signal(signal.SIGTERM)  # a no-op for a worker that has exited
            proc.wait()

    def run(self, sink: RecordSink) -> None:
        """Feed every worker's records to ``sink`` until all have finished."""
        try:
            self.spawn()
            self._pump([p for p, _ in self.procs], sink)
        finally:
            self.stop()
        failed = [(p, e) for p, e in self.procs if p.returncode not in (0, -signal.SIGTERM)]
        if failed and not self.cancel.is_set():
            proc, err = failed[0]
            err.seek(0)
            raise ScanError(
                f"a scan worker exited with {proc.returncode}: "
                f"{err.read().decode(errors='replace').strip()[-2000:]}"
            )

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


if __name__ == "__main__":
    sys.exit(_child_main())
