"""``sql(query, root)``: DuckDB over a dataset of scans, with one view per table.

Views ``ports``, ``hosts``, ``scripts``, ``os``, ``trace``, ``scan``, ``telemetry`` and
``events`` read ``<root>/scan_id=*/<table>/part-*.parquet`` with hive partitioning, so
``scan_id`` is a column again (typed VARCHAR, never auto-cast: an id like ``20261128``
would otherwise turn into a number). Files are globbed at query time: a scan written since
is seen, and a part being written is not (its temporary name does not match ``part-*``). A
table with no file yet is an empty view of the schema's columns.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from prtip_nb.errors import DatasetError
from prtip_nb.results import _files, schema

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["connect", "sql"]

_NEEDS_DUCKDB = "prtip_nb.sql needs DuckDB, an optional dependency: pip install 'prtip_nb[sql]'"


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError as exc:
        raise ImportError(_NEEDS_DUCKDB) from exc
    return duckdb


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(root: str | os.PathLike[str] = "data/scans") -> Any:
    """An in-memory DuckDB connection with one view per table of ``schema.TABLES``."""
    duckdb = _duckdb()
    path = Path(root)
    if not path.is_dir():
        raise DatasetError(
            f"no scan dataset at {path.resolve()} (no such directory); {_files.HOW_TO_CREATE}"
        )
    con = duckdb.connect()
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
    query: str, root: str | os.PathLike[str] = "data/scans", *, params: Any = None
) -> pd.DataFrame:
    """Run ``query`` (DuckDB SQL over the views ports, hosts, scripts, os, trace, scan,
    telemetry, events) on the dataset at ``root``; return an Arrow-backed DataFrame.

    >>> q = "select host, count(*) n from ports where state = 'open' group by host"
    >>> pn.sql(q, "data/scans")  # doctest: +SKIP
    """
    from prtip_nb.results.result import to_pandas

    con = connect(root)
    try:
        rel = con.sql(query, params=params)
        if rel is None:  # a statement without rows (CREATE, SET, …)
            return to_pandas(pa.table({}))
        # DuckDB >= 1.4 names it to_arrow_table; before, arrow() returned the table.
        table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
    finally:
        con.close()
    return to_pandas(table)
