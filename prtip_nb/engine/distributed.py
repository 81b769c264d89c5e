"""Scans sharded over Dask: ``pn.scan(targets, ports, cluster=client, shards=32, output=root)``.

Each shard ``k/n`` of the index space becomes one Dask task (``client.submit``) that runs
an ordinary ``Scan`` in a worker process (``engine.shardtask``) and writes its own parts
(``part-s003-NNNNN``) and checkpoint under one shared ``scan_id=`` directory, so the
dataset is one scan. The caller's ``DistributedScan`` then merges: it writes its own events
and, last, the hosts table (which marks the scan complete), and reads the whole scan back.
``output`` must be storage every worker and the caller share (a local disk for a
LocalCluster); without it the shards return their tables through Dask instead.

Live view: every shard sends progress, telemetry rows and result events every 0.25 s
through the scheduler's event log; the caller sums the progress into one ``Progress`` on
its own EventBus and republishes the events, so one panel shows one scan. Cancel sets a
``distributed.Event`` that every shard polls (a queued shard returns at once).

Without a cluster the shards run one after another in this process (the same code path:
the resume of a Dask scan on a laptop, or tests).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from datetime import UTC, datetime
from typing import Any

from ..config import ScanConfig, is_privileged
from ..errors import ConfigError, ScanError
from ..net.counters import Counters
from ..targets import shard_len
from . import events as ev_mod
from .checkpoint import public_config
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
from .scan import build_space, make_config, segments
from .shardtask import LocalLink, run_shard
from .telemetry import join_scan_thread

__all__ = ["DistributedScan"]

DRIVER_TAG = "d-"  # the caller's own events parts


class DistributedScan:
    """A scan split into ``shards`` Dask tasks; the API of ``Scan`` (start/cancel/wait/bus)."""

    def __init__(
        self,
        targets: str | Sequence[str] | None = None,
        ports: str | int | Sequence[int] | None = None,
        *,
        cluster: Any = None,
        shards: int | None = None,
        config: ScanConfig | None = None,
        **options: Any,
    ) -> None:
        config = make_config(targets, ports, config, options)
        if config.method == "auto":  # decided here, so every shard scans the same way
            config = config.replace(method="syn" if is_privileged() else "connect")
        self.config = config
        self.cluster = cluster
        n = shards if shards is not None else (1 if cluster is None else 2 * _n_workers(cluster))
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"shards must be a positive integer, not {shards!r}")
        self.n = n
        # The driver needs no raw-socket privilege (its workers do): no _resolve_method.
        _, _, self.space = build_space(config)
        k0, n0 = config.shard
        #: shard index (1..n, the telemetry/events ``shard`` column) -> (k, n) of the space
        self.shards = {w + 1: (k0 + n0 * w, n0 * n) for w in range(n)}
        self.totals = {i: sum(shard_len(size, kn) for _, size in segments(self.space))
                       for i, kn in self.shards.items()}
        self.counters = Counters(total=sum(self.totals.values()))
        self.bus = EventBus(record=self._record)
        self.status = "created"
        self.scan_id: str | None = None
        self.started: datetime | None = None
        self._resume: dict[int, dict[str, Any]] = {}  # index -> checkpoint entry
        self._cancel = threading.Event()
        self._run_id = secrets.token_hex(4)
        self._progress: dict[int, list[float]] = {}
        self._telemetry: list[list[Any]] = []
        self._events: list[tuple[float, str, str]] = []
        self._summaries: list[dict[str, Any]] = []
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._t_end: float | None = None
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------
    def resume_from(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Before ``start()``: the checkpoint's shard entries (index, status, low_water, ...):
        completed shards are skipped, the others continue from their low-water mark."""
        self._resume = {int(e["index"]): dict(e) for e in entries}

    def start(self) -> DistributedScan:
        from ..results import new_scan_id

        if self._thread is not None:
            raise ScanError("this scan was already started; create a new one to scan again")
        self.scan_id = self.scan_id or new_scan_id()
        self.started = self.started or datetime.now(UTC)
        self._t0 = time.monotonic()
        jobs = [self._job(i) for i in self.shards if self._todo(i)]
        self.counters.total = sum(
            self.totals[i] - int(self._resume.get(i, {}).get("low_water", 0))
            for i in self.shards if self._todo(i)
        )
        if self.config.output is not None:
            self._write_manifest("running")
        self.status = "running"
        cfg = self.config
        self.bus.publish(ScanStarted(0.0, self.scan_id, self.counters.total, cfg.targets,
                                     self.space.ports.to_spec(), cfg.method))
        self._thread = threading.Thread(target=self._run, args=(jobs,), name="prtip-dask",
                                        daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop every shard (each within about 0.5 s); the result keeps what they found."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> Any:
        if self._thread is None:
            self.start()
        assert self._thread is not None
        join_scan_thread(self._thread, self.cancel, timeout, grace=5.0)
        if self._error is not None:
            raise self._error
        return self._result

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def result(self) -> Any:
        """The merged result, or while shards run, what their parts on disk hold so far."""
        if self._result is not None:
            return self._result
        from . import _dmerge

        return _dmerge.snapshot(self)

    @property
    def shard_summaries(self) -> list[dict[str, Any]]:
        """Each finished shard's summary: index, where it ran, status, probes done, open,
        and ``resumed_from`` (the low-water mark) when a rerun after a lost worker went on
        from an earlier attempt's checkpoint."""
        return [{k: v for k, v in s.items() if k != "tables"} for s in self._summaries]

    @property
    def progress(self) -> Progress:
        c = self.counters
        end = self._t_end if self._t_end is not None else time.monotonic()
        elapsed = max(1e-9, end - self._t0) if self._t0 else 0.0
        rate = c.done / elapsed if elapsed else 0.0
        return Progress(elapsed, self.scan_id or "", c.done, c.total, c.sent, c.open, elapsed,
                        rate)

    def subscribe(self, callback: Callable[[Event], Any], types: Any = None) -> Subscription:
        return self.bus.subscribe(callback, types)

    def events(self, types: Any = None, *, maxsize: int = 1024) -> Subscription:
        return self.bus.subscribe(None, types, maxsize=maxsize)

    # -- the caller's thread -------------------------------------------------------------
    def _todo(self, index: int) -> bool:
        return self._resume.get(index, {}).get("status") != "completed"

    def _job(self, index: int) -> dict[str, Any]:
        k, n = self.shards[index]
        entry = self._resume.get(index, {})
        assert self.scan_id is not None and self.started is not None
        return {
            "config": self.config.replace(shard=(k, n)).to_json(),
            "index": index, "scan_id": self.scan_id, "started": self.started.isoformat(),
            "tag": f"s{index:03d}-", "start": int(entry.get("low_water", 0)),
            "resume": bool(entry), "engine_state": entry.get("engine_state") or {},
            # Per run: a resume of this scan must not see the first run's cancel.
            "topic": f"prtip_nb/{self.scan_id}/{self._run_id}",
            "cancel": f"prtip_nb-cancel/{self.scan_id}/{self._run_id}",
        }

    def _run(self, jobs: list[dict[str, Any]]) -> None:
        from . import _dmerge

        try:
            if self.cluster is None:
                self._summaries = self._run_local(jobs)
            else:
                self._summaries = _dmerge.run_on_dask(self, jobs)
            stopped = any(s.get("status") == "cancelled" for s in self._summaries)
            self.status = "cancelled" if self._cancel.is_set() or stopped else "completed"
        except BaseException as exc:  # re-raised by wait()
            self._error = exc
            self.status = "failed"
        finally:
            self._t_end = time.monotonic()
            self._tick()
            terminal = self._terminal()
            self._record(terminal)
            try:
                self._result = _dmerge.merge(self)
            except BaseException as exc:
                if self._error is None:
                    self._error, self.status = exc, "failed"
                    terminal = self._terminal()
            self.bus.publish(terminal, record=False)
            self.bus.close(timeout=0)

    def _run_local(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        link = LocalLink(self.deliver, self._cancel)
        with ThreadPoolExecutor(1, thread_name_prefix="prtip-shard") as pool:
            futures = [pool.submit(run_shard, job, link) for job in jobs]
            while futures_wait(futures, timeout=0.25).not_done:
                self._tick()
            return [f.result() for f in futures]

    def deliver(self, msg: dict[str, Any]) -> None:
        """A shard's report (progress, telemetry rows, events); any thread."""
        index = int(msg["index"])
        sid = self.scan_id or ""
        t = time.monotonic() - self._t0
        with self._lock:
            self._progress[index] = list(msg["progress"])
            self._telemetry.extend([*row, index] for row in msg.get("telemetry", ()))
        for item in msg.get("events", ()):
            cls = getattr(ev_mod, item["kind"], None)
            if cls is not None:
                # recorded by the shard itself (its events part, with its shard column)
                self.bus.publish(cls(t, sid, **item["payload"]), record=False)

    def _tick(self) -> None:
        with self._lock:
            rows = list(self._progress.values())
        c = self.counters
        c.done, c.sent, c.open, c.received, c.retries = (
            int(sum(r[i] for r in rows)) for i in (0, 2, 3, 4, 5)
        )
        self.bus.publish(self.progress, record=False)

    def _terminal(self) -> Event:
        sid, t = self.scan_id or "", (self._t_end or time.monotonic()) - self._t0
        c = self.counters
        if self.status == "completed":
            return ScanCompleted(t, sid, c.done, c.open, t)
        if self.status == "cancelled":
            return ScanCancelled(t, sid, c.done, c.open, t)
        return ScanFailed(t, sid, repr(self._error))

    def _record(self, ev: Event) -> None:
        self._events.append((ev.t, ev.kind, json.dumps(ev.payload(), default=str)))

    def _write_manifest(self, status: str) -> None:
        from . import _dmerge

        _dmerge.write_manifest(self, status)

    @property
    def public_config(self) -> dict[str, Any]:
        return {**public_config(self.config.to_json()), "shards": self.n}


def _n_workers(cluster: Any) -> int:
    try:
        return max(1, len(cluster.scheduler_info()["workers"]))
    except Exception:  # noqa: BLE001 - not a Client: one shard per core of one box
        return 2
