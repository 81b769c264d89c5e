"""ScanPanel, the ipywidgets view, driven through its widgets with a recording comm.

Every widget's comm records what the kernel would send the browser, so these tests see
the messages a frontend would get: the progress bar's value, the chart's points, the
table's HTML. The real browser test (tests/browser) checks what only a browser shows.
"""

from __future__ import annotations

import gc
import itertools
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
    panel.inputs["targets"].value = "10.0.0.300"
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
    state.open_ports = [OpenPort("<b>x</b>", "tcp", p, "syn-ack", 0.1) for p in range(300)]
    html = ports_table_html(state)
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert html.count("<tr data-port=") == MAX_ROWS and "100 more" in html


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
    from prtip_nb.engine.events import Progress
    from prtip_nb.widgets.live import RATE_REASONS, rate_text
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
