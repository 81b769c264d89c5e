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


def cmd_import(args: argparse.Namespace) -> int:
    from prtip_nb.results import _files

    for name in args.files:
        try:
            res = load_file(name)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot import {name}: {exc}") from exc
        where = _files.scan_dir(args.output, str(res.scan_id))
        if where.exists() and not args.overwrite:
            raise DatasetError(f"{name} was imported before, as {where}; --overwrite replaces it")
        res.to_parquet(args.output, overwrite=args.overwrite)
        ports = res.tables["ports"]
        print(printable(f"{name}: {res.tables['hosts'].num_rows} hosts, {ports.num_rows} "
                        f"port rows -> {where}"))  # fmt: skip
    return 0


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
