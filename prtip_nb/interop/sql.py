"""``sql(query, root)``: DuckDB over a dataset of scans, with one view per table.

Views ``ports``, ``hosts``, ``scripts``, ``os``, ``trace``, ``scan``, ``telemetry`` and
``events`` read ``<root>/scan_id=*/<table>/part-*.parquet`` with hive partitioning, so
``scan_id`` is a column again (typed VARCHAR, never auto-cast: an id like ``20261128``
would otherwise turn into a number). Files are globbed at query time: a scan written since
is seen, and a part being written is not (its temporary name does not match ``part-*``). A
table with no file yet is an empty view of the schema's columns.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from prtip_nb.errors import DatasetError
from prtip_nb.results import _files, schema

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["connect", "sql"]

#: DuckDB's memory_limit unless the caller says otherwise: a 13.1M-row scan's group-bys
#: stay well inside a GiB (the rest spills to disk), and a notebook keeps its memory.
MEMORY_LIMIT = "512MB"
_NEEDS_DUCKDB = "prtip_nb.sql needs DuckDB, an optional dependency: pip install 'prtip_nb[sql]'"


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError as exc:
        raise ImportError(_NEEDS_DUCKDB) from exc
    return duckdb


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _spill_dir() -> str:
    """A private directory for DuckDB's spill files, removed when the process exits.

    DuckDB's default for an in-memory database is ``.tmp`` in the working directory (a
    notebook's folder); this keeps the spill out of the user's files."""
    global _SPILL
    if _SPILL is None:
        _SPILL = tempfile.mkdtemp(prefix="prtip_nb-duckdb-")
        atexit.register(shutil.rmtree, _SPILL, True)
    return _SPILL


_SPILL: str | None = None


def connect(root: str | os.PathLike[str] = "data/scans", *,
            memory_limit: str | None = MEMORY_LIMIT) -> Any:
    """An in-memory DuckDB connection with one view per table of ``schema.TABLES``.

    ``memory_limit`` (DuckDB's setting, e.g. "2GB"; None: DuckDB's default, 80% of RAM)
    caps what a query holds; beyond it DuckDB spills to a private temp directory.
    MEASURED on a 13.1M-row scan (docs/architecture.md, "Scale"): a ``count(distinct
    host)`` group-by peaked at 1,492 MiB without a limit, 705-719 MiB with 512MB, in about
    the same time."""
    duckdb = _duckdb()
    path = Path(root)
    if not path.is_dir():
        raise DatasetError(
            f"no scan dataset at {path.resolve()} (no such directory); {_files.HOW_TO_CREATE}"
        )
    config = {"temp_directory": _spill_dir()}
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(config=config)
    for table in schema.TABLES:
        glob = path / f"scan_id=*/{table}/{_files.PART_GLOB}"
        if any(path.glob(f"scan_id=*/{table}/{_files.PART_GLOB}")):
            source = (f"read_parquet({_quote(str(glob))}, hive_partitioning = true, "
                      "hive_types = {'scan_id': VARCHAR}, union_by_name = true)")  # fmt: skip
            # scan_id first, as in memory (the hive column would otherwise come last)
            con.execute(f"CREATE VIEW {table} AS SELECT scan_id, * EXCLUDE (scan_id) FROM {source}")
        else:  # DuckDB refuses a glob that matches nothing: an empty view with the columns
            empty = schema.empty(table)
            con.register(f"_empty_{table}", empty)
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM _empty_{table}")
    return con


def sql(
    query: str, root: str | os.PathLike[str] = "data/scans", *, params: Any = None,
    memory_limit: str | None = MEMORY_LIMIT,
) -> pd.DataFrame:
    """Run ``query`` (DuckDB SQL over the views ports, hosts, scripts, os, trace, scan,
    telemetry, events) on the dataset at ``root``; return an Arrow-backed DataFrame.
    ``memory_limit``: see ``connect``.

    >>> q = "select host, count(*) n from ports where state = 'open' group by host"
    >>> pn.sql(q, "data/scans")  # doctest: +SKIP
    """
    from prtip_nb.results.result import to_pandas

    con = connect(root, memory_limit=memory_limit)
    try:
        rel = con.sql(query, params=params)
        if rel is None:  # a statement without rows (CREATE, SET, …)
            return to_pandas(pa.table({}))
        # DuckDB >= 1.4 names it to_arrow_table; before, arrow() returned the table.
        table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
    finally:
        con.close()
    return to_pandas(table)
