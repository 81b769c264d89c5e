"""The interop parts of ``prtip-nb``: ``import``, ``diff``, and ``scan -oX/-oJ/-oG``.

Kept out of ``cli.py`` so that the command line grows by a few lines there. Importing this
module costs nothing (argparse only); the commands import what they use. ``scan -oX/-oJ/
-oG`` writes with pyarrow alone: the scan path still never imports pandas.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prtip_nb._termsafe import printable
from prtip_nb.errors import DatasetError, PrtipError

if TYPE_CHECKING:
    from prtip_nb.results import ScanResult

#: ``scan`` options: (flag, args attribute, ScanResult method).
OUTPUTS = (("-oX", "xml_output", "to_nmap_xml"), ("-oJ", "json_output", "to_json"),
           ("-oG", "grepable_output", "to_grepable"))  # fmt: skip


def add_scan_outputs(s: argparse.ArgumentParser) -> None:
    s.add_argument("-oX", dest="xml_output", metavar="FILE", help="write nmap XML")
    s.add_argument("-oJ", dest="json_output", metavar="FILE", help="write JSON Lines")
    s.add_argument("-oG", dest="grepable_output", metavar="FILE", help="write greppable text")


def write_scan_outputs(res: ScanResult, args: argparse.Namespace) -> None:
    for _, attr, method in OUTPUTS:
        path = getattr(args, attr, None)
        if path:
            getattr(res, method)(path)


def add_commands(sub: Any) -> None:
    """Add ``import`` and ``diff`` to the ``prtip-nb`` subcommands."""
    i = sub.add_parser("import", help="nmap XML or masscan output -> a Parquet dataset")
    i.add_argument("files", nargs="+", metavar="FILE", help="nmap -oX, masscan -oJ/-oL/-oX")
    i.add_argument("-o", "--output", default="data/scans", metavar="DIR")
    i.add_argument("--overwrite", action="store_true", help="replace a scan imported before")
    d = sub.add_parser("diff", help="what changed between two scans")
    for name in ("old", "new"):
        d.add_argument(name, metavar=name.upper(),
                       help="an nmap XML or masscan file, or DIR:SCAN_ID of a dataset")  # fmt: skip


def load_file(path: str | Path) -> ScanResult:
    """An nmap XML or masscan file, told apart by content."""
    from prtip_nb.interop.masscan import detect_format, read_masscan

    if detect_format(path) == "xml":
        with open(path, "rb") as fh:
            head = fh.read(4096)
        if b'scanner="masscan"' not in head:
            from prtip_nb.interop.nmap_xml import read_nmap_xml

            return read_nmap_xml(path)
    return read_masscan(path)


def load(spec: str) -> ScanResult:
    """A file (see ``load_file``), or ``DIR:SCAN_ID`` of a dataset."""
    if Path(spec).is_file():
        return load_file(spec)
    root, sep, scan_id = spec.rpartition(":")
    if not sep or not Path(root).is_dir():
        raise DatasetError(f"{spec!r} is neither a file nor DIR:SCAN_ID of a dataset")
    from prtip_nb.results import read_scans

    return read_scans(root, scan_id)


def _stored(directory: Path) -> dict[str, Any]:
    """What a stored scan is, for the messages: its scan row (source, file, sha256), or {}."""
    import pyarrow.parquet as pq

    from prtip_nb.results import _files

    parts = _files.parts(directory, "scan")
    if not parts:
        return {}
    rows = pq.read_table(parts[-1]).to_pylist()
    return rows[0] if rows else {}


def _describe(row: dict[str, Any], directory: Path) -> str:
    if not row.get("source_file"):
        return f"scan {directory.name.split('=', 1)[1]}"
    return (f"scan {directory.name.split('=', 1)[1]} ({row['source']} {row['source_file']}, "
            f"sha256 {str(row.get('source_sha256'))[:12]}…)")  # fmt: skip


def _legacy_dir(res: ScanResult, output: str) -> Path | None:
    """The directory of this nmap file imported under schema 1's id (args + start time), if
    any: that id did not hash the content, so the same file would otherwise go in twice."""
    from prtip_nb.interop._nmap_parser import legacy_scan_id
    from prtip_nb.results import _files

    cfg = res.config
    if cfg.get("source") != "nmap-xml" or res.meta is None:
        return None
    run = {"args": str(cfg.get("args")), "start": str(int(res.meta.started.timestamp())),
           "scanner": cfg.get("scanner") or "nmap"}  # fmt: skip
    where = _files.scan_dir(output, legacy_scan_id(run))
    return where if where.exists() else None


def import_one(name: str, output: str, *, overwrite: bool) -> tuple[str, str]:
    """Import one file into the dataset ``output``: ("imported" | "skipped", message).

    Raises PrtipError/OSError/ValueError when the file cannot be imported; nothing is then
    left behind (``to_parquet`` writes all or nothing).
    """
    from prtip_nb.results import _files

    res = load_file(name)
    where = _files.scan_dir(output, str(res.scan_id))
    legacy = _legacy_dir(res, output)
    if legacy is not None and not where.exists() and not overwrite:
        return "skipped", (f"{name}: imported before by an older prtip_nb, as {legacy} "
                           "(--overwrite imports it again under its new id)")  # fmt: skip
    ours = res.tables["scan"]["source_sha256"].to_pylist()
    if where.exists():
        stored = _stored(where)
        same = bool(ours) and stored.get("source_sha256") == ours[0]
        if not overwrite:
            if same:
                return "skipped", f"{name}: already imported, as {where} (same sha256)"
            raise DatasetError(f"{where} already holds {_describe(stored, where)}, not this "
                               "file; --overwrite replaces it")  # fmt: skip
        print(printable(f"{name}: replacing {_describe(stored, where)}"))
    res.to_parquet(output, overwrite=overwrite)
    ports = res.tables["ports"]
    return "imported", (f"{name}: {res.tables['hosts'].num_rows} hosts, {ports.num_rows} port "
                        f"rows -> {where}")  # fmt: skip


def cmd_import(args: argparse.Namespace) -> int:
    """Import every file; carry on past a bad one; summary; exit 1 if any failed."""
    outcome: dict[str, list[str]] = {"imported": [], "skipped": [], "failed": []}
    for name in args.files:
        try:
            kind, message = import_one(name, args.output, overwrite=args.overwrite)
        except (PrtipError, OSError, ValueError) as exc:
            kind, message = "failed", f"{name}: {exc}"
            print(printable(f"prtip-nb: cannot import {message}"), file=sys.stderr)
        else:
            print(printable(message))
        outcome[kind].append(message)
    if len(args.files) > 1 or outcome["failed"]:
        counts = ", ".join(f"{len(v)} {k}" for k, v in outcome.items())
        print(f"import: {counts}")
        for message in outcome["failed"]:
            print(printable(f"  failed: {message}"))
    return 1 if outcome["failed"] else 0


def cmd_diff(args: argparse.Namespace) -> int:
    """Exit 0 without differences, 1 with some, 2 on an error (as diff and ndiff do)."""
    from prtip_nb.interop.diff import diff

    try:
        changes = diff(load(args.old), load(args.new))
    except (PrtipError, OSError, ValueError) as exc:
        print(f"prtip-nb: {printable(str(exc))}", file=sys.stderr)
        return 2
    if changes.empty:
        print("no changes")
        return 0
    # Banners, versions and hostnames of imported files, escaped for the terminal.
    print(printable(changes.astype(object).where(changes.notna(), "-").to_string(index=False)))
    return 1
