"""What the panel draws from a ``PanelState``: progress text, the open-port table, the chart.

The text and table are pure functions of the state (tested without widgets). The chart is
one plotly ``FigureWidget`` with two rows (throughput, memory): one widget rather than two
keeps the notebook small (each FigureWidget carries its JavaScript into the saved file).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from .._display import duration, reason_text
from .state import TABLE_ROWS

if TYPE_CHECKING:
    from .state import PanelState

#: What the memory chart measures (engine.telemetry.ProcessTree).
TREE_WORDS = "RSS of the process tree: this kernel and its worker processes"
MAX_ROWS = TABLE_ROWS  # open ports listed in the live table; the DataFrame has them all
_TABLE_CSS = ("<style>.prtip-open-ports-table td,.prtip-open-ports-table th"
              "{padding:1px 10px;text-align:left}</style>")
STATUS_COLORS = {"running": "#1f77b4", "stopping": "#ff7f0e", "completed": "#2ca02c",
                 "cancelled": "#ff7f0e", "failed": "#d62728", "idle": "#777"}


def rate_text(state: PanelState) -> str:
    """``limit 3,000/s, growing while replies keep up``: the send rate in force and why."""
    p = state.progress
    if p is None:
        return ""
    if p.rate_limit is None:
        return "no rate limit" if p.rate_reason in ("", "unlimited") else \
            f"no rate limit, {reason_text(p.rate_reason)}"
    why = reason_text(p.rate_reason)
    return f"limit {p.rate_limit:,.0f}/s" + (f", {why}" if why else "")


def progress_text(state: PanelState) -> str:
    """``42.0% · 27,512 / 65,535 ports · 31,200 probes/s (limit 40,000/s, growing …) · …``.

    The rate shown is the latest chart point (probes sent per second now), not the mean
    since the start, so the line and the chart agree."""
    p = state.progress
    if p is None:
        return "not started" if state.status == "idle" else "starting…"
    now = state.series.pps[-1] if state.running and state.series.pps else None
    speed = (f"{now:,.0f} probes/s" if now is not None else f"{p.rate:,.0f} ports/s")
    limit = rate_text(state)
    if limit:
        speed += f" ({limit})"
    parts = [f"{p.fraction:.1%}", f"{p.done:,} / {p.total:,} ports", speed]
    if state.running:
        eta = state.eta
        parts.append("ETA …" if eta is None else f"ETA {duration(eta)}")
    else:
        parts.append(f"took {duration(p.elapsed)}")
    parts.append(f"{state.open_count:,} open")
    return " · ".join(parts)


def status_html(state: PanelState) -> str:
    color = STATUS_COLORS.get(state.status, "#777")
    scan_id = state.scan.scan_id if state.scan is not None else None
    text = f"<b style='color:{color}'>{html.escape(state.status)}</b>"
    if scan_id:
        text += f" <span class='prtip-scan-id'>scan {html.escape(scan_id)}</span>"
    if state.message:
        text += f" <span style='color:#d62728'>{html.escape(state.message)}</span>"
    return text


def errors_html(state: PanelState) -> str:
    """The form's errors on one line (the bad fields are also framed in red, and each
    field's tooltip holds its whole message)."""
    if not state.errors:
        return ""
    items = " · ".join(f"<b>{html.escape(k)}</b>: {html.escape(v.splitlines()[0])}"
                       for k, v in state.errors.items())
    return f"<span class='prtip-errors' style='color:#d62728'>{items}</span>"


def ports_table_html(state: PanelState) -> str:
    """The open ports found so far as an HTML table (values escaped): the first MAX_ROWS
    found, by (host, proto, port), and how many more. ``state.open_ports`` holds just those
    (state.TABLE_ROWS): the table costs the same at 65K open ports as at 50."""
    rows, count = state.open_ports[:MAX_ROWS], state.open_count
    head = (f"{_TABLE_CSS}<div class='prtip-open-ports-title'><b>{count:,} open ports</b></div>"
            "<table class='prtip-open-ports-table' style='border-collapse:collapse'>"
            "<thead><tr><th>host</th><th>port</th><th>proto</th><th>reason</th>"
            "<th>found at</th></tr></thead><tbody>")
    body = "".join(
        f"<tr data-port='{r.port}'><td>{html.escape(r.host)}</td><td>{r.port}</td>"
        f"<td>{html.escape(r.proto)}</td><td>{html.escape(r.reason)}</td>"
        f"<td>{r.t:.2f} s</td></tr>"
        for r in rows
    )
    more = (f"<tr><td colspan='5'>… {count - len(rows):,} more: see panel.result.open_ports"
            "</td></tr>" if count > len(rows) else "")
    return f"{head}{body}{more}</tbody></table>"


def _axis(**more: Any) -> dict[str, Any]:
    return {"gridcolor": "#eee", "zerolinecolor": "#ccc", "linecolor": "#ccc", **more}


_WAITING = {"text": "throughput and memory are drawn here while a scan runs", "x": 0.5,
            "y": 0.5, "xref": "paper", "yref": "paper", "showarrow": False,
            "font": {"size": 13, "color": "#999"}, "name": "waiting"}


def make_chart() -> Any:
    """The live chart: throughput (top) and memory (bottom), sharing the time axis.

    Built from plain dicts with no template: 2 ms, where make_subplots and the
    plotly_white template took 40 ms, a tenth of a 65,535-port SYN scan here.
    """
    import plotly.graph_objects as go

    def title(text: str, y: float) -> dict[str, Any]:
        return {"text": text, "x": 0.5, "y": y, "xref": "paper", "yref": "paper",
                "showarrow": False, "xanchor": "center", "yanchor": "bottom",
                "font": {"size": 13}}

    line = {"mode": "lines+markers", "x": [], "y": [], "marker": {"size": 4}}
    data = [
        {**line, "type": "scatter", "name": "probes/s", "xaxis": "x", "yaxis": "y",
         "line": {"color": "#1f77b4"},
         "hovertemplate": "t=%{x:.2f} s<br>%{y:,.0f} probes/s<extra></extra>"},
        # Steps (hv): the limit holds until the controller changes it. Gaps where there
        # is none (None), rather than a line at zero.
        {"type": "scatter", "mode": "lines", "x": [], "y": [], "name": "rate limit",
         "xaxis": "x", "yaxis": "y", "customdata": [],
         "line": {"color": "#9467bd", "dash": "dash", "shape": "hv", "width": 1.5},
         "hovertemplate": "t=%{x:.2f} s<br>limit %{y:,.0f}/s<br>%{customdata}<extra></extra>"},
        {**line, "type": "scatter", "name": "RSS MiB", "xaxis": "x2", "yaxis": "y2",
         "line": {"color": "#ff7f0e", "shape": "hv"}, "customdata": [],
         "hovertemplate": "t=%{x:.2f} s<br>%{y:.1f} MiB<br>CPU %{customdata:.0f}% "
                          "(100% = one core)<extra></extra>"},
    ]
    layout: dict[str, Any] = {
        "template": "none", "height": 380, "showlegend": False, "font": {"size": 12},
        "margin": {"l": 60, "r": 10, "t": 40, "b": 45}, "paper_bgcolor": "white",
        "plot_bgcolor": "white", "hovermode": "closest",
        # No axes before data (visible=False): empty 0-4 and 0-6 ranges read as measurements.
        "xaxis": _axis(anchor="y", domain=[0, 1], matches="x2", showticklabels=False,
                       rangemode="tozero", visible=False),
        "xaxis2": _axis(anchor="y2", domain=[0, 1], rangemode="tozero", visible=False,
                        title={"text": "seconds since the scan started"}),
        "yaxis": _axis(anchor="x", domain=[0.58, 1], rangemode="tozero", visible=False,
                       title={"text": "probes/s"}),
        "yaxis2": _axis(anchor="x2", domain=[0, 0.42], rangemode="tozero", visible=False,
                        title={"text": "MiB"}),
        "annotations": [title("Throughput (probes sent per second; dashed: the rate limit)", 1.0),
                        title(f"Memory ({TREE_WORDS}, MiB)", 0.42), _WAITING],
        # Fill the output area's width (a fixed 700 px otherwise) and follow its resizes.
        "autosize": True,
    }
    widget = go.FigureWidget({"data": data, "layout": layout})
    # plotly.js sizes an autosized plot to its container only when the config says
    # "responsive" (and then follows the window's resizes); the widget passes _config on.
    widget._config = {**widget._config, "responsive": True, "displaylogo": False}
    widget.add_class("prtip-live-chart")
    return widget


#: Points drawn per line at most: a long scan's series (4 a second: 14,400 an hour) is
#: drawn one point in k, the latest always, so a redraw sends the same few KB at any length.
MAX_POINTS = 1000


def _thin(values: list[Any], step: int) -> tuple[Any, ...]:
    """Every ``step``-th value counted back from the last (so the latest is drawn)."""
    return tuple(values[(len(values) - 1) % step::step]) if step > 1 else tuple(values)


def draw_series(chart: Any, state: PanelState) -> None:
    s = state.series
    drawn = (id(s), len(s.t))
    if getattr(chart, "_prtip_drawn", None) == drawn:
        return  # nothing new (a scan's start, with its chart still empty): 1.4 ms saved
    chart._prtip_drawn = drawn
    has_data = bool(s.t)
    step = -(-len(s.t) // MAX_POINTS)
    if has_data and not chart.layout.xaxis.visible:
        # AUTOSIZE: plotly.js drew the chart before the notebook attached it to the page,
        # so it took its 700 px default. By the first data the chart is on the page:
        # relayout with autosize makes it measure its container again (outside the batch,
        # or the two changes would cancel out).
        chart.layout.autosize = False
        chart.layout.autosize = True
    with chart.batch_update():
        if bool(chart.layout.xaxis.visible) != has_data:
            for axis in (chart.layout.xaxis, chart.layout.xaxis2, chart.layout.yaxis,
                         chart.layout.yaxis2):
                axis.visible = has_data
            chart.layout.annotations = [a for a in chart.layout.annotations
                                        if a.name != "waiting"] + ([] if has_data
                                                                   else [_WAITING])
        t = _thin(s.t, step)
        chart.data[0].x, chart.data[0].y = t, _thin(s.pps, step)
        chart.data[1].x, chart.data[1].y = t, _thin(s.limit, step)
        chart.data[1].customdata = tuple(reason_text(r) for r in _thin(s.reason, step))
        chart.data[2].x, chart.data[2].y = t, _thin(s.rss_mib, step)
        chart.data[2].customdata = _thin(s.cpu, step)
