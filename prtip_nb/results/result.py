"""ScanResult: the Arrow tables of one scan (or several), shown as pandas on demand.

pandas is imported only when a DataFrame is asked for: building, saving and loading results
stays pandas-free, so the CLI does not pay pandas' import time and memory.
"""

from __future__ import annotations

import os as _os  # as _os: ScanResult.os (the OS table) shadows the name in the class
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from prtip_nb.errors import DatasetError
from prtip_nb.results import _arrow, _files, _hosts, schema
from prtip_nb.results.meta import ScanMeta

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ScanResult"]


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """A DataFrame whose every column is ``pd.ArrowDtype`` (uint16[pyarrow], not object)."""
    import pandas as pd

    return table.to_pandas(types_mapper=pd.ArrowDtype)


class ScanResult:
    """The results of one scan, or of several read together from a dataset.

    ``tables`` maps the names of ``schema.TABLES`` ("ports", "hosts", "scripts", "os",
    "trace", "scan", "telemetry", "events") to Arrow tables of exactly that schema; a table
    not given is empty. ``meta`` is None when the result merges several scans; ``scans``
    then holds each scan's meta.
    """

    def __init__(
        self,
        tables: Mapping[str, pa.Table],
        meta: ScanMeta | None = None,
        *,
        scans: Sequence[ScanMeta] = (),
        note: str | None = None,
    ) -> None:
        unknown = set(tables) - set(schema.TABLES)
        if unknown:
            raise ValueError(f"unknown tables {sorted(unknown)}; expected {list(schema.TABLES)}")
        self.tables: dict[str, pa.Table] = {
            name: schema.conform(tables[name], name) if name in tables else schema.empty(name)
            for name in schema.TABLES
        }
        self.meta = meta
        self.scans: tuple[ScanMeta, ...] = tuple(scans) or ((meta,) if meta else ())
        self.tables["scan"] = _scan_rows(self.tables["scan"], self.scans)
        self._frames: dict[str, pd.DataFrame] = {}
        #: What this result leaves out and where it is, e.g. a big scan's closed and
        #: filtered rows, held on disk only (ResultBuilder's hold="open"); None: nothing.
        self.note = note

    # --- identity -----------------------------------------------------------------------

    @property
    def scan_id(self) -> str | None:
        return self.meta.scan_id if self.meta else None

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.meta.config) if self.meta else {}

    @property
    def started(self) -> datetime | None:
        return min((m.started for m in self.scans), default=None)

    @property
    def ended(self) -> datetime | None:
        ends = [m.ended for m in self.scans]
        if not ends or any(e is None for e in ends):
            return None  # still running, or killed before it could record its end
        return max(e for e in ends if e is not None)

    # --- DataFrames (cached; the tables never change) ------------------------------------

    def _frame(self, name: str) -> pd.DataFrame:
        if name not in self._frames:
            self._frames[name] = to_pandas(self.tables[name])
        return self._frames[name]

    @property
    def ports(self) -> pd.DataFrame:
        return self._frame("ports")

    @property
    def hosts(self) -> pd.DataFrame:
        return self._frame("hosts")

    @property
    def scripts(self) -> pd.DataFrame:
        """NSE-style script output: one row per script, with its structured data."""
        return self._frame("scripts")

    @property
    def os(self) -> pd.DataFrame:
        """OS matches: one row per match, its classes as a list column."""
        return self._frame("os")

    @property
    def trace(self) -> pd.DataFrame:
        """Traceroute hops: one row per (host, ttl)."""
        return self._frame("trace")

    @property
    def scan(self) -> pd.DataFrame:
        """One row per scan: command line, scanner, scan info and where it came from."""
        return self._frame("scan")

    @property
    def telemetry(self) -> pd.DataFrame:
        return self._frame("telemetry")

    @property
    def events(self) -> pd.DataFrame:
        return self._frame("events")

    @property
    def open_ports(self) -> pd.DataFrame:
        if "open_ports" not in self._frames:
            ports = self.tables["ports"]
            is_open = pc.is_in(ports["state"], value_set=_arrow.OPEN)
            self._frames["open_ports"] = to_pandas(ports.filter(is_open))
        return self._frames["open_ports"]

    def inventory(self) -> pd.DataFrame:
        """One row per open port: host, hostname, port, service (``ssl/http`` in a TLS
        tunnel), product, version, CPEs, the host's best OS match and its accuracy, and the
        ids of the scripts that ran on the port."""
        if "inventory" not in self._frames:
            from prtip_nb.results._inventory import inventory_table

            self._frames["inventory"] = to_pandas(inventory_table(self.tables))
        return self._frames["inventory"]

    def summary(self) -> pd.DataFrame:
        """One row per host: host, hostname, state, counts by state, and its open ports as text.

        A result of several scans has one row per (scan_id, host), scan_id first.
        """
        t = _hosts.summary_table(
            self.tables["ports"], self.tables["hosts"], with_scan_id=len(self.scans) > 1
        )
        return to_pandas(t)

    # --- display ------------------------------------------------------------------------

    def _counts(self) -> str:
        hosts = self.tables["hosts"].num_rows
        ports = self.tables["ports"]
        n_open = pc.sum(pc.is_in(ports["state"], value_set=_arrow.OPEN)).as_py() or 0
        plural = "" if hosts == 1 else "s"
        return f"{hosts} host{plural}, {ports.num_rows} ports, {n_open} open"

    def _distinct_counts(self) -> str:
        """Several scans: each host and port counted once, however often it was scanned."""
        hosts = pc.count_distinct(self.tables["hosts"]["host"]).as_py()
        ports = self.tables["ports"].select(["host", "proto", "port", "state"])
        seen = ports.group_by(["host", "proto", "port"]).aggregate([]).num_rows
        is_open = pc.is_in(ports["state"], value_set=_arrow.OPEN)
        n_open = ports.filter(is_open).group_by(["host", "proto", "port"]).aggregate([]).num_rows
        plural = "" if hosts == 1 else "s"
        return (f"{hosts} distinct host{plural}, {seen} distinct ports, "
                f"{n_open} open in at least one scan")

    def __repr__(self) -> str:
        if self.meta is None:
            return f"<ScanResult {len(self.scans)} scans: {self._distinct_counts()}>"
        if self.ended is None:
            took = "running"
        else:
            took = f"{(self.ended - self.meta.started).total_seconds():.1f} s"
        note = f" ({self.note})" if self.note else ""
        return f"<ScanResult {self.meta.scan_id}: {self._counts()}, {took}{note}>"

    def _repr_html_(self) -> str:
        import html  # not at import: html.entities' table, for notebooks only

        head = f"<p><code>{html.escape(repr(self))}</code></p>"
        hosts = self.tables["hosts"].num_rows
        if hosts == 0:
            return head
        more = (
            f"<p>… {hosts - 10} more hosts: see <code>.summary()</code></p>" if hosts > 10 else ""
        )
        return head + self.summary().head(10).to_html(index=False) + more

    # --- Parquet ------------------------------------------------------------------------

    def to_parquet(self, root: str | PathLike[str], *, overwrite: bool = False) -> Path:
        """Write this scan to ``<root>/scan_id=<id>/<table>/part-00000.parquet``; return the dir.

        Refuses (DatasetError) to replace an existing scan of the same id unless ``overwrite``.
        All or nothing: the parts are written into a hidden directory beside it, which is
        renamed into place at the end; a failure removes it and leaves the dataset as it was.
        """
        if self.meta is None:
            raise DatasetError(
                f"to_parquet writes one scan, and this result merges {len(self.scans)}; "
                "they are already stored under their own scan_id"
            )
        directory = _files.scan_dir(root, self.meta.scan_id)
        if directory.exists() and not overwrite:
            raise DatasetError(
                f"{directory} already exists; pass overwrite=True to replace that scan"
            )
        md = self.meta.parquet_metadata()
        # Hidden (a dot, not scan_id=*): no reader lists it while it is being written.
        tmp = directory.with_name(f".{directory.name}.{_os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            # hosts last: its presence is what marks the scan complete to readers. The
            # inventory tables only when they have rows: most scans have none.
            names = [n for n in schema.INVENTORY if self.tables[n].num_rows]
            for name in ("ports", *names, "telemetry", "events", "hosts"):
                _files.write_part(_files.part_path(tmp, name, 0), self.tables[name], md)
            if directory.exists():  # overwrite: the old scan goes only once the new is whole
                old = directory.with_name(f".{directory.name}.{_os.getpid()}.old")
                _os.replace(directory, old)
                _os.replace(tmp, directory)
                shutil.rmtree(old, ignore_errors=True)
            else:
                _os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def from_parquet(cls, root: str | PathLike[str], scan_id: str) -> ScanResult:
        """Read one scan back from a dataset written by :meth:`to_parquet` or a builder."""
        from prtip_nb.results.dataset import read_scans

        return read_scans(root, scan_id)

    # --- other tools' formats (prtip_nb.interop; pyarrow only, no pandas) -----------------

    def to_nmap_xml(self, path: str | PathLike[str]) -> Path:
        """Write nmap XML (``-oX``) that validates against nmap.dtd and that ndiff reads."""
        from prtip_nb.interop.nmap_xml import write_nmap_xml

        return write_nmap_xml(self, path)

    def to_json(self, path: str | PathLike[str]) -> Path:
        """Write the ports table as JSON Lines: one object per row (a ping sweep's hosts)."""
        from prtip_nb.interop.writers import write_jsonl

        return write_jsonl(self, path)

    def to_csv(self, path: str | PathLike[str]) -> Path:
        """Write the ports table as CSV (``tls_san`` joined with ``;``)."""
        from prtip_nb.interop.writers import write_csv

        return write_csv(self, path)

    def to_grepable(self, path: str | PathLike[str]) -> Path:
        """Write nmap's greppable format (``-oG``): one Ports line per host."""
        from prtip_nb.interop.writers import write_grepable

        return write_grepable(self, path)


def _scan_rows(table: pa.Table, scans: Sequence[ScanMeta]) -> pa.Table:
    """``table`` plus a ``scan`` row for each scan that has none: a scan of ours (or one
    imported before schema 2) says what it was from its meta. Imports bring their own row,
    with the file's sha256."""
    have = set(pc.cast(table["scan_id"], pa.string()).to_pylist()) if table.num_rows else set()
    missing = [m for m in scans if m.scan_id not in have]
    if not missing:
        return table
    from prtip_nb.results import _convert as cv

    def args(m: ScanMeta) -> str | None:
        if m.config.get("source"):
            return m.config.get("args")
        from prtip_nb.interop._cmdline import command_line

        try:
            return command_line(m.config)
        except Exception:  # noqa: BLE001 - a record of a scan, never a reason to fail
            return None

    cols: dict[str, list[Any]] = {
        "scan_id": [m.scan_id for m in missing],
        "source": [m.config.get("source") or "prtip_nb" for m in missing],
        "source_file": [m.config.get("file") for m in missing],
        "scanner": [m.config.get("scanner") or "prtip_nb" for m in missing],
        "version": [m.config.get("version") if m.config.get("source") else m.tool_version
                    for m in missing],  # fmt: skip
        "args": [args(m) for m in missing],
        "started": [m.started for m in missing],
        "ended": [m.ended for m in missing],
    }
    rows = cv.table(cols, schema.SCAN)
    return pa.concat_tables([table, rows]) if table.num_rows else rows
