"""ResultBuilder: the receive loop's sink for results.

Ports rows arrive as schema.PORTS record batches (``add_batch``: engine/sink.py's
RecordSink builds them from verdict records with numpy). With a sink each batch becomes one
complete Parquet part file at once: a cancelled or killed scan keeps every row it was given.
Dedup, sorting and the hosts table happen once, at ``snapshot``/``finish``, on whole columns.

Threads: ``add_*`` and ``finish`` belong to the scanning thread; ``snapshot`` and
``host_states`` may be called from any thread (a live view).

Imports: pyarrow and the stdlib only (pyarrow.parquet once writing) — never pandas.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pyarrow as pa

from prtip_nb.errors import DatasetError
from prtip_nb.results import _arrow, _files, _hostnames, _hosts, _os, _resume, schema
from prtip_nb.results import _convert as cv
from prtip_nb.results.meta import ScanMeta, new_scan_id
from prtip_nb.results.result import ScanResult

__all__ = ["ResultBuilder", "ScanMeta", "new_scan_id"]

COMPACT_HELD = 64  # held batches merged into one (hold="open")
# Rows as the builder collects them: the file schema less ``shard`` (one value per builder).
_TELEMETRY = schema.file_schema("telemetry").remove(schema.TELEMETRY.get_field_index("shard") - 1)
_EVENTS = schema.file_schema("events").remove(schema.EVENTS.get_field_index("shard") - 1)


class ResultBuilder:
    """Collects one scan's results; ``finish`` returns its ScanResult.

    ``sink`` is a dataset root (e.g. "data/scans"): parts go to
    ``<sink>/scan_id=<id>/<table>/part-NNNNN.parquet``.
    A Dask shard's writer tags its parts (``part-s003-NNNNN``), fills the ``shard`` column
    and leaves hosts to the merge (``write_hosts=False``); ``resume=True`` appends to an
    earlier run's directory, starting from its rows (``results._resume``).
    ``hold="open"`` (needs a sink): memory keeps only the open rows, the parts every row,
    and finish leaves the parts as written; give ``finish`` the hosts table then (the
    held rows cannot tell the closed and filtered counts).
    """

    def __init__(
        self,
        meta: ScanMeta,
        *,
        sink: str | os.PathLike[str] | None = None,
        resume: bool = False,
        tag: str = "",
        shard: int | None = None,
        write_hosts: bool = True,
        hold: str = "all",
    ) -> None:
        self.meta = meta
        self._dir = _files.scan_dir(sink, meta.scan_id) if sink is not None else None
        self._tag, self._shard, self._write_hosts = tag, shard, write_hosts
        if self._dir is not None and self._dir.exists() and not (resume or tag):
            # Two scans writing one directory would mix their rows: refuse before scanning.
            raise DatasetError(f"{self._dir} already exists; scan ids must be unique")
        if resume and self._dir is None:
            raise DatasetError("resume=True needs the sink the scan was written to")
        if hold not in ("all", "open"):
            raise ValueError(f"hold must be 'all' or 'open', not {hold!r}")
        if hold == "open" and self._dir is None:
            raise DatasetError("hold='open' needs a sink: the rows not held go to its parts")
        #: "open": memory holds the open rows only, the parts every row (flat memory).
        self.hold = hold
        self._lock = threading.Lock()
        self._batches: list[pa.RecordBatch] = []
        self._compacted = 0  # leading held batches already merged (hold="open")
        self._added = 0  # ports rows given, before dedup (what the parts hold)
        self._parts_written: list[str] = []
        self._services: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._os_rows: list[dict[str, Any]] = []  # -O: os table rows, host columns
        self._os_hosts: dict[str, dict[str, Any]] = {}
        self._names: dict[str, tuple[str, bool | None]] = {}  # reverse DNS (add_hostnames)
        self._host_cols: dict[str, dict[str, Any]] = {}  # add_host_columns
        self._inventory: dict[str, list[dict[str, Any]]] = {}  # add_rows: trace, os, scripts
        self._telemetry: list[tuple[Any, ...]] = []
        self._events: list[tuple[float, str, str | None]] = []
        self._result: ScanResult | None = None
        self._next = {"ports": 0, "telemetry": 0, "events": 0, "hosts": 0, "scripts": 0}
        self._prior: _resume.Prior | None = None
        self._t_offset = 0.0  # a resumed run's times continue from the earlier run's
        if resume and self._dir is not None and self._dir.exists():
            self._prior = prior = _resume.load_prior(self._dir, tag, meta.scan_id)
            self._t_offset = prior.t_offset
            self._batches = [_held(b, hold) for b in prior.ports.to_batches()]
            self._added = prior.ports.num_rows
            self._parts_written = list(prior.ports_parts)
            self._next = dict(prior.next_number)

    # --- ports rows ---------------------------------------------------------------------

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Ports rows in bulk: schema.PORTS exactly (RecordSink's, from ``probes.records``).

        With a sink the batch becomes a Parquet part at once.
        """
        if not batch.schema.equals(schema.PORTS):
            raise ValueError(f"add_batch needs schema.PORTS, got {batch.schema}")
        with self._lock:  # snapshot() copies the list on its thread; compaction rewrites it
            self._batches.append(_held(batch, self.hold))
            self._added += batch.num_rows
            if self.hold == "open":
                self._compact_held()
        if self._dir is not None:
            self._write("ports", pa.Table.from_batches([batch]), by_state=True)

    def _compact_held(self) -> None:
        """Merge the small held batches into one once there are COMPACT_HELD of them.

        HELD ROWS: a 16K-row batch filtered to its open rows keeps ~300 rows in 22 columns
        of their own small buffers (null columns, offsets, padding): ~130 B a row in the
        Arrow pool, measured on a /17; one batch of their concatenation ~50 B."""
        small = len(self._batches) - self._compacted
        if small < COMPACT_HELD:
            return
        tail = self._batches[self._compacted:]
        merged = _arrow.concat_compact(tail)
        self._batches[self._compacted:] = [merged]
        self._compacted += 1

    # --- side tables --------------------------------------------------------------------

    def add_services(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Service/TLS columns (``_arrow.SERVICE_COLUMNS``) for ports keyed by host/proto/port.

        Later rows for the same port update earlier ones field by field; merged at finish.
        """
        for row in rows:
            key = (str(row["host"]), str(row["proto"]), int(row["port"]))
            entry = self._services.setdefault(key, {})
            entry.update({k: v for k, v in row.items() if v is not None})

    def add_scripts(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Rows of the ``scripts`` table (``schema.SCRIPTS`` less ``scan_id``): script output."""
        self.add_rows("scripts", rows)

    def add_os(self, rows: Iterable[Mapping[str, Any]],
               hosts: Mapping[str, Mapping[str, Any]]) -> None:
        """OS detection results: ``os`` table rows and per-host columns (``_os.attach``)."""
        with self._lock:
            self._os_rows.extend(dict(r) for r in rows)
            self._os_hosts.update({h: dict(v) for h, v in hosts.items()})

    def add_hostnames(self, names: Mapping[str, tuple[str, bool | None]]) -> None:
        """Reverse-DNS names (address -> (name, forward-confirmed)), merged into the hosts
        table at finish (``_hostnames.merge_names``)."""
        with self._lock:
            self._names.update(names)

    def add_host_columns(self, values: Mapping[str, Mapping[str, Any]]) -> None:
        """Hosts-table columns by address (e.g. ``pseudo_services``), set at finish."""
        with self._lock:
            for host, cols in values.items():
                self._host_cols.setdefault(host, {}).update(cols)

    def add_rows(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Rows of an inventory table (``schema.INVENTORY``: "trace", "os", "scripts") as
        dicts of its columns (scan_id is added); built and written at finish."""
        if table not in schema.INVENTORY or table == "scan":
            raise ValueError(f"add_rows takes one of {schema.INVENTORY[:-1]}, not {table!r}")
        with self._lock:
            self._inventory.setdefault(table, []).extend(dict(r) for r in rows)

    def add_telemetry(
        self,
        t: float,
        sent: int,
        received: int,
        open: int,
        retries: int,
        pps: float,
        rss_bytes: int,
        cpu_percent: float,
        *,
        pps_received: float | None = None,
        threads: int | None = None,
        rate: Any = None,
    ) -> None:
        """One telemetry row; ``rate`` is the engine's RateState (rate in force, reason)."""
        self._telemetry.append(
            (t + self._t_offset, sent, received, open, retries, pps, pps_received, rss_bytes,
             cpu_percent, threads, None if rate is None else rate.rate,
             None if rate is None or not rate.reason else rate.reason)
        )

    def add_event(self, t: float, kind: str, payload: Mapping[str, Any] | None) -> None:
        text = None if payload is None else json.dumps(dict(payload), default=str)
        self._events.append((t + self._t_offset, kind, text))

    @property
    def parts_written(self) -> list[str]:
        """Names of the ports part files this scan has on disk now (a copy)."""
        return list(self._parts_written)

    def telemetry_rows(self, start: int = 0) -> list[tuple[Any, ...]]:
        """Telemetry rows ``start:`` as tuples (``_TELEMETRY`` order), e.g. to forward live."""
        return self._telemetry[start:]

    @property
    def rows(self) -> int:
        """Ports rows added so far (before dedup)."""
        return self._added

    # --- parts --------------------------------------------------------------------------

    def _write(self, table: str, data: pa.Table, *, ended: datetime | None = None,
               by_state: bool = False) -> None:
        """Write one part. ``by_state``: the rows grouped by state, a row group each, so
        that ``read_scans(state=...)`` skips the others by their statistics (PRUNE)."""
        assert self._dir is not None
        number = self._next.get(table, 0)  # a resumed run's prior may predate a table
        self._next[table] = number + 1
        path = _files.part_path(self._dir, table, number, self._tag)
        groups = None
        if by_state and data.num_rows:
            data, groups = _arrow.group_by_state(data)
        _files.write_part(path, data, self.meta.with_ended(ended).parquet_metadata(), groups)
        if table == "ports":
            self._parts_written.append(path.name)

    # --- results ------------------------------------------------------------------------

    def _tables(
        self, batches: list[pa.RecordBatch], hosts: pa.Table | None = None
    ) -> dict[str, pa.Table]:
        sid = self.meta.scan_id
        ports = _arrow.normalize_ports(batches)  # empties ``batches``: it owns them now
        # list() copies: snapshot() may run while the scanning thread adds rows.
        services = list(self._services.items())
        if services:
            rows = [{"host": k[0], "proto": k[1], "port": k[2], **v} for k, v in services]
            columns = {name: [row.get(name) for row in rows] for name in _arrow.SERVICES.names}
            ports = _arrow.merge_services(ports, cv.table(columns, _arrow.SERVICES))
        tel = cv.table(_transpose(self._telemetry, _TELEMETRY), _TELEMETRY)
        events = cv.table(_transpose(self._events, _EVENTS), _EVENTS)
        hosts = _hosts.derive_hosts(ports) if hosts is None else _with_scan_id(hosts, sid)
        if self._names:
            hosts = _hostnames.merge_names(hosts, dict(self._names))
        if self._host_cols:
            hosts = _hosts.attach_columns(schema.conform(hosts, "hosts"),
                                          {h: dict(v) for h, v in list(self._host_cols.items())})
        inventory = {
            name: _with_scan_id(cv.table({c: [r.get(c) for r in rows]
                                          for c in schema.file_schema(name).names},
                                         schema.file_schema(name)), sid)
            for name, rows in list(self._inventory.items()) if rows
        }
        tables = {
            **inventory,
            "ports": ports,
            "hosts": _hosts.sort_hosts(hosts),
            "telemetry": _resume.side("telemetry", _with_scan_id(tel, sid), self._shard,
                                      self._prior),
            "events": _resume.side("events", _with_scan_id(events, sid), self._shard,
                                   self._prior),
        }
        if self._os_rows or self._os_hosts:  # -O ran
            tables["os"] = _with_scan_id(_os.os_table(list(self._os_rows)), sid)
            _os.attach(tables, dict(self._os_hosts))
        return tables

    def snapshot(self) -> ScanResult:
        """Everything so far as a ScanResult (ended=None), without writing."""
        with self._lock:  # while finish() runs, this waits for its result
            if self._result is not None:
                return self._result
            batches = list(self._batches)
        return ScanResult(self._tables(batches), self.meta)

    def host_states(self) -> pa.Table:
        """``host`` and ``state`` ("up"/"unknown") of the hosts in the rows so far, in IP
        order: the hosts table's verdicts without a sorted copy of the rows (snapshot's)."""
        with self._lock:
            if self._result is not None:
                hosts = self._result.tables["hosts"]
                return pa.table({"host": hosts["host"], "state": hosts["state"].cast(pa.string())})
            batches = list(self._batches)
        return _hosts.host_states(batches)

    def finish(
        self, *, ended: datetime, hosts: pa.Table | None = None, complete: bool = True
    ) -> ScanResult:
        """Build the final tables (hosts derived unless given), write them; return them.

        ``complete=False`` (a cancelled or failed scan) writes no hosts part: its absence is
        what tells readers, ``list_scans`` and ``resume`` that the scan was cut short."""
        if self._result is not None:
            return self._result
        meta = self.meta.with_ended(ended)
        with self._lock:
            # The rows move to the result: normalize_ports frees each batch column as soon
            # as its sorted copy exists, so the peak is one copy of the rows plus one column.
            batches, self._batches = self._batches, []
            self._compacted = 0
            tables = self._tables(batches, hosts)
            if self._dir is not None:
                self._write_final(tables, ended, complete)
            self._result = ScanResult(tables, meta, note=self._note())
        return self._result

    def _note(self) -> str | None:
        if self.hold != "open":
            return None
        root = self._dir.parent if self._dir is not None else "?"
        return (f"in memory: open ports only, and no PortFound events; all {self._added:,} "
                f"rows are in {self._dir} "
                f"(pn.read_scans({str(root)!r}, scan_id={self.meta.scan_id!r}))")

    def _write_final(self, tables: dict[str, pa.Table], ended: datetime, complete: bool) -> None:
        assert self._dir is not None
        ports = tables["ports"]
        # The parts hold rows as added. If dedup dropped some, or services were merged,
        # replace them by the final table: new part first, then delete the old ones (a crash
        # in between leaves duplicates on disk, which read_scans removes).
        many = len(self._parts_written) > 64  # a checkpointed scan writes a part every 0.3 s
        if self.hold == "open":
            # STREAMED: the parts are the only copy of the rows not held; leave them be.
            pass
        elif ports.num_rows != self._added or self._services or not self._parts_written or many:
            old, self._parts_written = self._parts_written, []
            self._write("ports", ports, ended=ended)
            for name in old:
                (self._dir / "ports" / name).unlink()
        if "os" in tables and tables["os"].num_rows:
            self._write("os", tables["os"], ended=ended)
        self._write("telemetry", tables["telemetry"], ended=ended)
        self._write("events", tables["events"], ended=ended)
        for name in self._inventory:
            if name in tables:
                self._write(name, tables[name], ended=ended)
        for path in self._prior.stale if self._prior is not None else ():
            path.unlink(missing_ok=True)  # merged into the parts just written
        if self._write_hosts and complete:
            self._write("hosts", tables["hosts"], ended=ended)  # last: marks the scan complete


def _held(batch: pa.RecordBatch, hold: str) -> pa.RecordBatch:
    """What memory keeps of a ports batch: all of it, or its open rows (``hold``)."""
    if hold == "all" or batch.num_rows == 0:
        return batch
    import pyarrow.compute as pc

    state = batch.column("state")
    words = state.dictionary.to_pylist()
    if "open" not in words:
        return batch.slice(0, 0)
    # The dictionary's index of "open", compared with the indices: no string per row. A
    # scalar from a buffer, not a Python int: pyarrow converts an int through its pandas
    # shim, importing pandas on the flush thread in the middle of a scan (~1 s with the GIL).
    at = cv.numbers([words.index("open")], state.indices.type)[0]
    return batch.filter(pc.equal(state.indices, at))


def _with_scan_id(table: pa.Table, scan_id: str) -> pa.Table:
    """``table`` with a constant scan_id column first (replacing any there)."""
    if "scan_id" in table.column_names:
        table = table.drop_columns(["scan_id"])
    col = _arrow.constant_dict(scan_id, table.num_rows, _arrow.zeros(table.num_rows))
    return table.add_column(0, schema.SCAN_ID, col)


def _transpose(rows: list[tuple[Any, ...]], columns: pa.Schema) -> dict[str, list[Any]]:
    """Row tuples -> {column: values}. Copies first: another thread may be appending."""
    rows = list(rows)
    return {name: [row[i] for row in rows] for i, name in enumerate(columns.names)}
