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
