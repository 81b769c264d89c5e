"""The on-disk layout: ``<root>/scan_id=<id>/<table>/part-NNNNN.parquet``, written atomically.

A part file appears under its final name only once complete (``_fileio.atomic_file``), so
readers never see half a file. The hosts table is written last: its presence marks a scan as
complete.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa

from prtip_nb._fileio import atomic_file, unsafe_name
from prtip_nb.errors import DatasetError
from prtip_nb.results import schema

PART_GLOB = "part-*.parquet"
HOW_TO_CREATE = "create one with `res.to_parquet(root)` or `prtip-nb scan ... -o root`"


def scan_dir(root: str | os.PathLike[str], scan_id: str) -> Path:
    """``<root>/scan_id=<id>``; an id that is not a single folder name is refused."""
    why = unsafe_name(scan_id)
    if why is not None:
        raise DatasetError(f"scan id {scan_id!r} {why}: a scan id names one folder under the root")
    return Path(root) / f"scan_id={scan_id}"


def part_path(directory: Path, table: str, number: int, tag: str = "") -> Path:
    """``part-NNNNN.parquet``; ``tag`` (e.g. ``s003-``) keeps the parts of several writers
    of one scan (Dask shards) apart."""
    if tag and unsafe_name(tag) is not None:
        raise DatasetError(f"part tag {tag!r} {unsafe_name(tag)}: it must stay in {directory}")
    return directory / table / f"part-{tag}{number:05d}.parquet"


def part_number(path: Path, tag: str = "") -> int | None:
    """The number of a part written with ``tag``, or None if another writer's."""
    stem = path.name.removesuffix(".parquet")
    prefix = f"part-{tag}"
    rest = stem[len(prefix) :] if stem.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None


def parts(directory: Path, table: str) -> list[Path]:
    """The complete part files of one table of one scan, in write order."""
    return sorted((directory / table).glob(PART_GLOB))


def scan_dirs(root: str | os.PathLike[str]) -> dict[str, Path]:
    """``{scan_id: directory}`` of every scan under ``root`` that has at least one part file.

    Raises DatasetError naming ``root`` when it does not exist or holds no scan.
    """
    path = Path(root)
    if not path.is_dir():
        raise DatasetError(
            f"no scan dataset at {path.resolve()} (no such directory); {HOW_TO_CREATE}"
        )
    found = {}
    for d in sorted(path.glob("scan_id=*")):
        if d.is_dir() and any(parts(d, t) for t in schema.TABLES):
            found[d.name.split("=", 1)[1]] = d
    if not found:
        raise DatasetError(
            f"no scans in {path.resolve()} (looked for scan_id=*/<table>/{PART_GLOB}); "
            + HOW_TO_CREATE
        )
    return found


def parquet_options(table: pa.Table) -> dict[str, Any]:
    """How a part is written: zstd, with dictionaries for every leaf but floats and times,
    and no compression for a column that is null in every row.

    WHY NO DICTIONARY FOR FLOATS AND TIMES. An RTT or a first_seen is near unique per row,
    so a dictionary for it is hashed, outgrows its page and is dropped (or kept, bigger
    than the values). Measured on a /18 scan's 64K-row ports parts: writing 0.38 -> 0.31
    us a row, 9.1 -> 7.2 B a row on disk; at 13.1M rows (a /15 x 100 ports, every row
    written) ~1 s of the flush thread. The other columns (host, port, state...) repeat and
    keep their dictionaries.

    WHY NO ZSTD FOR ALL-NULL COLUMNS. A SYN scan's ports rows leave 22 of the 32 columns
    null: their pages are a few bytes of levels, yet each column chunk (one a row group,
    two or three row groups a part) made a zstd context: 23 -> 19 ms a 64K-row part, the
    same size on disk."""
    leaves = _leaves(table.schema.remove_metadata())
    empty = {name for name in table.column_names
             if table.column(name).null_count == table.num_rows}
    return {"use_dictionary": [path for _, path, plain in leaves if not plain],
            "compression": {path: "NONE" if top in empty else "ZSTD"
                            for top, path, _ in leaves}}


@functools.lru_cache(maxsize=32)
def _leaves(sch: pa.Schema) -> list[tuple[str, str, bool]]:
    """(top-level column, Parquet leaf path, a float or time?) of each leaf of ``sch``:
    Parquet's per-column options name leaves (``tls_san.list.element``), not columns."""
    out: list[tuple[str, str, bool]] = []

    def walk(top: str, path: str, typ: pa.DataType) -> None:
        if pa.types.is_struct(typ):
            for i in range(typ.num_fields):
                walk(top, f"{path}.{typ.field(i).name}", typ.field(i).type)
        elif pa.types.is_list(typ) or pa.types.is_large_list(typ):
            walk(top, f"{path}.list.element", typ.value_type)
        elif pa.types.is_map(typ):
            walk(top, f"{path}.key_value.key", typ.key_type)
            walk(top, f"{path}.key_value.value", typ.item_type)
        else:
            out.append((top, path, pa.types.is_floating(typ) or pa.types.is_timestamp(typ)))

    for f in sch:
        walk(f.name, f.name, f.type)
    return out


def write_part(path: Path, table: pa.Table, metadata: dict[bytes, bytes],
               groups: list[int] | None = None) -> None:
    """Write an in-memory table (with scan_id) as a complete part file at ``path``;
    ``groups``: row offsets where a new row group starts (after 0), else one group.

    The file drops scan_id (the directory carries it). No fsync: the rename alone already
    protects readers and a killed process; only a power cut could lose the last part.
    """
    import pyarrow.parquet as pq  # only when writing: not every builder has a sink

    table = table.drop_columns(["scan_id"]) if "scan_id" in table.column_names else table
    table = table.replace_schema_metadata(metadata)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temp name (.part-…parquet.XXXX.tmp) is hidden and not *.parquet: no reader globs it.
        opts = parquet_options(table)
        with atomic_file(path) as fh:
            if not groups:
                pq.write_table(table, fh, **opts)
            else:
                with pq.ParquetWriter(fh, table.schema, **opts) as writer:
                    for lo, hi in zip([0, *groups], [*groups, table.num_rows], strict=True):
                        writer.write_table(table.slice(lo, hi - lo))
    except OSError as exc:
        raise DatasetError(f"could not write {path}: {exc.strerror or exc}") from exc


def read_footer(path: Path) -> dict[bytes, bytes]:
    """The key/value metadata of one part file (reads the footer only)."""
    import pyarrow.parquet as pq

    try:
        return dict(pq.read_schema(path).metadata or {})
    except (OSError, pa.ArrowInvalid) as exc:
        raise DatasetError(f"cannot read the Parquet footer of {path}: {exc}") from exc


class PartCheck:
    """The part files of a read, minus damaged ones: a part whose footer or pages do not
    read (a copy cut short, a bad disk) is skipped with one warning naming it, so the rest
    of the dataset still reads; with ``strict=True`` it is an error naming it instead.

    WHY: one truncated part used to fail ``read_scans`` and ``report`` of the whole dataset
    with an Arrow error naming no file."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.skipped: dict[Path, str] = {}  # path -> why

    def reject(self, path: Path, exc: BaseException) -> None:
        why = f"{path} is not a readable Parquet part ({exc})"
        if self.strict:
            raise DatasetError(f"{why}; delete or restore it, or read with strict=False "
                               "to skip it")  # fmt: skip
        if path not in self.skipped:
            self.skipped[path] = why
            warnings.warn(f"skipped {why}; the rest of the scan was read", stacklevel=4)

    def parts(self, directory: Path, table: str) -> list[Path]:
        """``parts(directory, table)`` whose footers read (each checked once)."""
        import pyarrow.parquet as pq

        out = []
        for path in parts(directory, table):
            if path in self.skipped:
                continue
            try:
                pq.read_metadata(path)
            except (OSError, pa.ArrowException) as exc:
                self.reject(path, exc)
                continue
            out.append(path)
        return out
