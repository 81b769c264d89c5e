"""pn.sql: DuckDB views over a dataset of scans."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import prtip_nb as pn
from prtip_nb.errors import DatasetError

from .conftest import DATA


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "scans"
    pn.read_nmap_xml(DATA / "nmap-sample.xml").to_parquet(root)
    pn.read_masscan(DATA / "masscan.list").to_parquet(root)
    return root


def test_views_over_the_dataset(dataset: Path) -> None:
    pytest.importorskip("duckdb")
    per_scan = pn.sql(
        "select scan_id, count(*) as n, count(*) filter (where state = 'open') as n_open "
        "from ports group by scan_id order by scan_id", dataset,
    )  # fmt: skip
    assert per_scan["n"].tolist() == [5, 10] and per_scan["n_open"].tolist() == [4, 5]
    assert per_scan["scan_id"].str.startswith("masscan-").tolist() == [True, False]
    hosts = pn.sql("select host, closed from hosts where state = 'down'", dataset)
    assert hosts.values.tolist() == [["198.51.100.3", 0]]
    assert pn.sql("select count(*) as n from telemetry", dataset)["n"].tolist() == [0]
    ports = pn.sql("select * from ports where port = $1", dataset, params=[53])
    assert list(ports.columns[:2]) == ["scan_id", "host"] and len(ports) == 4
    # Agrees with the Parquet reader
    assert len(pn.read_scans(dataset).ports) == 15


def test_missing_duckdb_says_how_to_install(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "duckdb", None)  # import duckdb -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'prtip_nb\[sql\]'"):
        pn.sql("select 1", dataset)


def test_no_dataset(tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    with pytest.raises(DatasetError, match="no scan dataset"):
        pn.sql("select 1", tmp_path / "nothing")


def test_memory_is_capped_and_spills_outside_the_working_directory(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("duckdb")
    monkeypatch.chdir(tmp_path)
    from prtip_nb.interop.sql import connect

    con = connect(dataset)
    try:
        limit, spill = con.execute(
            "select current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchone()
    finally:
        con.close()
    assert limit.replace(" ", "") in ("488.2MiB", "512.0MB", "488.2MB")
    assert not Path(spill).resolve().is_relative_to(tmp_path) and "prtip_nb-duckdb-" in spill
    # A group-by bigger than a tiny limit still answers (DuckDB spills), exactly.
    q = ("select count(*) as n, count(distinct x) as d from "
         "(select (i * 7919) % 3000000 as x from range(3000000) t(i))")
    got = pn.sql(q, dataset, memory_limit="64MB")
    assert got.values.tolist() == [[3_000_000, 3_000_000]]
    assert not (tmp_path / ".tmp").exists()
