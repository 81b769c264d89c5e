"""ScanPanel, the ipywidgets view, driven through its widgets with a recording comm.

Every widget's comm records what the kernel would send the browser, so these tests see
the messages a frontend would get: the progress bar's value, the chart's points, the
table's HTML. The real browser test (tests/browser) checks what only a browser shows.
"""

from __future__ import annotations

import gc
import itertools
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from comm.base_comm import BaseComm

import prtip_nb as pn
from prtip_nb.widgets.live import MAX_ROWS, ports_table_html, progress_text

from .conftest import Target, open_sockets, scan_threads

_ids = itertools.count()


class RecordingComm(BaseComm):
    """A comm with no kernel: it records every message it would publish."""

    log: list[tuple[float, str, dict[str, Any]]] = []
    kernel = "recording"

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                    buffers: Any = None, **keys: Any) -> None:
        RecordingComm.log.append((time.monotonic(), self.comm_id, data or {}))


@pytest.fixture
def comms(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[float, str, dict[str, Any]]]]:
    import ipywidgets.widgets.widget as widget_module

    def create(**kwargs: Any) -> RecordingComm:
        kwargs.setdefault("comm_id", f"rec-{next(_ids)}")
        return RecordingComm(**kwargs)

    monkeypatch.setattr(widget_module.comm, "create_comm", create)
    RecordingComm.log = []
    yield RecordingComm.log


def _updates(log: list[tuple[float, str, dict[str, Any]]], comm_id: str, key: str) -> list[Any]:
    return [(t, d["state"][key]) for t, cid, d in log
            if cid == comm_id and d.get("method") == "update" and key in d.get("state", {})]


def test_typing_shows_the_grammars_message(comms: list[Any]) -> None:
    panel = pn.ScanPanel(targets="127.0.0.1", ports="80")
    panel.inputs["ports"].value = "1-70000"
    assert "70000" in panel.errors.value and "is out of range" in panel.errors.value
    assert panel.start_button.disabled  # no Start while the form is wrong
    panel.inputs["ports"].value = "1-1024"
    assert panel.errors.value == "" and not panel.start_button.disabled
    panel.inputs["targets"].value = "10.0.0.300"  # parse-only: rejected by the form, never sent
    assert "octet 300" in panel.errors.value
    panel.inputs["targets"].value = "127.0.0.1"
    panel.inputs["rate"].value = "fast"
    assert "rate" in panel.errors.value
    panel.close()


def test_start_click_scans_and_renders(comms: list[Any], target: Target) -> None:
    panel = pn.ScanPanel(targets="127.0.0.1", ports=target.spec, timing=4)
    panel.start_button.click()
    res = panel.wait(30)
    assert panel.state.status == "completed"
    # What the browser was sent: the bar reached 1.0, the chart got points, the table rows.
    bar = _updates(comms, panel.bar.comm.comm_id, "value")
    assert bar and bar[-1][1] == 1.0
    assert panel.bar.bar_style == "success"
    assert "100.0%" in panel.progress_label.value
    assert len(panel.chart.data[0].x) == len(panel.state.series.t) > 0
    for port in target.open:
        assert f"<td>{port}</td>" in panel.table.value
    assert panel.result is res and set(res.open_ports["port"].astype(int)) == target.open
    assert panel.stop_button.disabled and not panel.start_button.disabled
    panel.close()


def test_stop_click(comms: list[Any], target: Target, slow: dict[str, object]) -> None:
    panel = pn.ScanPanel(targets="127.0.0.1", **slow)  # type: ignore[arg-type]
    panel.start_button.click()
    time.sleep(0.8)
    assert panel.start_button.disabled and panel.inputs["ports"].disabled
    t0 = time.monotonic()
    panel.stop_button.click()
    panel.wait(5)
    assert time.monotonic() - t0 < 1.0
    assert panel.state.status == "cancelled"
    assert panel.bar.bar_style == "warning" and 0 < panel.bar.value < 1
    assert "cancelled" in panel.status.value
    panel.close()


@pytest.mark.serial
def test_chart_redraws_at_most_ten_times_a_second(comms: list[Any], target: Target,
                                                  slow: dict[str, object]) -> None:
    panel = pn.ScanPanel(targets="127.0.0.1", **slow)  # type: ignore[arg-type]
    panel.start()
    panel.wait(30)
    chart = panel.chart.comm.comm_id
    sent = [t for t, cid, d in comms if cid == chart and d.get("method") == "update"]
    # One redraw is a burst of a few messages (plotly sends restyle and edit ids apart).
    redraws = [t for i, t in enumerate(sent) if i == 0 or t - sent[i - 1] > 0.02]
    # The scan's end is always drawn at once, however soon after the last redraw.
    gaps = [b - a for a, b in zip(redraws[:-1], redraws[1:-1], strict=False)]
    assert len(redraws) >= 4
    assert min(gaps) >= 0.095, gaps
    panel.close()


def test_errors_on_start_show_in_the_panel(comms: list[Any]) -> None:
    panel = pn.ScanPanel(targets="127.0.0.1", ports="T:80,U:53")
    assert panel.start(quiet=True) is None
    assert "UDP" in panel.status.value or "UDP" in panel.errors.value
    panel.close()


def test_close_stops_the_scan(comms: list[Any], target: Target, slow: dict[str, object]) -> None:
    sockets = open_sockets()
    panel = pn.ScanPanel(targets="127.0.0.1", **slow)  # type: ignore[arg-type]
    panel.start()
    time.sleep(0.5)
    panel.close()
    panel.state.wait(5)
    assert panel.state.status == "cancelled"
    del panel
    gc.collect()
    deadline = time.monotonic() + 3
    while scan_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert scan_threads() == [] and open_sockets() <= sockets


def test_text_helpers_escape_and_bound() -> None:
    from prtip_nb.widgets.state import OpenPort, PanelState

    state = PanelState()
    assert progress_text(state) == "not started"
    for p in range(300):
        state.add_open(OpenPort("<b>x</b>", "tcp", p, "syn-ack", 0.1))
    html = ports_table_html(state)
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert html.count("<tr data-port=") == MAX_ROWS and "100 more" in html


def test_the_table_stays_bounded_at_scale() -> None:
    """A /17's 65,536 open ports, in a scan's shuffled order: the panel keeps the first
    MAX_ROWS found (sorted) and counts the rest, so a render costs the same as at 50
    (sorting them all at each render took 60 ms, a tenth of a big scan)."""
    import random

    from prtip_nb.widgets.state import OpenPort, PanelState

    state = PanelState()
    found = [OpenPort(f"198.18.{i >> 8}.{i & 255}", "tcp", port, "syn-ack", 0.1)
             for i in range(32_768) for port in (80, 443)]
    random.Random(20).shuffle(found)
    kept = [state.add_open(p) for p in found]
    assert kept == [True] * (MAX_ROWS - 1) + [False] * (len(found) - MAX_ROWS + 1)
    first = sorted(found[:MAX_ROWS], key=lambda r: (r.host, r.proto, r.port))
    assert state.open_count == len(found) and state.open_ports == first
    t0 = time.perf_counter()
    html = ports_table_html(state)
    took = time.perf_counter() - t0
    assert html.count("<tr data-port=") == MAX_ROWS and f"{len(found) - MAX_ROWS:,} more" in html
    assert "65,536 open ports" in html and took < 0.01, took


def test_rate_in_force_and_its_reason_are_shown_live(comms: list[Any], target: Target,
                                                     slow: dict[str, object]) -> None:
    """A pinned rate: the progress line names it and why, and the chart draws it as a line
    beside the measured probes/s, with the reason in its hover text."""
    panel = pn.ScanPanel(targets="127.0.0.1", **slow)  # type: ignore[arg-type]
    rate = float(slow["rate"])  # type: ignore[arg-type]
    panel.start()
    labels: list[str] = []
    deadline = time.monotonic() + 10
    while panel.state.running and time.monotonic() < deadline:
        labels.append(panel.progress_label.value)
        time.sleep(0.2)
    panel.wait(30)
    live_lines = [t for t in labels if "%" in t]
    assert live_lines and all(f"limit {rate:,.0f}/s, pinned" in t for t in live_lines)
    limit = panel.chart.data[1]
    assert limit.name == "rate limit" and len(limit.y) == len(panel.chart.data[0].y) > 2
    assert set(limit.y) == {rate}
    assert set(limit.customdata) == {"pinned by the rate you set"}
    assert "%{customdata}" in limit.hovertemplate
    # What the browser was sent: the limit's points went over the chart's comm.
    chart = panel.chart.comm.comm_id
    sent = [d for _t, cid, d in comms if cid == chart and d.get("method") == "update"]
    assert any(str(rate) in repr(d) for d in sent)
    panel.close()


def test_rate_text_for_every_reason() -> None:
    from prtip_nb._display import RATE_REASONS
    from prtip_nb.engine.events import Progress
    from prtip_nb.widgets.live import rate_text
    from prtip_nb.widgets.state import PanelState

    state = PanelState()
    assert rate_text(state) == ""
    for reason, words in RATE_REASONS.items():
        state.progress = Progress(1.0, "s", 10, 100, 10, 0, 1.0, 10.0, 3000.0, reason)
        assert rate_text(state) == f"limit 3,000/s, {words}"
    state.progress = Progress(1.0, "s", 10, 100, 10, 0, 1.0, 10.0, None, "unlimited")
    assert rate_text(state) == "no rate limit"
    state.progress = Progress(1.0, "s", 10, 100, 10, 0, 1.0, 10.0, 500.0, "new-reason")
    assert rate_text(state) == "limit 500/s, new-reason"  # an unknown reason still shows


@pytest.mark.serial
def test_panel_is_built_at_once_and_its_chart_follows() -> None:
    """In a fresh interpreter (as a fresh kernel): ScanPanel() returns without waiting for
    plotly's widget (about 3 s to import with Jupyter installed); the chart joins the panel
    when it has loaded, with hidden axes until data comes."""
    import subprocess
    import sys

    code = """
import sys, time
t0 = time.perf_counter()
import prtip_nb as pn
panel = pn.ScanPanel()
built = time.perf_counter() - t0
lazy = "plotly.graph_objs._figurewidget" not in sys.modules or panel._chart is None
chart = panel.chart
ready = time.perf_counter() - t0
inside = chart in panel.chart_box.children
print(built, ready, lazy, inside, chart.layout.xaxis.visible)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    built, ready = float(out[0]), float(out[1])
    print(f"ScanPanel() {built:.3f} s; chart ready at {ready:.3f} s")
    assert out[2:] == ["True", "True", "False"], out
    assert built < 1.5 and built < ready


def test_bad_field_is_framed_with_its_message_as_tooltip(comms: list[Any]) -> None:
    panel = pn.ScanPanel(targets="127.0.0.1", ports="80")
    before = panel.errors.layout.height
    panel.inputs["ports"].value = "1-70000"
    ports = panel.inputs["ports"]
    assert "prtip-invalid" in ports._dom_classes
    assert ports.tooltip and "out of range" in ports.tooltip
    assert "prtip-invalid" not in panel.inputs["targets"]._dom_classes
    panel.inputs["rate"].value = "fast"
    assert "prtip-invalid" in panel.inputs["rate"]._dom_classes
    # Both messages on one line of a fixed height: the panel below does not move.
    assert panel.errors.layout.height == before == "1.7em"
    assert "<li>" not in panel.errors.value and " · " in panel.errors.value
    panel.inputs["ports"].value = "80"
    panel.inputs["rate"].value = ""
    assert "prtip-invalid" not in ports._dom_classes and ports.tooltip is None
    assert panel.errors.value == ""
    # The placeholder says what empty means now (adaptive) and fits its field.
    rate = panel.inputs["rate"]
    assert "adaptive" in rate.placeholder
    width = int(rate.layout.width.removesuffix("px")) - 60  # the description's 60 px
    assert len(rate.placeholder) * 7.5 < width  # ~7.5 px a character at 12-13 px
    panel.close()


def test_chart_has_no_axes_before_data_and_fills_the_width(comms: list[Any],
                                                          target: Target) -> None:
    panel = pn.ScanPanel(targets="127.0.0.1", ports=target.spec)
    layout = panel.chart.layout
    assert not any(getattr(layout, a).visible for a in ("xaxis", "xaxis2", "yaxis", "yaxis2"))
    assert any(a.name == "waiting" for a in layout.annotations)
    assert layout.autosize is True and layout.width is None
    assert panel.chart_box.layout.width == "100%"
    panel.start()
    panel.wait(30)
    layout = panel.chart.layout
    assert all(getattr(layout, a).visible for a in ("xaxis", "xaxis2", "yaxis", "yaxis2"))
    assert not any(a.name == "waiting" for a in layout.annotations)
    panel.close()


def test_open_count_in_the_line_matches_the_table(comms: list[Any], target: Target) -> None:
    """Every time the panel renders, the progress line's "N open" equals the table's."""
    panel = pn.ScanPanel(targets="127.0.0.1", ports=target.spec)
    seen: list[tuple[str, str]] = []

    def compare(_state: Any, _changed: frozenset[str]) -> None:  # runs after the panel's
        line = re.search(r"(\d+) open$", panel.progress_label.value)
        table = re.search(r"<b>(\d+) open ports</b>", panel.table.value)
        if line and table:
            seen.append((line.group(1), table.group(1)))

    panel.state.observe(compare)
    panel.start()
    panel.wait(30)
    assert seen and all(a == b for a, b in seen), seen
    assert seen[-1][0] == str(len(target.open))
    panel.close()


def test_eta_follows_the_recent_rate() -> None:
    """Unit: a slow start (workers starting) then a steady rate; the ETA extrapolates the
    last half second, not the mean since the start."""
    from prtip_nb.engine.events import Progress
    from prtip_nb.widgets.state import PanelState

    state = PanelState()
    total = 100_000
    points = [(0.25, 100), (0.5, 200), (0.75, 5_200), (1.0, 10_200), (1.25, 15_200),
              (1.5, 20_200)]  # 20,000 ports/s after a slow 0.5 s
    assert state.eta is None
    for i, (t, done) in enumerate(points):
        state._on_progress(Progress(t, "s", done, total, done, 0, t, done / t))
        if i == 0:
            assert state.eta is None  # one point: no rate yet
    # The mean (13,467/s) says 5.9 s left; the last half second's 20,000/s says 4.0 s.
    assert state.eta == pytest.approx((total - 20_200) / 20_000)
    assert state.progress is not None and state.progress.eta == pytest.approx(5.93, abs=0.01)


@pytest.mark.serial
@pytest.mark.parametrize("method", ["syn", "connect"])
def test_eta_of_a_real_scan_after_ten_percent(comms: list[Any], target: Target,
                                              slow: dict[str, object], method: str) -> None:
    """A rate-limited scan: from 10% on, elapsed + ETA is within 30% of the real end.

    (A connect scan at a pinned 20,000/s runs in the kernel's process: worker processes
    would send nothing for their first 0.1-0.5 s, then catch up.)"""
    panel = pn.ScanPanel(targets="127.0.0.1", method=method, **slow)  # type: ignore[arg-type]
    predictions: list[tuple[float, float]] = []  # (fraction, predicted end)

    def record(state: Any, _changed: frozenset[str]) -> None:
        p, eta = state.progress, state.eta
        if p is not None and eta is not None and state.running and p.fraction >= 0.1:
            predictions.append((p.fraction, p.elapsed + eta))

    panel.state.observe(record)
    panel.start()
    panel.wait(60)
    end = panel.state.progress.elapsed
    assert predictions, "no progress after 10%"
    off = [abs(pred - end) / end for _f, pred in predictions]
    assert max(off) <= 0.30, (end, predictions)
    panel.close()


def test_a_full_table_stops_the_port_events_and_the_count_stays_exact(
        comms: list[Any]) -> None:
    """A SYN scan of a /24 of the range lab (80 and 443 open on every host: 512 open
    ports; rate-limited to 400/s, so its rows come in a few flushes): the table keeps its
    first MAX_ROWS, the panel stops listening for PortFound (later flushes build none for
    it), and the count it shows is the result's, from Progress."""
    from prtip_nb.engine.events import PortFound
    from prtip_nb.lab import RangeLab

    from ..conftest import need_range_lab

    need_range_lab()
    panel = pn.ScanPanel(targets="198.18.0.0/24", ports="80,443", method="syn", timing=4,
                         rate=400, resolve="never")
    delivered, listening = [0], []
    on_event = panel.state._on_event

    def counting(ev: Any) -> None:
        delivered[0] += isinstance(ev, PortFound)
        on_event(ev)

    def sample(state: Any, _changed: frozenset[str]) -> None:
        if state.running and len(state.open_ports) == MAX_ROWS and state.scan is not None:
            listening.append(state.scan.bus.listens(PortFound))

    panel.state._on_event = counting  # type: ignore[method-assign]
    panel.state.observe(sample)
    with RangeLab("198.18.0.0/24", tcp=(80, 443)):
        panel.start()
        res = panel.wait(60)
    assert panel.state.status == "completed"
    assert len(res.open_ports) == 512 == panel.state.open_count
    assert MAX_ROWS <= delivered[0] < 512 and listening and not any(listening)
    assert len(panel.state.open_ports) == MAX_ROWS
    assert "512 open ports" in panel.table.value and "312 more" in panel.table.value
    assert panel.progress_label.value.endswith(" 512 open")
    panel.close()


def test_a_long_series_is_drawn_thinned_with_its_latest_point(comms: list[Any]) -> None:
    """Five hours of ticks (72,000 points) draw at most MAX_POINTS a line, the latest
    included; an unchanged series is not sent again."""
    from prtip_nb.widgets.live import MAX_POINTS, draw_series, make_chart
    from prtip_nb.widgets.state import PanelState

    state = PanelState()
    n = 72_000
    s = state.series
    s.t, s.pps, s.rss_mib, s.cpu = [i / 4 for i in range(n)], [1.0] * n, [2.0] * n, [3.0] * n
    s.limit, s.reason = [4.0] * n, ["growing"] * n
    chart = make_chart()
    empty = len(comms)
    draw_series(chart, state)
    assert len(comms) > empty
    x = chart.data[0].x
    assert MAX_POINTS // 2 <= len(x) <= MAX_POINTS and x[-1] == s.t[-1]
    assert all(len(d.x) == len(x) for d in chart.data)
    before = len(comms)
    draw_series(chart, state)
    assert len(comms) == before
