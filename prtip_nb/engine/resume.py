"""Resume a scan after a stop, a cancel or a crash: ``pn.resume(root, scan_id)``.

One way in: ``resumed`` (``Scan.resume``) reads the checkpoint and returns the run that
continues it, a ``Scan`` or, for a Dask scan, a ``DistributedScan``, planned through their
public ``apply_plan``; ``resume`` (``pn.resume``) starts it and waits.

The scan is rebuilt from its checkpoint (engine.checkpoint): the same config, seed, shard
and engine state (cookie secret), so the order and cookies are those of the first run.
Each shard restarts at its low-water mark and appends parts to the same ``scan_id=``
directory; the builder starts from the rows on disk and ``finish`` deduplicates
(host, proto, port), so the final dataset has one row per probed port.

Targets are parsed again (an -iL file, a hostname): if they no longer give the same index
space the order would differ, so resume refuses (``space`` in the checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, DatasetError, ScanError
from .checkpoint import FORMAT, RunPlan, checkpoint_name
from .ckcheck import check_doc

if TYPE_CHECKING:
    from ..config import ScanConfig
    from ..results import ScanResult
    from ..targets import TargetSpace
    from .distributed import DistributedScan
    from .scan import Scan

__all__ = ["Checkpoint", "config_from_json", "load", "resume", "resumed", "space_digest"]

#: What defines the scan's index space and rows: a resume cannot change these.
FIXED = ("targets", "ports", "top_ports", "exclude", "exclude_file", "input_file", "family",
         "method", "seed", "shard", "keep", "output")  # fmt: skip


@dataclass
class Checkpoint:
    """A scan's checkpoint files, merged: the scan-wide part and every shard's state."""

    scan_id: str
    config: dict[str, Any]
    started: datetime
    status: str
    shards: dict[str, dict[str, Any]]
    engine_state: dict[str, Any] = field(default_factory=dict)
    distributed: bool = False
    space: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(s.get("status") == "completed" for s in self.shards.values())


def load(directory: Path) -> Checkpoint:
    """Read ``_checkpoint*.json`` of one scan directory; shard files override the manifest."""
    main = directory / checkpoint_name()
    files = sorted(directory.glob("_checkpoint-*.json"))
    if not main.exists() and not files:
        raise DatasetError(
            f"no checkpoint in {directory}: only scans run with output= can be resumed"
        )
    scan_id = directory.name.split("=", 1)[-1]
    docs = []
    for path in ([main] if main.exists() else []) + files:
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError too
            raise DatasetError(
                f"cannot read checkpoint {path}: {exc}; it was cut short or damaged, and "
                "the scan cannot be resumed from it"
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            what = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise DatasetError(f"{path} is a checkpoint of format {what!r:.80}, not {FORMAT!r}")
        docs.append(check_doc(doc, path, scan_id))  # before any field reaches a path
    base = docs[0]
    shards: dict[str, dict[str, Any]] = {}
    for doc in docs:  # a shard's own file is newer than the manifest's entry for it
        for key, entry in doc.get("shards", {}).items():
            shards.setdefault(key, {}).update(entry)
    if base.get("distributed") and not all("index" in e for e in shards.values()):
        raise DatasetError(f"{main}: a Dask scan's shard has no index; resume refuses it")
    return Checkpoint(
        scan_id=base["scan_id"],
        config=base["config"],
        started=datetime.fromisoformat(base["started"]),
        status=base.get("status", "running"),
        shards=shards,
        engine_state=dict(base.get("engine_state") or {}),
        distributed=bool(base.get("distributed", False)),
        space=dict(base.get("space") or {}),
    )


def space_digest(space: TargetSpace) -> dict[str, Any]:
    """The index space's size and a digest of its targets and ports (resume checks them)."""
    text = json.dumps([list(r) for r in space.targets.ranges]) + space.ports.to_spec()
    return {"size": space.size, "digest": hashlib.sha256(text.encode()).hexdigest()[:16]}


def config_from_json(doc: dict[str, Any]) -> ScanConfig:
    """ScanConfig from ``ScanConfig.to_json()`` output, of this version or an earlier one
    (whose ``extra`` dict ``config.upgrade_json`` turns into fields)."""
    from ..config import ScanConfig, upgrade_json

    doc = upgrade_json(doc)
    names = {f.name for f in dataclasses.fields(ScanConfig)}
    unknown = sorted(set(doc) - names - {"extra"})
    unknown += [f"extra.{k}" for k in sorted(doc.get("extra") or {})]
    if unknown:
        raise DatasetError(
            f"the scan's config has unknown option(s) {', '.join(map(repr, unknown))}: it was "
            "written by another version of prtip_nb, or edited; start a new scan"
        )
    kw = dict(doc)
    try:
        kw["targets"] = tuple(kw.get("targets") or ())
        kw["exclude"] = tuple(kw.get("exclude") or ())
        shard = kw.get("shard", "1/1")
        if isinstance(shard, str):
            k, n = shard.split("/")
            kw["shard"] = (int(k), int(n))
        else:
            kw["shard"] = tuple(shard)
        return ScanConfig(**kw)
    except (TypeError, ValueError) as exc:  # ConfigError is a ValueError
        raise DatasetError(f"the scan's saved config is not valid: {exc}") from None


def _check_options(options: dict[str, Any]) -> None:
    fixed = sorted(set(options) & set(FIXED))
    if fixed:
        raise ConfigError(
            f"a resumed scan keeps its {', '.join(fixed)}",
            hint="resume changes only pacing (rate, timing, concurrency, workers, ...)",
        )


def _check_space(ck: Checkpoint, space: TargetSpace) -> None:
    if ck.space and space_digest(space) != ck.space:
        raise ScanError(
            f"the targets of scan {ck.scan_id} no longer give the same index space "
            f"(was {ck.space}, now {space_digest(space)}): a changed -iL file or a hostname "
            "that resolves elsewhere. Start a new scan instead"
        )


def remove_debris(directory: Path) -> list[Path]:
    """Delete the temporary files (``.<name>.XXXX.tmp``) a killed writer left in a scan's
    folder; call it only while no process writes the scan. Links are removed, not followed."""
    gone = []
    for folder in (directory, *(p for p in directory.iterdir() if p.is_dir()
                                and not p.is_symlink())):  # fmt: skip
        for path in folder.glob(".*.tmp"):
            if path.is_symlink() or path.is_file():
                path.unlink(missing_ok=True)
                gone.append(path)
    return gone


def resumed(
    root: str | os.PathLike[str], scan_id: str, *, cluster: Any = None, **options: Any
) -> Scan | DistributedScan:
    """The scan (not started) that continues ``scan_id`` under ``root``: ``Scan.resume``.

    The one place that turns a checkpoint into a run: a scan of one process comes back as
    a ``Scan`` planned to continue its shard (``Scan.apply_plan``), a Dask scan as a
    ``DistributedScan`` planned to continue its unfinished shards on ``cluster`` (or in
    turn in this process). Both have the same lifecycle (engine.lifecycle)."""
    from ..results._files import scan_dir

    directory = scan_dir(root, scan_id)
    ck = load(directory)
    _check_options(options)
    if ck.distributed:
        scan: Scan | DistributedScan = _distributed(root, ck, cluster, options)
    else:
        scan = _single(root, ck, options)
    remove_debris(directory)  # a kill -9 mid-write leaves its temp file
    return scan


def _single(root: str | os.PathLike[str], ck: Checkpoint, options: dict[str, Any]) -> Scan:
    from .scan import Scan

    if len(ck.shards) != 1:
        raise DatasetError(
            f"scan {ck.scan_id}'s checkpoint lists {len(ck.shards)} shards but is not a Dask "
            "scan's: it was edited, or written by another version; start a new scan"
        )
    key, state = next(iter(ck.shards.items()))
    k, n = (int(v) for v in key.split("/"))
    cfg = config_from_json(ck.config).replace(output=os.fspath(root), shard=(k, n), **options)
    scan = Scan(config=cfg)
    _check_space(ck, scan.space)
    scan.apply_plan(RunPlan(
        scan_id=ck.scan_id, started=ck.started, start=int(state.get("low_water", 0)),
        resume=True, tag=str(state.get("tag", "")),
        engine_state=dict(state.get("engine_state") or ck.engine_state),
    ))
    return scan


def _distributed(root: str | os.PathLike[str], ck: Checkpoint, cluster: Any,
                 options: dict[str, Any]) -> DistributedScan:
    from .distributed import DistributedScan

    cfg = config_from_json(ck.config).replace(output=os.fspath(root), **options)
    ds = DistributedScan(config=cfg, cluster=cluster, shards=len(ck.shards))
    _check_space(ck, ds.space)
    ds.apply_plan(RunPlan(scan_id=ck.scan_id, started=ck.started, resume=True),
                  ck.shards.values())
    return ds


def resume(
    root: str | os.PathLike[str], scan_id: str, *, cluster: Any = None, **options: Any
) -> ScanResult:
    """Continue scan ``scan_id`` under ``root`` from its checkpoint; return the whole result.

    Works after ``cancel()``, Ctrl-C or kill -9 of a scan run with ``output=root``. A scan
    that had completed is read back as it is. A Dask scan's shards resume on ``cluster``
    (or one after another in this process without it). ``options`` may change the pacing.
    ``Scan.resume`` gives the same scan without starting it (to watch or cancel it).

    >>> res = pn.resume("data/scans", "20261128T101500Z-ab12cd")   # doctest: +SKIP
    """
    from ..results import read_scans
    from ..results._files import scan_dir

    if load(scan_dir(root, scan_id)).complete:
        return read_scans(root, scan_id)
    return resumed(root, scan_id, cluster=cluster, **options).start().wait()
