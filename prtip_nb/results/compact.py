"""Compaction: one part file per table for a finished scan, ports sorted by host.

A scan writes a part file per flush (65,536 rows by default), in its shuffled probe order,
so every part holds every host: a reader filtering on one host must decode the host column
of every row (10M rows: ~0.8 s here). ``compact`` merges each table's parts into one file;
the ports file is sorted by (host, proto, port) and written in row groups of 65,536 rows,
so that Parquet's per-row-group min/max lets ``read_scans(host=…)`` skip all but a row
group or two (measured: ``python -m benchmarks read-filtered``).

The sort is external, so memory stays bounded for any size: one pass splits each part's
rows by host range into spill files (Arrow IPC streams, in a hidden directory of the scan), then
each range (at most ``BUCKET_ROWS`` rows) is sorted and written. Sorting is stable and
parts are read in write order, so among duplicate rows the first appended still comes
first, as ``read_scans``' dedup expects.

Order of operations, so that a reader or a crash never loses rows:
1. write the merged file under a hidden temporary name (no reader globs it);
2. rename it to the next part number (atomic on POSIX: a reader sees all of it or none);
3. delete the old parts.
Between 2 and 3 a reader sees each row twice; ``read_scans`` deduplicates ports rows, and
the other tables are written once at the end of a scan (one part, left alone). A crash
between 2 and 3 leaves duplicates that the next ``compact`` merges away.

The merged file keeps the key/value metadata of the table's newest part (which, for a
finished scan, records its end time).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from prtip_nb._fileio import atomic_file
from prtip_nb.errors import DatasetError
from prtip_nb.results import _convert as cv
from prtip_nb.results import _files, schema

__all__ = ["BUCKET_ROWS", "ROW_GROUP_ROWS", "compact"]

BUCKET_ROWS = 1 << 20  # rows sorted in memory at once
ROW_GROUP_ROWS = 1 << 16  # the unit a host filter can skip
_UNTAGGED = re.compile(r"part-(\d+)\.parquet")
_PROTOS = cv.strings(sorted(["sctp", "tcp", "udp"]))  # any other sorts after them
_SHIFT_HOST, _SHIFT_PROTO = cv.numbers([24, 16], pa.uint64())
_OTHER_PROTO = cv.numbers([255], pa.int32())[0]


def _batches(parts: list[Path], arrow_schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    for part in parts:
        for batch in pq.ParquetFile(part).iter_batches():
            yield batch.cast(arrow_schema)


def _buckets(parts: list[Path]) -> tuple[list[str], pa.Array]:
    """(first host of each bucket but the first, sorted distinct hosts) such that each
    bucket of consecutive hosts holds at most about BUCKET_ROWS rows."""
    import pyarrow.parquet as pq

    counts: dict[str, int] = {}
    for part in parts:
        hosts = pq.read_table(part, columns=["host"])["host"]
        for item in pc.value_counts(hosts).to_pylist():
            counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
    names = sorted(counts)
    cuts, filled = [], 0
    for name in names:
        if filled and filled + counts[name] > BUCKET_ROWS:
            cuts.append(name)
            filled = 0
        filled += counts[name]
    return cuts, cv.strings(names)


def _sort_key(rows: pa.Table, names: pa.Array) -> pa.Array:
    """One uint64 per row ordering it by (host, proto, port): host's rank among the sorted
    distinct hosts, then proto's, then port. One integer column sorts ~10x faster than
    three with strings (Arrow's sort is stable either way)."""
    host = pc.cast(pc.index_in(rows["host"], value_set=names), pa.uint64())
    proto = pc.index_in(pc.cast(rows["proto"], pa.string()), value_set=_PROTOS)
    proto = pc.cast(pc.fill_null(proto, _OTHER_PROTO), pa.uint64())
    high = pc.add(pc.shift_left(host, _SHIFT_HOST), pc.shift_left(proto, _SHIFT_PROTO))
    return pc.add(high, pc.cast(rows["port"], pa.uint64()))


def _sorted_merge(parts: list[Path], writer: Any, arrow_schema: pa.Schema, spill: Path) -> None:
    """Write the ports rows of ``parts`` to ``writer`` sorted by (host, proto, port)."""
    cuts, names = _buckets(parts)
    bucket_of = cv.numbers([bisect_right(cuts, n) for n in names.to_pylist()], pa.uint16())
    paths = [spill / f"{i}.arrow" for i in range(len(cuts) + 1)]
    # IPC streams, not files: parts have their own dictionaries, which only streams allow.
    sinks = [pa.ipc.new_stream(p, arrow_schema) for p in paths]
    try:
        for batch in _batches(parts, arrow_schema):
            bucket = bucket_of.take(pc.index_in(batch.column("host"), value_set=names))
            for i in pc.unique(bucket).to_pylist():
                mine = pc.equal(bucket, cv.numbers([i], pa.uint16())[0])
                sinks[i].write_batch(batch.filter(mine))
    finally:
        for sink in sinks:
            sink.close()
    for path in paths:
        with pa.memory_map(str(path)) as source:
            rows = pa.ipc.open_stream(source).read_all().unify_dictionaries().combine_chunks()
        if rows.num_rows:
            writer.write_table(rows.take(pc.sort_indices(_sort_key(rows, names))),
                               row_group_size=ROW_GROUP_ROWS)  # fmt: skip
        path.unlink()


def _merge(table: str, parts: list[Path], target: Path) -> None:
    import pyarrow.parquet as pq

    metadata = _files.read_footer(parts[-1])
    spill: Path | None = None
    try:
        # An unpredictable folder of our own for the spill files (not a fixed name that
        # someone could have planted as a symlink).
        spill = Path(tempfile.mkdtemp(dir=target.parent, prefix=".compact-spill-"))
        arrow_schema = pq.ParquetFile(parts[0]).schema_arrow.remove_metadata()
        with atomic_file(target) as fh, pq.ParquetWriter(
            fh, arrow_schema.with_metadata(metadata), compression="zstd"
        ) as writer:
            if table == "ports":
                _sorted_merge(parts, writer, arrow_schema, spill)
            else:
                for batch in _batches(parts, arrow_schema):
                    writer.write_batch(batch)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
        raise DatasetError(f"could not compact into {target}: {exc}") from exc
    finally:
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)


def compact(root: str | os.PathLike[str], scan_id: str, *, force: bool = False) -> dict[str, int]:
    """Merge the part files of each table of finished scan ``scan_id`` under ``root``.

    Returns ``{table: number of part files replaced}``; a table that already has one part
    is left alone unless ``force`` (e.g. to sort the ports of a scan written in one part).
    Refuses (DatasetError) a scan that is still running or was cut short (it has no hosts
    part yet): its writer may still add parts.
    """
    directory = _files.scan_dirs(root).get(scan_id)
    if directory is None:
        raise DatasetError(f"no scan {scan_id!r} in {Path(root).resolve()}")
    if not _files.parts(directory, "hosts"):
        raise DatasetError(
            f"scan {scan_id!r} is not finished (no hosts table): compact it once it has ended"
        )
    replaced = {}
    # Strict: a damaged part is an error naming it, before any merge. Skipping it would
    # delete its rows with the parts the merge replaces.
    check = _files.PartCheck(strict=True)
    for table in schema.TABLES:
        check.parts(directory, table)
    for table in schema.TABLES:
        parts = _files.parts(directory, table)
        if len(parts) < (1 if force and table == "ports" else 2):
            replaced[table] = 0
            continue
        # An untagged number after every untagged one (sharded writers tag theirs "s003-").
        numbers = [int(m[1]) for p in parts if (m := _UNTAGGED.fullmatch(p.name))]
        _merge(table, parts, _files.part_path(directory, table, max(numbers, default=-1) + 1))
        for part in parts:
            part.unlink()
        replaced[table] = len(parts)
    return replaced
