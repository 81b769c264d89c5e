"""``read_scans(root, engine="dask")``: the ports of a dataset as a lazy Dask DataFrame.

One partition per part file (``dask.dataframe.from_map``; a computation reads only the
columns it uses, a host filter is pushed into the Parquet read), with Arrow-backed columns
like the pandas frames. ``scan_id`` comes from the directory, as everywhere.

Dedup: a finished scan's parts are deduplicated on disk by ``ResultBuilder.finish``; only a
scan cut short (no hosts table: killed, or still running) may hold a (host, proto, port)
twice. Those scans alone are shuffled on the key and deduplicated with the rule of
``_arrow.normalize_ports``: an answered state beats a silent one.

Dask is imported here only: ``pip install prtip_nb[dask]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prtip_nb.results import _arrow, _files, schema

__all__ = ["ports_frame"]

KEY = ["host", "proto", "port"]


def _dask() -> Any:
    try:
        import dask.dataframe as dd
    except ImportError as exc:
        raise ImportError(
            "read_scans(engine='dask') needs Dask: pip install 'prtip_nb[dask]'"
        ) from exc
    return dd


def _dedup(pdf: Any) -> Any:
    """One row per key in a pandas partition holding every row of its keys."""
    if len(pdf) == 0:
        return pdf
    silent = ~pdf["state"].astype(str).isin(_arrow.RESPONSIVE)
    order = silent.reset_index(drop=True).sort_values(kind="stable").index
    picked = pdf.iloc[order]
    return picked[~picked.duplicated(KEY)]


def read_part(part: tuple[str, str, Any], columns: list[str] | None = None) -> Any:
    """One part file as a pandas partition (Arrow dtypes); ``columns`` projected by Dask."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, sid, filters = part
    wanted = list(schema.PORTS.names) if columns is None else list(columns)
    table = pq.read_table(path, columns=[c for c in wanted if c != "scan_id"], filters=filters)
    df = table.to_pandas(types_mapper=pd.ArrowDtype)
    if "scan_id" in wanted:
        df.insert(0, "scan_id", pd.Series(sid, index=df.index, dtype=pd.ArrowDtype(pa.string())))
    return df[wanted]


def _meta() -> Any:
    import pandas as pd
    import pyarrow as pa

    ports = schema.empty("ports")
    ports = ports.set_column(0, "scan_id", pa.nulls(0, pa.string()))
    return ports.to_pandas(types_mapper=pd.ArrowDtype)


def ports_frame(dirs: dict[str, Path], host: list[str] | None = None) -> Any:
    """The ports rows of the scans in ``dirs`` (``{scan_id: directory}``) as a dask frame.

    One partition per part file, through ``dask.dataframe.from_map``: a computation reads
    only the columns it uses. (``read_parquet`` would fuse files into partitions by the
    share of columns read, assuming columns of equal size; ports has 11 mostly-null
    columns, so it fused ~11 parts of 500k rows into one and a count of open ports per host
    over 10M rows peaked at 550 MiB. One part per partition peaks under 300.)
    """
    dd = _dask()
    meta = _meta()
    filters = [("host", "in", host)] if host is not None else None
    frames = []
    for sid, directory in dirs.items():
        files = [(str(p), sid, filters) for p in _files.parts(directory, "ports")]
        if not files:
            continue
        ddf = dd.from_map(read_part, files, meta=meta, enforce_metadata=False)
        if not _files.parts(directory, "hosts"):  # cut short: may hold a key twice
            ddf = ddf.shuffle(on=KEY).map_partitions(_dedup, meta=meta)
        frames.append(ddf)
    if not frames:
        from prtip_nb.errors import DatasetError

        raise DatasetError("no ports part files in the scans chosen")
    return frames[0] if len(frames) == 1 else dd.concat(frames)
