"""Checkpoints: how far a scan with ``output=`` has durably got, so it can resume.

``<root>/scan_id=<id>/_checkpoint.json`` (one per writer: ``_checkpoint-s003.json`` for shard
3 of a Dask scan) is rewritten atomically (temp file, fsync, rename) every 0.15 s. It holds,
per shard, the LOW-WATER MARK: the number of leading positions of the shard's permuted
order whose verdicts are all in Parquet parts on disk. Resume restarts the shard there
(``iter_batches(start=)``); whatever was done past it is probed again and deduplicated.

WHY A MARK, NOT A COUNT. Verdicts arrive out of order (retries, worker processes, slow
hosts), so "n verdicts flushed" does not mean "the first n positions are done".
``Watermark`` keeps a bitmap only of the window above the mark: its size is the spread of
positions in flight (thousands), not the scan's size.

WHY THE MARK IS TAKEN AFTER THE WRITE. The sink reports indices to the tracker only after
``on_batch`` has written their part, and the checkpointer fsyncs the parts it lists before
the checkpoint that counts them: a kill -9 or a power cut never leaves a mark past a row
that is not on disk.

LOST WORK. Records reach the sink within 50 ms, a part is written once its oldest record is
``FLUSH_AGE`` old, and the mark is saved every ``INTERVAL``: a kill loses at most about
0.5 s of scanning (measured: median 0.3 s; benchmarks/distributed.py ``resume``). The
price is a part file every 0.3 s; ``finish`` merges them into one when there are many.

The seed and the engine's secrets (``engine_state``) are kept here so a resumed scan has
the same order and cookies; they are never put in ScanMeta.config or Parquet footers
(``public_config``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._fileio import atomic_file, fsync_dir, unsafe_name
from ..targets.space import shard_position

if TYPE_CHECKING:
    from ..config import ScanConfig
    from ..results import ResultBuilder
    from .scan import Scan
    from .sink import RecordSink

FORMAT = "prtip_nb.checkpoint/1"
INTERVAL = 0.15  # seconds between checkpoint writes
FLUSH_AGE = 0.3  # seconds a verdict may wait in the sink before its part is written
#: Config keys that would let a reader of a report reproduce the order or forge cookies.
SECRET_KEYS = ("seed", "secret", "engine_state")


def public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` without the seed and secrets: what reports and Parquet footers carry."""
    return {k: v for k, v in config.items() if k not in SECRET_KEYS}


def checkpoint_name(tag: str = "") -> str:
    if tag and unsafe_name(tag) is not None:  # a tag read from a file must not leave the folder
        raise ValueError(f"checkpoint tag {tag!r} {unsafe_name(tag)}")
    return f"_checkpoint-{tag.rstrip('-')}.json" if tag else "_checkpoint.json"


def shard_key(shard: tuple[int, int]) -> str:
    return f"{shard[0]}/{shard[1]}"


def write_atomic(path: Path, doc: Mapping[str, Any]) -> None:
    """Write JSON so that ``path`` always holds a whole document, even after a power cut.

    Mode 0600: a checkpoint holds the scan's seed and cookie secret (``SECRET_KEYS``)."""
    with atomic_file(path, "w", private=True, durable=True, encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, default=str)


@dataclass
class RunPlan:
    """Where a run begins and how it writes: a fresh scan (the default), a resumed one, or
    one Dask shard. ``Scan.apply_plan`` takes it (engine.resume, engine.shardtask)."""

    scan_id: str | None = None  # None: a new id
    started: datetime | None = None  # the first run's start, kept by a resume
    start: int = 0  # first position of the shard to probe
    resume: bool = False  # append to the scan's existing directory
    tag: str = ""  # part-file tag of this writer ("s003-" for a Dask shard)
    shard: int | None = None  # value of the telemetry/events shard column
    write_hosts: bool = True  # False: the Dask driver writes hosts after merging
    #: What the engines reuse to continue identically (cookie secret, source port).
    engine_state: dict[str, Any] = field(default_factory=dict)


class Watermark:
    """Completed positions of one shard; ``low`` = how many leading positions are complete."""

    def __init__(self, low: int = 0) -> None:
        self.low = low
        self.window = np.zeros(1 << 12, dtype=np.bool_)  # window[i]: position low + i done

    def mark(self, positions: np.ndarray) -> None:
        rel = positions.astype(np.int64) - self.low
        rel = rel[rel >= 0]  # below the mark: a duplicate (a probe retried after a resume)
        if rel.size == 0:
            return
        need = int(rel.max()) + 1
        if need > len(self.window):
            grown = np.zeros(max(need, 2 * len(self.window)), dtype=np.bool_)
            grown[: len(self.window)] = self.window
            self.window = grown
        self.window[rel] = True
        if not self.window[0]:
            return
        w = self.window
        step = len(w) if w.all() else int(np.argmin(w))
        w[: len(w) - step] = w[step:]
        w[len(w) - step :] = False
        self.low += step


class ShardTracker:
    """Turns flushed verdict indices into positions of shard ``k/n`` and marks them.

    ``segments`` are the ``(offset, size)`` parts of the space that engines walk one after
    the other, each in its own permuted order (scan.segments: -sS -sU is TCP, then UDP):
    a shard's positions run through the first part's, then the next part's."""

    def __init__(self, size: int, seed: int, shard: tuple[int, int], start: int = 0,
                 segments: tuple[tuple[int, int], ...] | None = None) -> None:
        from ..targets import Permutation, shard_len

        self.k, self.n = shard
        self.parts = []  # (offset, size, permutation, first position)
        base = 0
        for offset, part in segments or ((0, size),):
            self.parts.append((offset, part, Permutation(part, seed), base))
            base += shard_len(part, shard)
        self.total = base
        self.mark = Watermark(start)
        self.lock = threading.Lock()

    def flushed(self, indices: np.ndarray) -> None:
        if len(indices) == 0:
            return
        idx = indices.astype(np.uint64)
        for offset, size, perm, base in self.parts:
            if len(self.parts) > 1:
                sel = idx[(idx >= np.uint64(offset)) & (idx < np.uint64(offset + size))]
                if not len(sel):
                    continue
            else:
                sel = idx
            i = perm.unshuffle_array(sel - np.uint64(offset))
            pos = shard_position(i, (self.k, self.n)) + np.uint64(base)
            with self.lock:
                self.mark.mark(pos.astype(np.int64))

    @property
    def low_water(self) -> int:
        return self.mark.low


class Checkpointer:
    """A thread that flushes aged verdicts and writes the checkpoint every ``INTERVAL``."""

    def __init__(
        self,
        directory: Path,
        *,
        doc: dict[str, Any],
        tracker: ShardTracker,
        sink: RecordSink,
        builder: ResultBuilder,
        key: str,
        tag: str = "",
        engine_state: dict[str, Any] | None = None,
        on_flush_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.path = directory / checkpoint_name(tag)
        self.on_flush_error = on_flush_error  # a part that cannot be written fails the scan
        self.doc = doc  # the static part: format, scan_id, started, config, seed
        self.engine_state = engine_state if engine_state is not None else {}  # live: engines
        self.tracker, self.sink, self.builder = tracker, sink, builder
        self.key, self.tag = key, tag
        self._synced: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="prtip-checkpoint", daemon=True)

    def start(self) -> Checkpointer:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write("running")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            try:
                self.sink.flush_if_older(FLUSH_AGE)
            except Exception as exc:  # noqa: BLE001 - rows not saved: the scan must fail
                if self.on_flush_error is not None:
                    self.on_flush_error(exc)
                continue
            try:
                self.write("running")
            except Exception:  # noqa: BLE001 - a failed checkpoint is retried next tick
                continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def close(self, status: str) -> None:
        """Stop the thread and write the final checkpoint (``completed``, ``cancelled``...)."""
        self.stop()
        try:
            self.write(status)
        except OSError as exc:  # the last periodic checkpoint stands: resume redoes a little
            import warnings

            warnings.warn(f"could not write the final checkpoint {self.path}: {exc}",
                          stacklevel=2)

    def write(self, status: str) -> None:
        with self._lock:
            low = self.tracker.low_water  # first the mark, then the parts it may count
            parts = self.builder.parts_written
            self._sync(parts)
            state = dict(self.engine_state)
            doc = {
                **self.doc,
                "status": status,
                "updated": datetime.now(UTC).isoformat(),
                "engine_state": state,
                "shards": {
                    self.key: {
                        "low_water": low,
                        "total": self.tracker.total,
                        "status": status,
                        "tag": self.tag,
                        "engine_state": state,
                    }
                },
                "parts": parts,
            }
            write_atomic(self.path, doc)

    def _sync(self, parts: list[str]) -> None:
        """fsync part files not yet synced: a checkpoint never counts rows a crash can lose."""
        new = [p for p in parts if p not in self._synced]
        for name in new:
            try:
                fd = os.open(self.path.parent / "ports" / name, os.O_RDONLY)
            except FileNotFoundError:
                continue  # replaced by finish's merged part
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._synced.add(name)
        if new:
            fsync_dir(self.path.parent / "ports")


def open_builder(config: ScanConfig, plan: RunPlan, probes: int = 0) -> ResultBuilder:
    """The ResultBuilder of a scan run by ``plan``; its meta carries no seed or secret.
    ``probes``: the scan's size, which decides what memory holds (ScanConfig.held_rows)."""
    from ..results import ResultBuilder, ScanMeta, new_scan_id

    meta = ScanMeta(
        scan_id=plan.scan_id or new_scan_id(),
        config=public_config(config.to_json()),
        started=plan.started or datetime.now(UTC),
    )
    return ResultBuilder(
        meta, sink=config.output, resume=plan.resume, tag=plan.tag, shard=plan.shard,
        write_hosts=plan.write_hosts,
        # A resumed run's tally would miss the earlier run's rows: it holds them all.
        hold="all" if plan.resume else config.held_rows(probes),
    )


def start_checkpoint(scan: Scan, sink: RecordSink) -> Checkpointer | None:
    """Checkpoint ``scan`` (if it writes a dataset): age-flush ``sink``, track its marks."""
    cfg, plan, builder = scan.config, scan.plan, scan.builder
    scan.watch_sink(sink)  # the scan's poller age-flushes it for live views
    if cfg.output is None or builder is None:
        return None
    # Only now: a scan without output= loads neither (engine.resume: hashlib, ckcheck).
    from ..results._files import scan_dir
    from .resume import space_digest

    tracker = ShardTracker(scan.space.size, cfg.seed or 0, cfg.shard, plan.start,
                           segments=scan.segments)
    sink.max_age = FLUSH_AGE
    sink.on_flushed = tracker.flushed
    meta = builder.meta
    doc = {
        "format": FORMAT,
        "scan_id": meta.scan_id,
        "started": meta.started.isoformat(),
        "config": cfg.to_json(),  # with the seed: this file is not a report
        "seed": cfg.seed,
        "distributed": False,
        "space": space_digest(scan.space),
    }
    return Checkpointer(
        scan_dir(cfg.output, meta.scan_id), doc=doc, tracker=tracker, sink=sink,
        builder=builder, key=shard_key(cfg.shard), tag=plan.tag, engine_state=scan.engine_state,
        on_flush_error=scan.flush_failed,
    ).start()
