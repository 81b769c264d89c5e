"""Schema version 2: the inventory tables, and version 1 datasets read and upgraded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

import prtip_nb as pn
from prtip_nb.results import ScanResult, schema

from .scans import finished

V1 = Path(__file__).resolve().parent.parent / "data" / "v1-dataset"
V1_SCAN = "20261128T101500Z-aaaaaa"
V1_IMPORT = "nmap-20251128T102000Z-2b6223"


def test_v1_dataset_reads_upgraded(tmp_path: Path) -> None:
    # The files were written by prtip_nb before schema 2 (see the commit that added them).
    part = next(V1.glob("*/hosts/part-*.parquet"))
    assert pq.read_schema(part).metadata[schema.META_SCHEMA_VERSION] == b"1"
    res = pn.read_scans(V1)
    assert {m.scan_id: m.schema_version for m in res.scans} == {V1_SCAN: 1, V1_IMPORT: 1}
    for name in schema.TABLES:  # every table, new ones included, has exactly the v2 schema
        assert res.tables[name].schema.equals(schema.TABLES[name]), name
    hosts = res.tables["hosts"].to_pylist()
    gw = next(h for h in hosts if h["host"] == "198.51.100.1")  # parse-only
    assert gw["hostnames"] == [{"name": "gw.example.test", "type": None, "confirmed": None}]
    assert all(h["hostnames"] is None for h in hosts if h["hostname"] is None)
    assert res.scripts.empty and res.os.empty and res.trace.empty
    for table, col in (("ports", "verified"), ("ports", "handshakes"),
                       ("hosts", "pseudo_services"), ("hosts", "pseudo_reason")):
        assert res.tables[table][col].null_count == res.tables[table].num_rows  # not checked
    # Each scan says what it was: ours, or the file a v1 import came from.
    scan = res.tables["scan"].select(["scan_id", "source", "args"]).to_pylist()
    assert {r["scan_id"]: r["source"] for r in scan} == {V1_SCAN: "prtip_nb",
                                                         V1_IMPORT: "nmap-xml"}  # fmt: skip
    assert next(r["args"] for r in scan if r["scan_id"] == V1_SCAN).startswith("prtip-nb scan")
    # Rewritten, it is a version 2 scan that reads back equal.
    one = pn.read_scans(V1, V1_SCAN)
    one.to_parquet(tmp_path)
    back = pn.read_scans(tmp_path, V1_SCAN)
    assert back.meta is not None and back.meta.schema_version == 2
    for name in schema.TABLES:
        assert back.tables[name].equals(one.tables[name]), name


def test_inventory_tables_round_trip_through_parquet(tmp_path: Path) -> None:
    base = finished()
    scripts = {
        "host": ["10.0.0.1", None], "proto": ["tcp", None], "port": [22, None],  # parse-only
        "phase": ["port", "post"], "id": ["ssh-hostkey", "x"], "output": ["256 aa (ED25519)", ""],
        "data": ['[[null, [["type", "ssh-ed25519"], ["bits", "256"]]]]', None],
        "elements": [[{"key": "1.type", "value": "ssh-ed25519"},
                      {"key": "1.bits", "value": "256"}], None],
    }  # fmt: skip
    linux = {"type": "general purpose", "vendor": "Linux", "family": "Linux",
             "generation": "5.X", "accuracy": 100, "cpe": ["cpe:/o:linux:linux_kernel:5"]}
    os_rows = {"host": ["10.0.0.1"], "name": ["Linux 5.0 - 6.2"], "accuracy": [100],  # parse-only
               "line": [70000], "classes": [[linux]]}
    trace = {"host": ["10.0.0.1"], "ttl": [1], "address": ["10.0.0.1"],  # parse-only
             "rtt_ms": [0.05], "probe_port": [22], "probe_proto": ["tcp"]}
    from prtip_nb.results import _convert as cv

    tables = dict(base.tables)
    for name, cols in (("scripts", scripts), ("os", os_rows), ("trace", trace)):
        n = len(next(iter(cols.values())))
        cols = {"scan_id": [base.scan_id] * n, **cols}
        tables[name] = cv.table(cols, schema.TABLES[name])
    res = ScanResult(tables, base.meta)
    res.to_parquet(tmp_path)
    assert sorted(p.name for p in (tmp_path / f"scan_id={base.scan_id}").iterdir()) == [
        "events", "hosts", "os", "ports", "scan", "scripts", "telemetry", "trace"]  # fmt: skip
    back = pn.read_scans(tmp_path)
    for name in schema.TABLES:
        assert back.tables[name].equals(res.tables[name]), name
    df = back.scripts
    assert all(isinstance(t, pd.ArrowDtype) for t in df.dtypes)
    assert list(df["id"]) == ["ssh-hostkey", "x"]
    assert back.os["classes"].iloc[0][0]["vendor"] == "Linux"
    assert float(back.trace["rtt_ms"].iloc[0]) == 0.05


def test_sql_exposes_the_new_tables(tmp_path: Path) -> None:
    import pytest

    pytest.importorskip("duckdb")
    shutil.copytree(V1, tmp_path / "ds")
    got = pn.sql("select count(*) n from scripts", tmp_path / "ds")
    assert int(got["n"].iloc[0]) == 0
    cols = pn.sql("select * from os", tmp_path / "ds").columns
    assert list(cols) == schema.OS.names
