"""`prtip-nb demo`: lab up, full scan, Parquet dataset + HTML report, exact against the lab."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import prtip_nb as pn


@pytest.mark.usefixtures("netns")
def test_demo_end_to_end(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "prtip_nb.cli", "demo", "-o", str(tmp_path / "scans"),
         "--report", str(tmp_path / "report.html")],
        capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "missed [], false opens []" in out.stdout
    res = pn.read_scans(tmp_path / "scans")
    assert len(res.ports) == 65535
    n_open = int((res.ports["state"] == "open").sum())
    glob = f"{tmp_path}/scans/*/ports/*.parquet"
    query = f"select count(*) from read_parquet('{glob}') where state='open'"
    row = duckdb.execute(query).fetchone()
    assert row is not None and row[0] == n_open
    html = (tmp_path / "report.html").read_text()
    assert "<table" in html and "127.0.0.1" in html
    assert "data-chart='ports'" in html and "(with charts)" in out.stdout  # plotly is installed
