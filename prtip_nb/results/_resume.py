"""What an earlier run of a scan left in its directory, for a ResultBuilder that resumes it;
and ``side``: a writer's telemetry/events table (its shard column, the earlier rows first).

A resumed scan appends to the same ``scan_id=<id>`` directory: its builder starts from the
ports rows already on disk (so ``finish`` can deduplicate them with the new ones), numbers
its parts after the existing ones, and replaces the earlier telemetry and events parts by
one merged part at the end. A hosts part would mark the scan complete while it runs again,
so it is removed at once (``finish`` writes a new one).

Only the parts of one writer (``tag``) are taken: the shards of a Dask scan each resume
their own.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from prtip_nb.errors import DatasetError
from prtip_nb.results import _arrow, _files, schema

__all__ = ["Prior", "load_prior", "side"]

TABLES = ("ports", "telemetry", "events", "hosts")


@dataclass
class Prior:
    """An earlier run's rows (tables in memory form, with scan_id) and part bookkeeping."""

    ports: pa.Table
    ports_parts: list[str]
    next_number: dict[str, int]
    telemetry: pa.Table | None = None
    events: pa.Table | None = None
    stale: list[Path] = field(default_factory=list)  # to delete once the final parts exist
    t_offset: float = 0.0  # the earlier run's last t: the new rows' t continue from there


def _mine(directory: Path, table: str, tag: str) -> list[tuple[int, Path]]:
    found = [(_files.part_number(p, tag), p) for p in _files.parts(directory, table)]
    return sorted((n, p) for n, p in found if n is not None)


def _read(paths: list[Path], name: str, scan_id: str) -> pa.Table | None:
    import pyarrow.parquet as pq

    if not paths:
        return None
    tables = []
    for path in paths:
        try:
            t = pq.ParquetFile(path).read()
        except (OSError, pa.ArrowException) as exc:
            # Strict: its rows lie below the checkpoint's mark, so a resume would never
            # probe them again; skipping the part would lose them without a word.
            raise DatasetError(
                f"cannot resume: {path} is not a readable Parquet part ({exc}); restore it, "
                "or start a new scan"
            ) from None
        col = _arrow.constant_dict(scan_id, t.num_rows, _arrow.zeros(t.num_rows))
        tables.append(schema.conform(t.add_column(0, schema.SCAN_ID, col), name))
    return pa.concat_tables(tables)


def load_prior(directory: Path, tag: str, scan_id: str) -> Prior:
    """Read the ``tag`` writer's parts under ``directory``; delete its hosts parts."""
    mine = {t: _mine(directory, t, tag) for t in TABLES}
    ports = _read([p for _, p in mine["ports"]], "ports", scan_id)  # first: it may refuse
    for _n, path in mine["hosts"]:
        path.unlink()  # the scan is running again: not complete any more
    prior = Prior(
        ports=ports if ports is not None else schema.empty("ports"),
        ports_parts=[p.name for _, p in mine["ports"]],
        next_number={t: (mine[t][-1][0] + 1 if mine[t] else 0) for t in TABLES},
    )
    prior.telemetry = _read([p for _, p in mine["telemetry"]], "telemetry", scan_id)
    prior.events = _read([p for _, p in mine["events"]], "events", scan_id)
    prior.stale = [p for t in ("telemetry", "events") for _, p in mine[t]]
    ends = [
        pc.max(t["t"]).as_py()
        for t in (prior.telemetry, prior.events)
        if t is not None and t.num_rows
    ]
    prior.t_offset = float(max(ends, default=0.0) or 0.0)
    return prior


def side(name: str, table: pa.Table, shard: int | None, prior: Prior | None) -> pa.Table:
    """A writer's telemetry or events: its shard column set, after an earlier run's rows."""
    if shard is not None:
        n = table.num_rows
        col = pa.Array.from_buffers(pa.uint32(), n, [None, pa.py_buffer(array("I", [shard]) * n)])
        table = table.append_column(schema.SHARD, col)
    before = getattr(prior, name, None)
    if before is None:
        return table
    return pa.concat_tables([before, schema.conform(table, name)])
