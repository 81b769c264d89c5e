"""pn.plot: every chart of a real lab scan, live and read back from Parquet, has a title,
axis labels, data and hover text; text from the wire is escaped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
    heat = fig.data[0]
    open_ports = scans["lab"].open_ports["tcp"]
    assert sorted(int(x.split("/")[0]) for x in heat.x) == sorted(open_ports)
    assert list(heat.y) == ["127.0.0.1"]
    assert f"({len(open_ports)} open)" in fig.layout.title.text


def test_port_map_of_several_scans_counts_them(scans: dict[str, Any]) -> None:
    heat = pn.plot.ports(scans["all"]).data[0]
    counts = dict(zip((int(x.split("/")[0]) for x in heat.x), heat.z[0], strict=True))
    assert all(counts[p] == 1 for p in scans["gone"])
    assert max(counts.values()) == 2


def test_states_counts_match_the_result(scans: dict[str, Any]) -> None:
    fig = pn.plot.states(scans["first"])
    by_state = {t.name: sum(t.y) for t in fig.data}
    expected = scans["first"].ports["state"].astype(str).value_counts().to_dict()
    assert by_state == expected
    assert fig.layout.yaxis.type != "log"  # 25 open beside 5 closed: a plain axis


def test_states_go_log_when_counts_span_orders_of_magnitude() -> None:
    df = pd.DataFrame({"host": ["10.0.0.1"] * 1003, "proto": ["tcp"] * 1003,
                       "port": range(1, 1004), "state": ["open"] * 3 + ["closed"] * 1000})
    fig = pn.plot.states(df)
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.range[0] < 0  # bars from 1
    assert "log scale" in fig.layout.yaxis.title.text


def test_throughput_and_memory_come_from_telemetry(scans: dict[str, Any]) -> None:
    tel = scans["first"].telemetry
    mem = pn.plot.memory(scans["back"])
    assert list(mem.data[0].y) == pytest.approx(list(tel["rss_bytes"].astype(float) / 2**20))
    thr = pn.plot.throughput(scans["first"])
    assert list(thr.data[0].x) == pytest.approx(list(tel["t"].astype(float)))
    assert len(pn.plot.memory(scans["all"]).data) == 2  # one line per scan


def test_diff_finds_what_closed(scans: dict[str, Any]) -> None:
    changes = pn.plot.changes(scans["first"], scans["second"])
    assert set(changes["port"].astype(int)) == set(scans["gone"])
    assert set(changes["change"]) == {"closed"} and changes["after"].isna().all()
    back = pn.plot.changes(scans["second"], scans["first"])
    assert set(back["change"]) == {"opened"}
    fig = pn.plot.diff(scans["first"], scans["second"])
    assert "0 opened, 2 closed" in fig.layout.title.text
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
        "scan_id": ["x"] * 3, "host": ["10.0.0.1"] * 3, "proto": ["tcp"] * 3,
        "port": [22, 443, 8443], "state": ["open"] * 3,
        "service": ["ssh<img src=x onerror=alert(1)>", "https", "https"],
        "product": ["<b>evil</b>", None, None], "version": [None] * 3,
        "banner": ["</script><script>alert(1)</script>" + "A" * 500, None, None],
        "tls_subject": [None, "CN=<i>a</i>", "CN=b"], "tls_issuer": [None, "CN=a", "CN=b"],
        "tls_not_after": [None, now - timedelta(days=2), now + timedelta(days=300)],
    })


def test_text_from_the_wire_is_escaped_and_cut() -> None:
    df = _hostile_ports()
    heat = pn.plot.ports(df).data[0]
    hover = heat.customdata[0]
    joined = " ".join(hover) + " ".join(heat.text[0])
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
