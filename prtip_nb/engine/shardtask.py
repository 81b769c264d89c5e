"""One shard of a distributed scan, as it runs on a Dask worker: ``run_shard(job)``.

The job is plain data (msgpack/pickle-safe): the shard's config as JSON (seed included:
the shards of one scan share its order), the shared scan_id, where to start and how to tag
its parts. The shard runs an ordinary ``Scan`` in the worker process, planned through its
public hook (``apply_plan(RunPlan(...))``, as a resume is) and watched through its
lifecycle (``join``, ``wait``, ``subscribe``, ``builder``), and writes its own Parquet
parts (``part-s003-NNNNN``) and checkpoint under the shared ``scan_id=`` directory.

A ``Link`` carries what the caller's panel needs (progress, telemetry rows, result events)
back every 0.25 s, and tells the shard when the caller cancelled: on Dask through the
scheduler's event log (``Worker.log_event`` to a topic the client subscribes to) and a
``distributed.Event``; in-process, through plain calls.

A worker without the raw-socket privilege that the method needs fails the shard at once
with a PrivilegeError naming the worker, before any socket exists.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..errors import PrivilegeError
from . import events as ev_mod
from .checkpoint import RunPlan

__all__ = ["FORWARD", "Link", "LocalLink", "run_shard"]

#: Events a shard forwards to the caller's bus (its lifecycle events stay with it).
FORWARD = ("PortFound", "ServiceDetected", "CertificateFound", "ScanWarning", "RateLimited",
           "RetryScheduled", "EngineStats")  # fmt: skip
TICK = 0.25


class Link:
    """The shard's side of the caller's channel."""

    def send(self, msg: dict[str, Any]) -> None:
        raise NotImplementedError

    def cancelled(self) -> bool:
        raise NotImplementedError

    def where(self) -> str:
        return socket.gethostname()


class LocalLink(Link):
    """Shards run in the caller's process (no cluster): direct calls."""

    def __init__(self, deliver: Callable[[dict[str, Any]], None], cancel: threading.Event):
        self.deliver, self.cancel = deliver, cancel

    def send(self, msg: dict[str, Any]) -> None:
        self.deliver(msg)

    def cancelled(self) -> bool:
        return self.cancel.is_set()


class DaskLink(Link):
    """On a Dask worker: the scheduler's event log out, a distributed.Event in."""

    def __init__(self, topic: str, cancel_name: str) -> None:
        from distributed import Event, get_worker

        self.worker = get_worker()
        self.topic = topic
        self.event = Event(cancel_name)
        self._cancelled = False

    def send(self, msg: dict[str, Any]) -> None:
        self.worker.log_event(self.topic, msg)

    def cancelled(self) -> bool:
        if not self._cancelled:
            try:
                self._cancelled = bool(self.event.is_set())
            except Exception:  # noqa: BLE001 - scheduler unreachable: keep scanning, retry
                return False
        return self._cancelled

    def where(self) -> str:
        return f"{self.worker.address} ({socket.gethostname()})"


def run_shard(job: dict[str, Any], link: Link | None = None) -> dict[str, Any]:
    """Scan one shard; return a small summary (and the tables when there is no output)."""
    from ..config import is_privileged
    from .resume import config_from_json
    from .scan import Scan

    if link is None:
        link = DaskLink(job["topic"], job["cancel"])
    cfg = config_from_json(job["config"])
    k, n = cfg.shard
    index = int(job["index"])
    summary: dict[str, Any] = {"index": index, "shard": f"{k}/{n}", "where": link.where()}
    if link.cancelled():  # cancelled while this task waited for a worker
        return {**summary, "status": "cancelled", "done": 0, "open": 0}
    what = f"shard {index} ({k}/{n}) on worker {link.where()}"
    if cfg.method != "connect" and not is_privileged():
        raise PrivilegeError(
            f"{what}: method={cfg.method!r} sends raw packets and this worker has neither "
            "root nor CAP_NET_RAW. Run the Dask workers as root, or give their Python "
            "cap_net_raw+ep (setcap), or scan with method='connect'"
        )
    try:
        scan = Scan(config=cfg)
    except PrivilegeError as exc:
        raise PrivilegeError(f"{what}: {exc}") from None
    start, resume = int(job.get("start", 0)), bool(job.get("resume"))
    engine_state = dict(job.get("engine_state") or {})
    earlier = _earlier_attempt(cfg.output, job)
    if earlier is not None:  # A LOST WORKER: Dask reran this task; go on from its mark
        start, resume = max(start, int(earlier.get("low_water", 0))), True
        engine_state = dict(earlier.get("engine_state") or engine_state)
        summary["resumed_from"] = start
    scan.apply_plan(RunPlan(
        scan_id=job["scan_id"], started=datetime.fromisoformat(job["started"]),
        start=start, resume=resume, tag=job["tag"], shard=index, write_hosts=False,
        engine_state=engine_state,
    ))
    pending: list[dict[str, Any]] = []
    lock = threading.Lock()

    def keep(ev: ev_mod.Event) -> None:
        with lock:
            pending.append({"kind": ev.kind, "payload": ev.payload()})

    scan.subscribe(keep, tuple(getattr(ev_mod, name) for name in FORWARD))
    scan.start()
    sent_rows = 0
    while True:
        stopping = scan.join(TICK)  # ended, failed or not: wait() below raises a failure
        if not stopping and link.cancelled():
            scan.cancel()
        with lock:
            out, pending[:] = list(pending), []
        rows = scan.builder.telemetry_rows(sent_rows) if scan.builder is not None else []
        sent_rows += len(rows)
        link.send({"index": index, "progress": _progress(scan), "events": out,
                   "telemetry": [list(r) for r in rows]})
        if stopping:
            break
    res = scan.wait()
    scan.bus.close(timeout=2.0)  # the forwarded events are all delivered to `keep`
    with lock:
        if pending:
            link.send({"index": index, "progress": _progress(scan), "events": pending,
                       "telemetry": []})
    summary.update(status=scan.status, done=scan.counters.done, open=scan.counters.open,
                   scan_id=scan.scan_id)
    if cfg.output is None:
        summary["tables"] = {name: _ipc(t) for name, t in res.tables.items()}
    else:
        # The shard writes no hosts part (the driver does, from all the ports): what only
        # its hosts table knows (pseudo_services, OS and name columns) travels back here.
        summary["tables"] = {"hosts": _ipc(res.tables["hosts"])}
    return summary


def _earlier_attempt(output: str | None, job: dict[str, Any]) -> dict[str, Any] | None:
    """This shard's checkpoint entry left by an earlier attempt of this very task, if any.

    Dask reruns the task of a worker that died (``allowed-failures``) on another worker,
    with the job as first submitted. The shard's own ``_checkpoint-sKKK.json`` says how far
    the lost attempt got: everything below its low-water mark is in fsynced parts, so the
    rerun starts there and appends parts (what the lost worker wrote above the mark is
    probed again, and deduplicated on read), instead of scanning the shard from its start.
    On a resume (``pn.resume``) the job already starts at the mark of the earlier run, and
    the mark only grows, so the larger of the two is right in either case.
    """
    import json

    from ..results._files import scan_dir
    from .checkpoint import checkpoint_name

    if output is None:
        return None
    path = scan_dir(output, job["scan_id"]) / checkpoint_name(job["tag"])
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None  # none yet (the first attempt), or cut short: start as submitted
    if not isinstance(doc, dict):
        return None
    entries = list((doc.get("shards") or {}).values())
    return entries[0] if len(entries) == 1 and isinstance(entries[0], dict) else None


def _progress(scan: Any) -> list[float]:
    p = scan.progress
    c = scan.counters
    return [p.done, p.total, p.sent, p.open, c.received, c.retries, p.elapsed]


def _ipc(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())
