"""pn.plot: every chart of a real lab scan, live and read back from Parquet, has a title,
axis labels, data and hover text; text from the wire is escaped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import prtip_nb as pn
from prtip_nb.lab import Lab
from prtip_nb.results import ScanResult

CHARTS = ("ports", "states", "services", "throughput", "memory", "rtt")


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two scans of the lab (one with two listeners fewer), and both read back from Parquet."""
    root = tmp_path_factory.mktemp("scans")
    with Lab.defaults(host="127.0.0.1", ephemeral=True) as lab:
        spec = ",".join(map(str, lab.open_ports["tcp"] + lab.closed_ports))
        first = pn.scan("127.0.0.1", ports=spec, method="connect")
        gone = lab.tcp_ports[:2]
        second = pn.scan("127.0.0.1", ports=",".join(p for p in spec.split(",")
                                                     if int(p) not in gone), method="connect")
        for res in (first, second):
            res.to_parquet(root)
        yield {"lab": lab, "first": first, "second": second, "root": root, "gone": gone,
               "back": pn.read_scans(root, scan_id=first.scan_id), "all": pn.read_scans(root)}


def _labels(fig: go.Figure) -> tuple[str, str, str]:
    return fig.layout.title.text, fig.layout.xaxis.title.text, fig.layout.yaxis.title.text


@pytest.mark.parametrize("source", ["first", "back", "all"])
@pytest.mark.parametrize("name", CHARTS)
def test_charts_have_titles_labels_data_and_hover(scans: dict[str, Any], name: str,
                                                   source: str) -> None:
    fig = getattr(pn.plot, name)(scans[source])
    assert isinstance(fig, go.Figure)
    title, x, y = _labels(fig)
    assert title and x and y
    assert fig.data, f"{name} of {source} drew nothing"
    assert all(t.hovertemplate for t in fig.data)
    fig.to_json()  # serialisable, as the notebook and the report need


def test_port_map_shows_the_labs_open_ports(scans: dict[str, Any]) -> None:
    fig = pn.plot.ports(scans["first"])
    strip = fig.data[0]
    open_ports = scans["lab"].open_ports["tcp"]
    assert sorted(int(x) for x in strip.x) == sorted(open_ports)
    assert set(strip.y) == {"127.0.0.1"}
    assert f"({len(open_ports)} open on 1 host)" in fig.layout.title.text
    # A log port axis with plain port numbers (never "31.3k"), from 1 to past 65535.
    axis = fig.layout.xaxis
    assert axis.type == "log" and "65535" in axis.ticktext and "443" in axis.ticktext
    assert 10 ** axis.range[0] <= 1 and 10 ** axis.range[1] >= 65535


def test_port_map_of_several_scans_counts_them(scans: dict[str, Any]) -> None:
    strip = pn.plot.ports(scans["all"]).data[0]
    counts = dict(zip((int(x) for x in strip.x), strip.marker.color, strict=True))
    assert all(counts[p] == 1 for p in scans["gone"])
    assert max(counts.values()) == 2


def _open_frame(hosts: list[str], ports: list[int], **cols: list[Any]) -> pd.DataFrame:
    n = len(hosts)
    return pd.DataFrame({"host": hosts, "proto": ["tcp"] * n, "port": ports,
                         "state": ["open"] * n, **cols})


def test_port_map_scales_and_says_what_is_cut() -> None:
    # One host with 10,000 open ports: counted in bins of 1,024, nothing silently dropped.
    many = _open_frame(["10.0.0.1"] * 10_000, list(range(20_000, 30_000)))  # parse-only
    fig = pn.plot.ports(many)
    heat = fig.data[0]
    assert heat.type == "heatmap" and np.nansum(np.array(heat.z, dtype=float)) == 10_000
    assert "10,000 open on 1 host" in fig.layout.title.text
    assert "<sup>10,000 ports counted in bins of 1,024</sup>" in fig.layout.title.text
    assert fig.layout.xaxis.tickformat == "d"
    # 100 hosts: the 60 with most open ports are drawn, and the title says 40 were left out.
    hosts = [f"10.0.1.{i}" for i in range(100) for _ in range(1 + (i == 7))]
    ports = [22 if k % 2 == 0 else 80 for k in range(len(hosts))]
    fig = pn.plot.ports(_open_frame(hosts, ports))
    shown = {y for t in fig.data for y in t.y}
    assert len(shown) == 60 and "10.0.1.7" in shown  # parse-only
    assert "showing the 60 hosts with most, 40 left out" in fig.layout.title.text


def test_ports_and_services_name_ports_as_a_guess_until_service_detection() -> None:
    from prtip_nb.targets.portnames import port_names

    names = port_names()
    nameless = next(p for p in range(40_000, 65_535) if ("tcp", p) not in names)
    df = _open_frame(["10.0.0.1"] * 4, [22, 80, 443, nameless],  # parse-only
                     service=[None, "http", None, None])
    fig = pn.plot.services(df)
    bars = dict(zip(fig.data[0].y, fig.data[0].x, strict=True))
    assert bars == {"ssh?": 1, "http": 1, "https?": 1, "unknown": 1}  # -sV's name: no "?"
    assert "2 of 4 named from the port number" in fig.layout.title.text
    hover = dict(zip(fig.data[0].y, fig.data[0].text, strict=True))
    assert "a guess" in hover["ssh?"] and "a guess" not in hover["http"]
    strip = pn.plot.ports(df).data[0]
    assert list(strip.text) == ["ssh?", "http", "https?", ""]
    assert "a guess from the port number" in strip.customdata[0]


def test_every_chart_of_nothing_has_no_invented_axes() -> None:
    for fig in (pn.plot.certificates(pd.DataFrame({"host": [], "port": []})),
                pn.plot.ports(ScanResult({})), pn.plot.throughput(ScanResult({}))):
        assert fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False
        assert fig.layout.annotations and not fig.data


def test_rtt_draws_open_ports_on_top() -> None:
    df = pd.DataFrame({"host": ["10.0.0.1"] * 1003, "port": range(1, 1004),  # parse-only
                       "state": ["open"] * 3 + ["closed"] * 1000,
                       "rtt_ms": [0.5, 0.6, 0.7] + [0.5] * 1000})
    fig = pn.plot.rtt(df)
    assert [t.name.split(" ")[0] for t in fig.data] == ["closed", "open"]  # open drawn last
    assert fig.layout.barmode == "overlay"


def test_states_counts_match_the_result(scans: dict[str, Any]) -> None:
    fig = pn.plot.states(scans["first"])
    by_state = {t.name: sum(t.y) for t in fig.data}
    expected = scans["first"].ports["state"].astype(str).value_counts().to_dict()
    assert by_state == expected
    assert fig.layout.yaxis.type != "log"  # 25 open beside 5 closed: a plain axis


def test_states_go_log_when_counts_span_orders_of_magnitude() -> None:
    df = pd.DataFrame({"host": ["10.0.0.1"] * 1003, "proto": ["tcp"] * 1003,  # parse-only
                       "port": range(1, 1004), "state": ["open"] * 3 + ["closed"] * 1000})
    fig = pn.plot.states(df)
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.range[0] < 0  # bars from 1
    assert "log scale" in fig.layout.yaxis.title.text
    # Ticks at powers of ten only, written in full; room above the tallest bar's label.
    assert list(fig.layout.yaxis.tickvals) == [1, 10, 100, 1000]
    assert list(fig.layout.yaxis.ticktext) == ["1", "10", "100", "1,000"]
    assert fig.layout.yaxis.range[1] >= np.log10(1000) + 0.3
    assert all(t.cliponaxis is False for t in fig.data)


def test_throughput_and_memory_come_from_telemetry(scans: dict[str, Any]) -> None:
    tel = scans["first"].telemetry
    mem = pn.plot.memory(scans["back"])
    assert list(mem.data[0].y) == pytest.approx(list(tel["rss_bytes"].astype(float) / 2**20))
    thr = pn.plot.throughput(scans["first"])
    # From the scan's start: each row is the mean over the interval ending at its t.
    assert list(thr.data[0].x) == pytest.approx([0.0, *tel["t"].astype(float)])
    assert list(thr.data[0].y)[1:] == pytest.approx(list(tel["pps"].astype(float)))
    assert thr.data[0].line.shape == "vh" and thr.layout.xaxis.rangemode == "tozero"
    assert len(pn.plot.memory(scans["all"]).data) == 2  # one line per scan


def test_diff_finds_what_closed(scans: dict[str, Any]) -> None:
    changes = pn.plot.changes(scans["first"], scans["second"])
    assert set(changes["port"].astype(int)) == set(scans["gone"])
    assert set(changes["change"]) == {"closed"} and changes["after"].isna().all()
    back = pn.plot.changes(scans["second"], scans["first"])
    assert set(back["change"]) == {"opened"}
    fig = pn.plot.diff(scans["first"], scans["second"])
    assert "0 opened, 2 closed" in fig.layout.title.text
    # A short first line (the scan ids go below it, small): clear of plotly's toolbar.
    first_line = fig.layout.title.text.split("<br>")[0]
    assert first_line == "Changes: 0 opened, 2 closed"
    assert scans["first"].scan_id[:20] in fig.layout.title.text.split("<br>")[1]
    assert fig.layout.xaxis.tickformat == "d"  # 31337, not "31.337k"
    assert sorted(fig.data[0].x) == sorted(scans["gone"])
    same = pn.plot.diff(scans["first"], scans["back"])
    assert not same.data and "no port opened or closed" in same.layout.annotations[0].text


def test_empty_results_say_so() -> None:
    empty = ScanResult({})
    for name in CHARTS:
        fig = getattr(pn.plot, name)(empty)
        assert fig.layout.title.text and fig.layout.annotations, name


def _hostile_ports() -> pd.DataFrame:
    now = datetime.now(UTC)
    return pd.DataFrame({
        "scan_id": ["x"] * 3, "host": ["10.0.0.1"] * 3, "proto": ["tcp"] * 3,  # parse-only
        "port": [22, 443, 8443], "state": ["open"] * 3,
        "service": ["ssh<img src=x onerror=alert(1)>", "https", "https"],
        "product": ["<b>evil</b>", None, None], "version": [None] * 3,
        "banner": ["</script><script>alert(1)</script>" + "A" * 500, None, None],
        "tls_subject": [None, "CN=<i>a</i>", "CN=b"], "tls_issuer": [None, "CN=a", "CN=b"],
        "tls_not_after": [None, now - timedelta(days=2), now + timedelta(days=300)],
    })


def test_text_from_the_wire_is_escaped_and_cut() -> None:
    df = _hostile_ports()
    strip = pn.plot.ports(df).data[0]
    hover = list(strip.customdata)
    joined = " ".join(hover) + " ".join(strip.text)
    assert "<script>" not in joined and "&lt;/script&gt;" in joined
    assert "<img" not in joined and "<b>evil" not in joined
    assert max(len(h) for h in hover) < 400  # a 500-character banner is cut
    svc = pn.plot.services(df)
    assert "<img" not in " ".join(svc.data[0].y) + " ".join(svc.data[0].text)


def test_certificates_colour_by_days_left() -> None:
    fig = pn.plot.certificates(_hostile_ports())
    bar = fig.data[0]
    assert list(bar.marker.color) == ["#2ca02c", "#d62728"]  # fine, expired (on top)
    assert bar.x[1] < 0 < bar.x[0]
    assert "<i>" not in " ".join(bar.text)


def test_plot_is_lazy_and_public() -> None:
    import prtip_nb.viz

    assert pn.plot is prtip_nb.viz
    assert {"ports", "states", "services", "throughput", "memory", "rtt", "diff"} <= set(
        pn.plot.__all__)


def test_charts_take_a_plain_dataframe(scans: dict[str, Any], tmp_path: Path) -> None:
    ports = scans["first"].ports
    assert pn.plot.ports(ports).data and pn.plot.rtt(ports).data
    assert pn.plot.memory(scans["first"].telemetry).data
    with pytest.raises(TypeError, match="expected a ScanResult"):
        pn.plot.ports([1, 2, 3])


def test_throughput_draws_the_rate_limit_with_its_reason() -> None:
    """A real pinned-rate scan: the limit is a dashed step line at the rate, hover 'pinned'."""
    with Lab.defaults(host="127.0.0.1", ephemeral=True) as lab:
        spec = ",".join(map(str, lab.open_ports["tcp"] + lab.closed_ports))
        res = pn.scan("127.0.0.1", ports=spec, method="connect", rate=40.0)
    fig = pn.plot.throughput(res)
    limit = next(t for t in fig.data if t.name == "rate limit")
    tel = res.telemetry
    assert list(limit.y) == pytest.approx(list(tel["rate_pps"].astype(float)))
    assert set(limit.y) == {40.0}
    assert limit.line.shape == "hv" and limit.line.dash == "dash"
    assert set(limit.customdata) == {"pinned by the rate you set"}
    assert "%{customdata}" in limit.hovertemplate


def test_throughput_limit_changes_and_gaps() -> None:
    """Adaptive telemetry: every reason reaches the hover; unlimited rows are gaps."""
    tel = pd.DataFrame({
        "t": [0.25, 0.5, 0.75, 1.0], "sent": [100, 300, 600, 900],
        "pps": [400.0, 800.0, 1200.0, 1200.0],
        "rate_pps": pd.array([500.0, 1000.0, 700.0, None], dtype="Float64"),
        "rate_reason": ["growing", "growing", "backoff", "unlimited"],
    })
    fig = pn.plot.throughput(tel)
    limit = next(t for t in fig.data if t.name == "rate limit")
    assert list(limit.y[:3]) == [500.0, 1000.0, 700.0] and pd.isna(limit.y[3])
    assert list(limit.customdata) == ["growing while replies keep up"] * 2 + [
        "backing off after loss", "no limit"]
    unlimited = tel.assign(rate_pps=pd.array([None] * 4, dtype="Float64"))
    assert [t.name for t in pn.plot.throughput(unlimited).data] == ["sent"]  # no empty line


def test_topology_merges_shared_hops_and_says_when_there_is_no_trace() -> None:
    import pyarrow as pa

    from prtip_nb.results import schema

    rows = [("198.19.0.1", 1, "198.18.0.2"), ("198.19.0.1", 2, "198.18.1.2"),
            ("198.19.0.1", 4, "198.19.0.1"), ("198.19.0.2", 1, "198.18.0.2"),
            ("198.19.0.2", 2, "198.18.1.2"), ("198.19.0.2", 4, "198.19.0.2"),
            ("198.19.0.9", 1, "198.18.0.2"), ("198.19.0.9", 2, "198.18.9.2"),
            ("198.19.0.9", 3, "198.19.0.9")]  # parse-only rows: nothing is sent
    cols = {"scan_id": ["s"] * len(rows), "host": [r[0] for r in rows],
            "ttl": [r[1] for r in rows], "address": [r[2] for r in rows],
            "rtt_ms": [0.5] * len(rows),
            "hostname": [None] * 7 + ["<b>x</b>", None],  # a name from DNS: escaped
            "probe_port": [80] * len(rows), "probe_proto": ["tcp"] * len(rows)}
    table = pa.Table.from_pydict(cols).cast(schema.TRACE)
    fig = pn.plot.topology(table)
    nodes = {tr.name: list(tr.text) for tr in fig.data if tr.mode == "markers+text"}
    assert nodes["router"] == ["198.18.0.2", "198.18.1.2", "&lt;b&gt;x&lt;/b&gt;"]
    assert nodes["silent hop"] == ["?"]  # TTL 3 of the two hosts sharing 1-2: one node
    assert nodes["traced host"] == ["198.19.0.1", "198.19.0.2", "198.19.0.9"]
    assert fig.layout.title.text and fig.layout.xaxis.title.text
    empty = pn.plot.topology(schema.empty("trace"))
    assert empty.layout.annotations and "traceroute=True" in empty.layout.annotations[0].text
