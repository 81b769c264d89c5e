"""Parquet datasets: round trips, filters, list_scans, and other readers (pyarrow, DuckDB)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from prtip_nb import _version
from prtip_nb.errors import DatasetError
from prtip_nb.results import ResultBuilder, ScanResult, list_scans, read_scans, schema

from .scans import CONFIG, T0, fill, finished, make_meta

A = "20261128T101500Z-aaaaaa"
B = "20261129T090000Z-bbbbbb"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Two finished scans, a day apart, in one dataset."""
    finished(A).to_parquet(tmp_path)
    finished(B, started=T0 + timedelta(days=1)).to_parquet(tmp_path)
    return tmp_path


def test_to_parquet_layout_and_metadata(tmp_path: Path, result: ScanResult) -> None:
    directory = result.to_parquet(tmp_path)
    assert directory == tmp_path / f"scan_id={A}"
    # The inventory tables are written only when they have rows (this scan has none but
    # its scan row, which says what it was).
    assert not any((directory / name).exists() for name in ("scripts", "os", "trace"))
    for name in set(schema.TABLES) - {"scripts", "os", "trace"}:
        part = directory / name / "part-00000.parquet"
        file_schema = pq.read_schema(part)
        assert file_schema.equals(schema.file_schema(name))
        md = file_schema.metadata
        assert json.loads(md[schema.META_CONFIG]) == CONFIG
        assert md[schema.META_TOOL_VERSION].decode() == _version.__version__
        assert md[schema.META_SCHEMA_VERSION] == str(schema.SCHEMA_VERSION).encode()
        assert md[schema.META_STARTED] == b"2026-11-28T10:15:00+00:00"
        assert md[schema.META_ENDED] == b"2026-11-28T10:15:01.500000+00:00"
    assert not list(tmp_path.rglob(".*"))  # no temp files left behind


def test_round_trip(tmp_path: Path, result: ScanResult) -> None:
    result.to_parquet(tmp_path)
    back = ScanResult.from_parquet(tmp_path, A)
    assert back.meta == result.meta
    for name in schema.TABLES:
        assert back.tables[name].equals(result.tables[name]), name
    pd.testing.assert_frame_equal(back.summary(), result.summary())


def test_overwrite_is_refused_unless_asked(tmp_path: Path, result: ScanResult) -> None:
    result.to_parquet(tmp_path)
    with pytest.raises(DatasetError, match="overwrite=True"):
        result.to_parquet(tmp_path)
    assert result.to_parquet(tmp_path, overwrite=True).is_dir()
    assert len(read_scans(tmp_path).ports) == 7


def test_read_all_and_filter(root: Path) -> None:
    both = read_scans(root)
    assert both.meta is None and both.scan_id is None
    assert [m.scan_id for m in both.scans] == [A, B]
    assert both.ports["scan_id"].drop_duplicates().tolist() == [A, B]
    assert len(both.ports) == 14 and len(both.hosts) == 6
    assert both.started == T0 and both.ended == T0 + timedelta(days=1, seconds=1.5)
    # two scans of the same three hosts: each host and port counted once, not summed
    assert "2 scans: 3 distinct hosts, 7 distinct ports, 2 open in at least one scan" in repr(both)
    assert list(both.summary().columns)[0] == "scan_id"

    one = read_scans(root, B)
    assert one.scan_id == B and set(one.ports["scan_id"]) == {B}
    assert one.tables["ports"].schema.equals(schema.PORTS)

    hosts = read_scans(root, [A, B], host="10.0.0.2")  # parse-only
    assert set(hosts.ports["host"]) == {"10.0.0.2"} and len(hosts.ports) == 4  # parse-only
    assert hosts.hosts["host"].tolist() == ["10.0.0.2", "10.0.0.2"]  # parse-only

    assert read_scans(root, since="2026-11-29").scan_id == B
    assert read_scans(root, until=T0 + timedelta(hours=1)).scan_id == A
    assert len(read_scans(root, since="2030-01-01").ports) == 0


def test_list_scans(root: Path) -> None:
    scans = list_scans(root)
    assert scans.columns.tolist() == [
        "scan_id", "started", "ended", "complete", "targets", "ports", "method",
        "n_ports", "n_open",
    ]  # fmt: skip
    assert all(isinstance(t, pd.ArrowDtype) for t in scans.dtypes)
    first = scans.iloc[0]
    assert first["scan_id"] == A and first["started"] == pd.Timestamp(T0)
    assert bool(first["complete"]) and first["targets"] == "10.0.0.1 10.0.0.2"  # parse-only
    assert (first["ports"], first["method"], first["n_ports"], first["n_open"]) == (
        "20-25,80",
        "syn",
        7,
        2,
    )


def test_finished_and_cut_short_scans_read_together(root: Path) -> None:
    c = "20261130T000000Z-cccccc"
    b = ResultBuilder(make_meta(c, T0 + timedelta(days=2)), sink=root)
    fill(b, per_batch=2)  # 7 rows in 4 parts, then the process "dies" before finish
    res = read_scans(root)
    assert [m.scan_id for m in res.scans] == [A, B, c] and res.ended is None
    assert len(res.ports) == 21 and len(res.hosts) == 9
    assert res.tables["hosts"].schema.equals(schema.HOSTS)
    assert list_scans(root)["complete"].tolist() == [True, True, False]


def test_pyarrow_dataset_reads_it_as_is(root: Path) -> None:
    files = sorted(str(p) for p in root.glob("scan_id=*/ports/*.parquet"))
    dataset = ds.dataset(
        files,
        format="parquet",
        partitioning=ds.HivePartitioning.discover(infer_dictionary=True),
        partition_base_dir=str(root),
    )
    table = dataset.to_table(filter=ds.field("state") == "open")
    ours = read_scans(root).open_ports
    got = sorted(zip(*(table[c].to_pylist() for c in ("scan_id", "host", "port")), strict=True))
    assert got == sorted(zip(ours["scan_id"], ours["host"], ours["port"], strict=True))


def test_duckdb_reads_it_as_is(root: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(
        f"SELECT scan_id, host, port FROM read_parquet('{root}/*/ports/*.parquet', "
        "hive_partitioning=true) WHERE state = 'open' ORDER BY ALL"
    ).fetchall()
    ours = read_scans(root).open_ports
    assert rows == sorted(zip(ours["scan_id"], ours["host"], ours["port"], strict=True))
    assert len(rows) == 4


def test_missing_or_empty_root_says_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as err:
        read_scans(missing)
    assert str(missing) in str(err.value) and "to_parquet" in str(err.value)
    assert "prtip-nb scan" in str(err.value)
    with pytest.raises(DatasetError, match="no scans in"):
        read_scans(tmp_path)
    with pytest.raises(DatasetError, match="no such directory"):
        list_scans(missing)


def test_unknown_scan_id(root: Path) -> None:
    with pytest.raises(DatasetError, match="no scan 'nope'.*latest there"):
        read_scans(root, "nope")
