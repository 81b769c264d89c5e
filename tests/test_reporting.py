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
from prtip_nb.reporting import service_counts
from prtip_nb.results import ScanResult, schema

CHARTS = ("ports", "states", "throughput", "memory", "rtt")
PLOTLY_HEADER = re.compile(r"\* plotly\.js v\d")


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("scans")
    with Lab.defaults(host="127.0.0.1", ephemeral=True) as lab:
        spec = ",".join(map(str, lab.open_ports["tcp"] + lab.closed_ports))
        # The first scan leaves out two open ports: the last one sees them "opened".
        gone = lab.open_ports["tcp"][:2]
        first = pn.scan("127.0.0.1", ports=",".join(p for p in spec.split(",")
                                                    if int(p) not in gone), method="connect")
        last = pn.scan("127.0.0.1", ports=spec, method="connect")
    first.to_parquet(root)
    last.to_parquet(root)
    yield {"root": root, "first": first, "last": last, "open": lab.open_ports["tcp"],
           "gone": gone}


def test_report_is_self_contained_with_every_chart(stored: dict[str, Any],
                                                   tmp_path: Path) -> None:
    res = pn.read_scans(stored["root"], scan_id=stored["first"].scan_id)
    path = pn.report(res, tmp_path / "sub" / "report.html")
    html = path.read_text()
    assert len(PLOTLY_HEADER.findall(html)) == 1  # plotly.js inlined, once
    for name in CHARTS:
        assert f"data-chart='{name}'" in html and f'id="chart-{name}"' in html
    # A services chart only when some open port has a name (here: nmap's port table may
    # name a kernel-picked port), never one "unknown" bar.
    assert ("data-chart='services'" in html) == bool(service_counts(res))
    # Nothing is fetched: no external script, stylesheet, image or font outside plotly.js
    # (whose source names URLs for map tiles and its logo link, unused here).
    start = html.index("<script type='text/javascript'>")
    rest = html[:start] + html[html.index("</script>", start):]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", rest)
    assert "<link" not in rest and "@import" not in rest
    for port in set(stored["open"]) - set(stored["gone"]):
        assert f"<td>{port}</td>" in html
    assert stored["first"].scan_id in html


def test_report_without_charts(stored: dict[str, Any], tmp_path: Path) -> None:
    html = pn.report(stored["first"], tmp_path / "r.html", with_charts=False).read_text()
    assert not PLOTLY_HEADER.search(html) and "<script" not in html
    assert "<table" in html


def _hostile() -> ScanResult:
    cols: dict[str, list[Any]] = {
        "scan_id": ["evil"] * 2, "host": ["10.0.0.1", "10.0.0.1"], "family": [4, 4],  # parse-only
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
    # Both scans are of 127.0.0.1: the latest is compared with the one before it.
    assert f"compared with scan {stored['first'].scan_id}" in proc.stdout
    assert "<th>Changes</th>" in out.read_text()
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
    assert "send rate: limit 40 probes/s (pinned by the rate you set)" in html
    assert "<th>Send rate</th><td>limit 40 probes/s (pinned by the rate you set)</td>" in html
    assert "rate limit" in html  # the throughput chart's limit line


def _outside_scripts(html: str) -> str:
    return re.sub(r"<script.*?</script>", "", html, flags=re.S)


def test_report_reads_well(stored: dict[str, Any], tmp_path: Path) -> None:
    """No <NA>, RTT to 2 decimals, counts with separators, a summary before the charts."""
    res = stored["last"]
    text = _outside_scripts(pn.report(res, tmp_path / "r.html").read_text())
    assert "&lt;NA&gt;" not in text and "<NA>" not in text and "NaN" not in text
    # The open-ports table: every rtt_ms cell has exactly two decimals.
    table = text.split("<h2>Open ports", 1)[1]
    head = re.findall(r"<th>(\w+)</th>", table.split("</thead>", 1)[0])
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1], flags=re.S)
    rtts = [re.findall(r"<td>(.*?)</td>", r, flags=re.S)[head.index("rtt_ms")] for r in rows]
    assert rtts and all(re.fullmatch(r"\d+\.\d\d", v) for v in rtts), rtts
    sent = int(res.telemetry["sent"].max())
    assert f"{sent:,} probes sent in " in text
    # The summary comes first and says what, when, how long, what was found, what changed.
    summary = text.split("id='summary'>", 1)[1].split("</table>", 1)[0]
    assert text.index("id='summary'") < text.index("<h2>Hosts</h2>") < text.index("Charts")
    n_open = len(stored["open"])
    n_ports = len(res.ports)
    assert f"127.0.0.1: 1 host, {n_ports} TCP ports; connect scan, timing T3" in summary
    assert re.search(r"<th>When</th><td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, took \d+", summary)
    assert f"{n_open} open, {n_ports - n_open} closed (open on 1 host)" in summary
    assert "<th>Changes</th>" not in summary  # no earlier scan given


def test_report_says_what_changed_since_the_previous_scan(stored: dict[str, Any],
                                                          tmp_path: Path) -> None:
    html = pn.report(stored["last"], tmp_path / "c.html", previous=stored["first"]).read_text()
    summary = html.split("id='summary'>", 1)[1].split("</table>", 1)[0]
    line = summary.split("<th>Changes</th><td>", 1)[1].split("</td>", 1)[0]
    assert line.startswith(f"against scan {stored['first'].scan_id} of ")
    assert "2 opened" in line and "closed" not in line
    for port in stored["gone"]:
        assert f"127.0.0.1:{port}/tcp" in line


def test_display_formats_cells() -> None:
    from datetime import UTC, datetime

    import pandas as pd

    from prtip_nb._display import display_frame, duration, when

    arrow = pd.ArrowDtype
    df = pd.DataFrame({
        "port": pd.Series([31337, None], dtype=arrow(pa.uint16())),
        "open": pd.Series([65535, 0], dtype=arrow(pa.uint32())),
        "rtt_ms": pd.Series([0.123456, None], dtype=arrow(pa.float32())),
        "hostname": pd.Series([None, "a.example"], dtype=arrow(pa.string())),
        "seen": pd.Series([datetime(2026, 12, 4, 17, 22, 0, 316608, tzinfo=UTC), None],
                          dtype=arrow(pa.timestamp("us", tz="UTC"))),
        "tls_san": pd.Series([["a", "b"], None], dtype=arrow(pa.list_(pa.string()))),
        "tls_self_signed": pd.Series([True, None], dtype=arrow(pa.bool_())),
    })
    out = display_frame(df).to_dict("records")
    assert out == [
        {"port": "31337", "open": "65,535", "rtt_ms": "0.12", "hostname": "",
         "seen": "2026-12-04 17:22:00 UTC", "tls_san": "a, b", "tls_self_signed": "yes"},
        {"port": "", "open": "0", "rtt_ms": "", "hostname": "a.example", "seen": "",
         "tls_san": "", "tls_self_signed": ""},
    ]
    assert when(None) == "" and duration(0.027) == "27 ms" and duration(125) == "2 min 05 s"


def test_rate_summary_of_an_adaptive_scan() -> None:
    import pandas as pd

    from prtip_nb._report_summary import rate_summary

    tel = pd.DataFrame({"rate_pps": [1000.0, 2000.0, 1500.0, 1500.0],
                        "rate_reason": ["growing", "growing", "backoff", "backoff"]})
    assert rate_summary(tel) == (
        "limit 1,000 → 1,500 probes/s (lowest 1,000, highest 2,000); "
        "growing while replies keep up 50%, backing off after loss 50% of the time")
    unlimited = pd.DataFrame({"rate_pps": [None, None], "rate_reason": ["unlimited"] * 2})
    assert rate_summary(unlimited) == "no limit"
