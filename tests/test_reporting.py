"""pn.report and `prtip-nb report`: one self-contained HTML file, charts included, every
value escaped. (The browser test opens it for real: tests/browser.)"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import prtip_nb as pn
from prtip_nb.lab import Lab
from prtip_nb.results import ScanResult, schema

CHARTS = ("ports", "states", "services", "throughput", "memory", "rtt")
PLOTLY_HEADER = re.compile(r"\* plotly\.js v\d")


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("scans")
    with Lab.defaults(host="127.0.0.1", ephemeral=True) as lab:
        spec = ",".join(map(str, lab.open_ports["tcp"] + lab.closed_ports))
        first = pn.scan("127.0.0.1", ports=spec, method="connect")
        last = pn.scan("127.0.0.1", ports=spec, method="connect")
    first.to_parquet(root)
    last.to_parquet(root)
    yield {"root": root, "first": first, "last": last, "open": lab.open_ports["tcp"]}


def test_report_is_self_contained_with_every_chart(stored: dict[str, Any],
                                                   tmp_path: Path) -> None:
    res = pn.read_scans(stored["root"], scan_id=stored["first"].scan_id)
    path = pn.report(res, tmp_path / "sub" / "report.html")
    html = path.read_text()
    assert len(PLOTLY_HEADER.findall(html)) == 1  # plotly.js inlined, once
    for name in CHARTS:
        assert f"data-chart='{name}'" in html and f'id="chart-{name}"' in html
    # Nothing is fetched: no external script, stylesheet, image or font outside plotly.js
    # (whose source names URLs for map tiles and its logo link, unused here).
    start = html.index("<script type='text/javascript'>")
    rest = html[:start] + html[html.index("</script>", start):]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", rest)
    assert "<link" not in rest and "@import" not in rest
    for port in stored["open"]:
        assert f"<td>{port}</td>" in html
    assert stored["first"].scan_id in html


def test_report_without_charts(stored: dict[str, Any], tmp_path: Path) -> None:
    html = pn.report(stored["first"], tmp_path / "r.html", with_charts=False).read_text()
    assert not PLOTLY_HEADER.search(html) and "<script" not in html
    assert "<table" in html


def _hostile() -> ScanResult:
    cols: dict[str, list[Any]] = {
        "scan_id": ["evil"] * 2, "host": ["10.0.0.1", "10.0.0.1"], "family": [4, 4],
        "proto": ["tcp", "tcp"], "port": [21, 80], "state": ["open", "open"],
        "reason": ["syn-ack", "syn-ack"],
        "banner": ["</script><script>alert(1)</script>", "<img src=x onerror=alert(2)>"],
        "service": ["ftp", "<b>http</b>"],
    }
    arrays = [pa.array(v) for v in cols.values()]
    table = schema.conform(pa.Table.from_arrays(arrays, names=list(cols)), "ports")
    return ScanResult({"ports": table})


def test_every_value_is_escaped(tmp_path: Path) -> None:
    html = pn.report(_hostile(), tmp_path / "evil.html").read_text()
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in html  # the tables show it, escaped
    assert "<b>http</b>" not in html


def test_cli_report_picks_the_latest_scan(stored: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "cli.html"
    proc = subprocess.run(
        [sys.executable, "-m", "prtip_nb.cli", "report", str(stored["root"]), "-o", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert stored["last"].scan_id in proc.stdout and stored["last"].scan_id in out.read_text()
    chosen = tmp_path / "first.html"
    proc = subprocess.run(
        [sys.executable, "-m", "prtip_nb.cli", "report", str(stored["root"]), "--scan-id",
         stored["first"].scan_id, "-o", str(chosen)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0 and stored["first"].scan_id in chosen.read_text()


def test_cli_report_errors(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "prtip_nb.cli", "report", str(tmp_path / "nothing"), "-o",
         str(tmp_path / "x.html")], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and "prtip-nb:" in proc.stderr
    assert not (tmp_path / "x.html").exists()


def test_report_is_the_function_even_after_importing_the_module() -> None:
    import prtip_nb.reporting  # noqa: F401  (a module named "report" would shadow it)

    assert callable(pn.report) and pn.report.__module__ == "prtip_nb.reporting"


def test_report_states_the_send_rate(tmp_path: Path) -> None:
    with Lab.defaults(host="127.0.0.1", ephemeral=True) as lab:
        spec = ",".join(map(str, lab.open_ports["tcp"] + lab.closed_ports))
        res = pn.scan("127.0.0.1", ports=spec, method="connect", rate=40.0)
    html = pn.report(res, tmp_path / "rate.html").read_text()
    assert "send rate limit 40 probes/s; pinned by the rate you set 100% of samples" in html
    assert "rate limit" in html  # the throughput chart's limit line
