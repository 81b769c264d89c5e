"""Compaction: a finished scan's parts merged into one file per table, nothing lost."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from prtip_nb.errors import DatasetError
from prtip_nb.results import ResultBuilder, _files, read_scans
from prtip_nb.results.compact import compact

from .scans import T0, fill, make_meta


def _scan(root: Path, *, finish: bool = True) -> str:
    meta = make_meta()
    b = ResultBuilder(meta, sink=root)
    fill(b, per_batch=2)  # 7 rows -> 4 ports parts
    if finish:
        b.finish(ended=T0 + timedelta(seconds=2))
    return meta.scan_id


def test_compact_keeps_rows_and_metadata(tmp_path: Path) -> None:
    sid = _scan(tmp_path)
    directory = _files.scan_dir(tmp_path, sid)
    before_parts = _files.parts(directory, "ports")
    assert len(before_parts) > 1
    before = read_scans(tmp_path, sid)
    footer = _files.read_footer(before_parts[-1])
    removed = compact(tmp_path, sid)
    assert removed["ports"] == len(before_parts)
    after_parts = _files.parts(directory, "ports")
    assert len(after_parts) == 1 and after_parts[0] not in before_parts
    hosts = pq.read_table(after_parts[0], columns=["host"])["host"].to_pylist()
    assert hosts == sorted(hosts)  # sorted by host: a host filter can skip row groups
    assert _files.read_footer(after_parts[0]) == footer
    after = read_scans(tmp_path, sid)
    for name in ("ports", "hosts", "telemetry", "events"):
        assert after.tables[name].to_pylist() == before.tables[name].to_pylist(), name
    assert after.meta == before.meta
    assert compact(tmp_path, sid)["ports"] == 0  # already compact: nothing to do
    assert not list(directory.rglob(".*.tmp"))


def test_refuses_a_scan_that_has_not_finished(tmp_path: Path) -> None:
    sid = _scan(tmp_path, finish=False)
    with pytest.raises(DatasetError, match="not finished"):
        compact(tmp_path, sid)
    with pytest.raises(DatasetError, match="no scan"):
        compact(tmp_path, "nope")


def test_a_damaged_part_stops_compaction_before_anything_is_deleted(tmp_path: Path) -> None:
    sid = _scan(tmp_path)
    directory = _files.scan_dir(tmp_path, sid)
    parts = _files.parts(directory, "ports")
    bad = parts[1]
    bad.write_bytes(bad.read_bytes()[:30])  # a copy cut short
    with pytest.raises(DatasetError, match=str(bad)):
        compact(tmp_path, sid)
    assert _files.parts(directory, "ports") == parts  # every part still there
