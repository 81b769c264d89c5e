"""`prtip-nb demo`: lab up, full scan, Parquet dataset + HTML report, exact against the lab."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

import prtip_nb as pn
from prtip_nb.demo import summary_text


@pytest.mark.usefixtures("netns")
def test_demo_end_to_end(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "prtip_nb.cli", "demo", "-o", str(tmp_path / "scans"),
         "--report", str(tmp_path / "report.html")],
        capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "missed [], false opens []" in out.stdout
    # The summary (header to the blank line) fits a 100-column terminal, ports cut short.
    summary = out.stdout.split("\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert summary[0].split()[0] == "host" and len(summary) == 2, out.stdout
    assert max(map(len, summary)) <= 100, out.stdout
    assert summary[1].endswith(" more") and "2121/tcp" in summary[1]
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


def test_summary_text_cuts_only_the_open_ports_and_says_how_many_more() -> None:
    labels = [f"{p}/tcp" for p in range(20000, 20055)]
    arrow_str = pd.ArrowDtype(pa.string())
    summary = pd.DataFrame({
        "host": pd.Series(["127.0.0.1", "10.0.0.2", "10.0.0.3"], dtype=arrow_str),
        "open": pd.Series([55, 1, 0], dtype=pd.ArrowDtype(pa.uint32())),
        "open_ports": pd.Series([", ".join(labels), "22/tcp", ""], dtype=arrow_str),
    })
    lines = summary_text(summary, width=60).splitlines()
    assert max(map(len, lines)) <= 60
    first = lines[1].split(maxsplit=2)[2]
    shown, more = first.split(", … +")
    n_shown = len(shown.split(", "))
    assert shown.split(", ") == labels[:n_shown] and more == f"{55 - n_shown} more"
    assert lines[2].endswith(" 22/tcp") and lines[3].split() == ["10.0.0.3", "0"]  # parse-only
