"""Reading a dataset of scans: ``<root>/scan_id=<id>/<table>/part-*.parquet``.

``scan_id`` comes from the hive directory, never from the files. Choosing scans prunes whole
directories before any file is opened; the host filter is pushed into the Parquet scan.
A scan without a hosts table was cut short (cancelled or killed): its hosts are derived
from its ports, and its ports are deduplicated like a finished scan's.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import pyarrow as pa
import pyarrow.compute as pc

from prtip_nb.errors import DatasetError
from prtip_nb.results import _arrow, _files, _hosts, schema
from prtip_nb.results import _convert as cv
from prtip_nb.results.meta import ScanMeta, parse_time
from prtip_nb.results.result import ScanResult, to_pandas

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["list_scans", "read_scans"]


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def read_meta(directory: Path, check: _files.PartCheck | None = None) -> ScanMeta:
    """The meta of one scan from one footer: hosts (has ``ended``) if the scan finished,
    else its newest ports part. Damaged parts are skipped (or raise) as ``check`` says."""
    check = check or _files.PartCheck(strict=True)
    for table in ("hosts", "events", "ports", "telemetry"):
        found = check.parts(directory, table)
        if found:
            return ScanMeta.from_parquet_metadata(
                _files.read_footer(found[-1]), path=str(found[-1])
            )
    raise DatasetError(f"{directory} holds no readable part files")


def _read_table(root: Path, dirs: dict[str, Path], name: str, host: list[str] | None,
                check: _files.PartCheck, where: pc.Expression | None = None,
                states: list[str] | None = None) -> pa.Table:
    files = [p for d in dirs.values() for p in check.parts(d, name)]
    try:
        return _scan_files(root, dirs, name, host, files, where, states)
    except (OSError, pa.ArrowException):
        pass  # a footer that reads over pages that do not: find the file, then skip it
    for path in files:
        try:
            _scan_files(root, dirs, name, host, [path], where)
        except (OSError, pa.ArrowException) as exc:
            check.reject(path, exc)
    return _scan_files(root, dirs, name, host, [p for p in files if p not in check.skipped],
                       where, states)


def _scan_files(root: Path, dirs: dict[str, Path], name: str, host: list[str] | None,
                paths: list[Path], where: pc.Expression | None = None,
                states: list[str] | None = None) -> pa.Table:
    import pyarrow.dataset as ds

    files = [str(p) for p in paths]
    if not files:
        return schema.empty(name)
    # Explicit hive partitioning with the known ids: scan_id gets the schema's dictionary type.
    partitioning = ds.partitioning(
        pa.schema([schema.SCAN_ID]),
        flavor="hive",
        dictionaries={"scan_id": cv.plain_strings(list(dirs))},
    )
    dataset = ds.dataset(
        files,
        schema=schema.TABLES[name],  # older files missing a column read it as nulls
        format="parquet",
        partitioning=partitioning,
        partition_base_dir=str(root),
    )
    if name != "ports":
        where = None  # ``where`` filters ports rows only
    elif states is not None:
        dataset = _prune_states(dataset, states)
    if host is not None and "host" in dataset.schema.names:
        by_host = pc.field("host").isin(cv.plain_strings(host))
        where = by_host if where is None else where & by_host
    return dataset.to_table(filter=where)


def _prune_states(dataset: Any, states: list[str]) -> Any:
    """PRUNE: only the row groups whose ``state`` statistics can hold one of ``states``.

    Parts written while a scan runs hold a row group per state (``group_by_state``), so
    the open rows of a 13.1M-row scan are read without decoding the other rows' hosts;
    Arrow's own pruning does not use the statistics of a dictionary column. Files with
    one mixed row group (older, or merged at finish) are read whole, as before.
    """
    import pyarrow.dataset as ds

    kept = []
    for frag in dataset.get_fragments():
        groups = []
        for rg in frag.row_groups:
            st = (rg.statistics or {}).get("state")
            lo, hi = (st or {}).get("min"), (st or {}).get("max")
            if not isinstance(lo, str) or not isinstance(hi, str) \
                    or any(lo <= w <= hi for w in states):
                groups.append(rg.id)
        if len(groups) == len(frag.row_groups):
            kept.append(frag)
        elif groups:
            kept.append(frag.subset(row_group_ids=groups))
    return ds.FileSystemDataset(kept, dataset.schema, dataset.format, dataset.filesystem)


@overload
def read_scans(
    root: str | os.PathLike[str],
    scan_id: str | Sequence[str] | None = None,
    *,
    host: str | Sequence[str] | None = None,
    state: str | Sequence[str] | None = None,
    port: int | Sequence[int] | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    engine: Literal["arrow"] = "arrow",
    strict: bool = False,
) -> ScanResult: ...


@overload
def read_scans(
    root: str | os.PathLike[str],
    scan_id: str | Sequence[str] | None = None,
    *,
    host: str | Sequence[str] | None = None,
    state: str | Sequence[str] | None = None,
    port: int | Sequence[int] | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    engine: Literal["dask"],
    strict: bool = False,
) -> Any: ...


def read_scans(
    root: str | os.PathLike[str],
    scan_id: str | Sequence[str] | None = None,
    *,
    host: str | Sequence[str] | None = None,
    state: str | Sequence[str] | None = None,
    port: int | Sequence[int] | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    engine: str = "arrow",
    strict: bool = False,
) -> Any:
    """Every scan under ``root`` (or those named) as one ScanResult.

    ``host`` keeps only those hosts' rows, ``state`` (e.g. "open") and ``port`` only those
    ports rows: all three are pushed into the Parquet scan, so a 13.1M-row dataset's open
    ports are read without its other rows ever being in memory (the hosts table is read as
    written: its counts still cover every state). ``since``/``until`` keep scans started in
    ``[since, until)``. The result has ``meta`` set when exactly one scan is read.
    ``engine="dask"`` returns the ports instead as a lazy ``dask.dataframe.DataFrame``
    (one partition per part file), for datasets bigger than memory (``results._dask``).

    A damaged part file (truncated, not Parquet) is skipped with a warning that names it;
    ``strict=True`` raises a DatasetError naming it instead.
    """
    if engine not in ("arrow", "dask"):
        raise ValueError(f"engine must be 'arrow' or 'dask', not {engine!r}")
    root = Path(root)
    dirs = _files.scan_dirs(root)
    wanted = _as_list(scan_id)
    if wanted is not None:
        unknown = [s for s in wanted if s not in dirs]
        if unknown:
            known = ", ".join(list(dirs)[-5:])
            raise DatasetError(f"no scan {unknown[0]!r} in {root.resolve()}; latest there: {known}")
        dirs = {s: dirs[s] for s in wanted}
    check = _files.PartCheck(strict)
    metas = {sid: m for sid, d in dirs.items() if (m := _meta_or_skip(d, check)) is not None}
    lo = parse_time(since, what="since") if since is not None else None
    hi = parse_time(until, what="until") if until is not None else None
    metas = {
        sid: m
        for sid, m in metas.items()
        if (lo is None or m.started >= lo) and (hi is None or m.started < hi)
    }
    dirs = {sid: dirs[sid] for sid in metas}
    hosts_wanted = _as_list(host)
    if engine == "dask":
        from prtip_nb.results._dask import ports_frame

        return ports_frame(dirs, hosts_wanted)
    where = _ports_filter(state, port)
    tables = {name: _read_table(root, dirs, name, hosts_wanted, check, where, _as_list(state))
              for name in schema.TABLES}
    ports = _arrow.normalize_ports(tables["ports"])
    hosts = tables["hosts"]
    cut_short = [sid for sid, d in dirs.items() if not check.parts(d, "hosts")]
    if cut_short:
        mine = ports.filter(pc.is_in(ports["scan_id"], value_set=cv.plain_strings(cut_short)))
        hosts = pa.concat_tables([schema.conform(hosts, "hosts"), _hosts.derive_hosts(mine)])
    # Version 1 scans: derive the v2 columns that can be (schema.upgrade).
    old = [sid for sid, m in metas.items() if m.schema_version < 2]
    tables.update(ports=ports, hosts=schema.upgrade(_hosts.sort_hosts(hosts), "hosts", old))
    for name in ("telemetry", "events"):
        tables[name] = _sort_by_scan(tables[name])
    scans = [metas[s] for s in sorted(metas)]
    return ScanResult(tables, scans[0] if len(scans) == 1 else None, scans=scans)


def _meta_or_skip(directory: Path, check: _files.PartCheck) -> ScanMeta | None:
    """The scan's meta; None (after a warning) when not one of its parts reads."""
    try:
        return read_meta(directory, check)
    except DatasetError:
        if check.strict:
            raise
        warnings.warn(f"skipped {directory}: none of its part files reads", stacklevel=3)
        return None


def _ports_filter(state: str | Sequence[str] | None,
                  port: int | Sequence[int] | None) -> pc.Expression | None:
    """The ports rows' filter for ``state`` and ``port`` (None: no filter)."""
    where = None
    states = _as_list(state)
    if states is not None:
        bad = [s for s in states if s not in schema.STATES]
        if bad:
            raise ValueError(f"state {bad[0]!r} is not one of nmap's words: "
                             f"{', '.join(schema.STATES)}")
        # Compared as text: the column is dictionary-encoded, each file with its own.
        where = pc.field("state").cast(pa.string()).isin(cv.plain_strings(states))
    if port is not None:
        ports = [port] if isinstance(port, int) else [int(p) for p in port]
        if any(not 0 <= p < 65536 for p in ports):
            raise ValueError(f"port must be 0-65535, not {ports}")
        by_port = pc.field("port").isin(cv.numbers(ports, pa.uint16()))
        where = by_port if where is None else where & by_port
    return where


def _sort_by_scan(table: pa.Table) -> pa.Table:
    if table.num_rows == 0:
        return table
    keys = pa.table({"scan": _arrow.text_rank(table["scan_id"]), "t": table["t"]})
    return table.take(pc.sort_indices(keys, sort_keys=[("scan", "ascending"), ("t", "ascending")]))


def _n_open(directory: Path, complete: bool, check: _files.PartCheck) -> int:
    import pyarrow.parquet as pq

    if complete:  # one small column of one row per host
        t = pq.read_table(check.parts(directory, "hosts"), columns=["open"])
        return int(pc.sum(t["open"]).as_py() or 0)
    n = 0  # cut short: count the open states (a dictionary column, cheap to read)
    for part in check.parts(directory, "ports"):
        try:
            state = pq.read_table(part, columns=["state"])["state"]
        except (OSError, pa.ArrowException) as exc:
            check.reject(part, exc)
            continue
        n += int(pc.sum(pc.is_in(state, value_set=_arrow.OPEN)).as_py() or 0)
    return n


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def list_scans(root: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per scan: scan_id, started, ended, complete, targets, ports, method,
    n_ports, n_open, from footers (only the hosts counts are read for a finished scan).

    ``complete`` is False for a scan that was cancelled or killed (no hosts table); its
    n_ports counts rows as written, before dedup.
    """
    import pyarrow.parquet as pq

    rows = []
    check = _files.PartCheck()  # a damaged part is skipped, with a warning naming it
    for sid, d in _files.scan_dirs(root).items():
        meta = _meta_or_skip(d, check)
        if meta is None:
            continue
        complete = bool(check.parts(d, "hosts"))
        n_ports = sum(pq.read_metadata(p).num_rows for p in check.parts(d, "ports"))
        rows.append(
            {
                "scan_id": sid,
                "started": meta.started,
                "ended": meta.ended,
                "complete": complete,
                "targets": _text(meta.config.get("targets")),
                "ports": _text(meta.config.get("ports")),
                "method": _text(meta.config.get("method")),
                "n_ports": n_ports,
                "n_open": _n_open(d, complete, check),
            }
        )
    ts = pa.timestamp("us", tz="UTC")
    columns = pa.schema(
        [("scan_id", pa.string()), ("started", ts), ("ended", ts), ("complete", pa.bool_()),
         ("targets", pa.string()), ("ports", pa.string()), ("method", pa.string()),
         ("n_ports", pa.int64()), ("n_open", pa.int64())]
    )  # fmt: skip
    return to_pandas(pa.Table.from_pylist(rows, schema=columns))
