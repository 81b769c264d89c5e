"""Flat writers of the ports table: JSON Lines, CSV and nmap's greppable format (-oG).

All three use pyarrow and the stdlib only, so ``prtip-nb scan -oJ/-oG`` does not import
pandas. JSON and CSV share one text form: times as ISO 8601 UTC (``…Z``), ``tls_san`` as a
list in JSON and ``;``-joined in CSV, dictionary columns as their words.
Each writes to a temporary name and renames, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc

from prtip_nb._fileio import atomic_file
from prtip_nb._termsafe import EscapingWriter
from prtip_nb.errors import DatasetError
from prtip_nb.results import _convert as cv
from prtip_nb.results import _hosts

if TYPE_CHECKING:
    from prtip_nb.results import ScanResult

__all__ = ["write_csv", "write_grepable", "write_jsonl"]

_SLICE = 65536
_ISO = "%Y-%m-%dT%H:%M:%SZ"  # %S carries the microseconds for timestamp[us]


def _atomic(path: str | os.PathLike[str], write: Callable[[TextIO], None]) -> Path:
    path = Path(path)
    try:
        with atomic_file(path, "w", encoding="utf-8", newline="") as out:
            write(out)
    except OSError as exc:
        raise DatasetError(f"could not write {path}: {exc}") from exc
    return path


def flat_text(table: pa.Table, *, lists: str | None = None) -> pa.Table:
    """``table`` with dictionary columns as strings and times as ISO text; list columns
    joined with ``lists`` when given (CSV has no lists)."""
    cols = []
    for col in table.columns:
        if pa.types.is_dictionary(col.type):
            col = pc.cast(col, col.type.value_type)
        elif pa.types.is_timestamp(col.type):
            col = pc.strftime(col, _ISO)
        elif pa.types.is_list(col.type) and lists is not None:
            col = pc.binary_join(col, cv.scalar_str(lists))
        cols.append(col)
    return pa.Table.from_arrays(cols, names=table.column_names)


def _slices(table: pa.Table) -> Iterator[pa.Table]:
    for offset in range(0, table.num_rows, _SLICE):
        yield table.slice(offset, _SLICE)


def write_jsonl(result: ScanResult, path: str | os.PathLike[str]) -> Path:
    """One JSON object per ports row (every column of the schema, nulls as null); for a
    ping sweep (``-sn``: no ports), one per hosts row (host, state, reason, rtt_ms, …)."""
    from prtip_nb.interop._cmdline import is_discovery

    sweep = is_discovery(result.config) and result.tables["ports"].num_rows == 0
    table = flat_text(result.tables["hosts" if sweep else "ports"])
    names = table.column_names

    def write(out: TextIO) -> None:
        for part in _slices(table):
            columns = [part[name].to_pylist() for name in names]
            out.writelines(
                json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False) + "\n"
                for row in zip(*columns, strict=True)
            )

    return _atomic(path, write)


def write_csv(result: ScanResult, path: str | os.PathLike[str]) -> Path:
    """The ports table as CSV with a header row (RFC 4180 quoting, by pyarrow)."""
    import pyarrow.csv as pcsv

    table = flat_text(result.tables["ports"], lists=";")
    path = Path(path)
    try:
        with atomic_file(path) as out:
            pcsv.write_csv(table, out)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"could not write {path}: {exc}") from exc
    return path


def _field(value: Any) -> str:
    # -oG separates fields with "/" and ports with ", ": nmap writes "|" for a "/" inside.
    return "" if value is None else str(value).replace("/", "|").replace(",", " ")


def write_grepable(result: ScanResult, path: str | os.PathLike[str]) -> Path:
    """nmap's ``-oG``: a Status line and a Ports line per host, between comment lines
    (a ping sweep's hosts have a Status line only, as with ``nmap -sn -oG``).

    Every ports row is listed (port/state/proto/owner/service/rpc/version/; a TLS tunnel
    as nmap writes it, ``ssl|http``); ports that the hosts table counts beyond its rows
    (nmap's extraports, on import: with their own state, ``open|filtered`` included) make
    the ``Ignored State`` field, and the best OS match the ``OS`` field, as nmap writes them.
    """
    from prtip_nb.interop._cmdline import command_line

    columns = ["host", "proto", "port", "state", "tunnel", "service", "product", "version",
               "extrainfo"]  # fmt: skip
    ports = flat_text(result.tables["ports"].select(columns))
    hosts = result.tables["hosts"]
    # Rows listed per host and state: what the hosts table counts beyond them was folded.
    derived = {h["host"]: h for h in _hosts.derive_hosts(result.tables["ports"]).to_pylist()}
    by_host: dict[str, list[str]] = {}
    for part in _slices(ports):
        for host, proto, port, state, tunnel, service, *version in zip(
            *(part[n].to_pylist() for n in part.column_names), strict=True
        ):
            text = " ".join(_field(v) for v in version if v)
            name = f"{tunnel}|{_field(service)}" if tunnel and service else _field(service)
            by_host.setdefault(host, []).append(f"{port}/{state}/{proto}//{name}//{text}/")
    best_os: dict[str, str] = {}
    for m in result.tables["os"].select(["host", "name"]).to_pylist():
        best_os.setdefault(m["host"], m["name"])  # nmap lists the best match first
    started, ended = result.started, result.ended
    cfg = result.config
    head = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(started.timestamp()))\
        if started else "?"  # fmt: skip
    args = cfg.get("args") or command_line(cfg)

    def write(out: TextIO) -> None:
        out.write(f"# prtip_nb scan {result.scan_id} initiated {head} as: {args}\n")
        keep = ["host", "hostname", "state", "open", "closed", "filtered", "extraports"]
        for h in hosts.select(keep).to_pylist():
            name = f"Host: {h['host']} ({h['hostname'] or ''})"
            out.write(f"{name}\tStatus: {h['state'].capitalize()}\n")
            listed = by_host.pop(h["host"], [])
            rows = derived.get(h["host"], {})
            counts = {s: h[s] - (rows.get(s) or 0) for s in ("open", "closed", "filtered")}
            ignored = max(counts, key=lambda s: counts[s])
            tail = f"\tIgnored State: {ignored} ({counts[ignored]})" if counts[ignored] > 0 else ""
            if h["extraports"]:  # an import: nmap's own words, whatever the state
                top = max(h["extraports"], key=lambda e: e["count"])
                tail = f"\tIgnored State: {top['state']} ({top['count']})"
            if h["host"] in best_os:
                tail += f"\tOS: {best_os[h['host']]}"
            if listed or tail:
                out.write(f"{name}\tPorts: {', '.join(listed)}{tail}\n")
        up = sum(1 for s in pc.cast(hosts["state"], pa.string()).to_pylist() if s == "up")
        took = f"{(ended - started).total_seconds():.2f}" if started and ended else "?"
        out.write(f"# prtip_nb done -- {hosts.num_rows} IP address{'es' * (hosts.num_rows != 1)}"
                  f" ({up} host{'s' * (up != 1)} up) scanned in {took} seconds\n")  # fmt: skip

    return _atomic(path, lambda out: write(EscapingWriter(out)))  # type: ignore[arg-type]
