"""``ScanPanel``: the scan form, Start/Stop, progress, live charts and open ports, in a notebook.

    >>> panel = pn.ScanPanel(targets="127.0.0.1", ports="1-1024")   # doctest: +SKIP
    >>> panel                    # renders; press Start                 # doctest: +SKIP
    >>> panel.result.ports       # at any time: what was found so far  # doctest: +SKIP

The panel holds no scanning logic: ``PanelState`` does all of it, and this view renders the
state whenever it changes (at most 10 times a second while a scan runs).
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from ..config import METHODS, TIMINGS
from . import live
from .state import PanelState

if TYPE_CHECKING:
    from ..engine.scan import Scan
    from ..results import ScanResult

_TIMING_OPTIONS = [(f"T{i} {t.name}", i) for i, t in enumerate(TIMINGS)]
# A bad field gets a red frame; its message is its tooltip and one line above the buttons.
# The live chart's element spans the panel, so that plotly's autosize measures that width.
_CSS = """<style>
.prtip-invalid input, .prtip-invalid select {border:1px solid #d62728 !important;
  background:#fff6f6}
.prtip-form-errors {white-space:nowrap; overflow:hidden; text-overflow:ellipsis}
.prtip-live-chart.js-plotly-plot {width:100% !important}
</style>"""
# The module that makes plotly's FigureWidget: its first import costs about 3 s in a kernel
# with Jupyter installed (plotly.io loads nbformat, which loads jsonschema's format checkers).
_FIGUREWIDGET = "plotly.graph_objs._figurewidget"


class ScanPanel:
    """A scan panel widget over a :class:`PanelState` (``panel.state``).

    Arguments are the form's initial values (``targets``, ``ports``, ``method``, ``rate``,
    ``timing``, ``service``) and any other ``ScanConfig`` option, passed to every scan.
    """

    def __init__(self, targets: str = "127.0.0.1", ports: str = "", **options: Any) -> None:
        self.state = PanelState(targets, ports, **options)
        self._render_lock = threading.RLock()
        self._chart: Any = None
        self._chart_ready = threading.Event()
        self._closed = False
        self._build()
        self.state.observe(self._render)
        self._render(self.state, frozenset({"form", "status", "progress", "series", "ports"}))

    # -- the widget tree ---------------------------------------------------------------
    def _build(self) -> None:
        v = self.state.values
        text = {"continuous_update": True, "style": {"description_width": "60px"}}
        self.inputs: dict[str, Any] = {
            "targets": W.Text(value=str(v["targets"]), description="targets",
                              placeholder="127.0.0.1, 10.0.0.0/24, host.example", **text),
            "ports": W.Text(value=str(v["ports"]), description="ports",
                            placeholder="22,80,8000-8100 or - (empty: top 1000)", **text),
            "method": W.Dropdown(options=list(METHODS), value=v["method"], description="method",
                                 layout=W.Layout(width="190px"),
                                 style={"description_width": "60px"}),
            "rate": W.Text(value="" if v["rate"] is None else str(v["rate"]),
                           description="rate", placeholder="adaptive, or probes/s",
                           layout=W.Layout(width="250px"), **text),
            "timing": W.Dropdown(options=_TIMING_OPTIONS, value=int(v["timing"]),
                                 description="timing", layout=W.Layout(width="210px"),
                                 style={"description_width": "60px"}),
        }
        if "service" in self.state.fields:
            self.inputs["service"] = W.Checkbox(value=bool(v["service"]), indent=False,
                                                description="service detection (-sV)")
        for name, widget in self.inputs.items():
            widget.add_class(f"prtip-input-{name}")
            widget.observe(lambda change, n=name: self.state.set(n, change["new"]), "value")
        # One line, always there: the panel does not jump when a message comes or goes.
        self.errors = W.HTML(layout=W.Layout(height="1.7em", width="100%")).add_class(
            "prtip-form-errors")
        self.start_button = W.Button(description="Start", button_style="primary", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="warning", icon="stop")
        self.start_button.add_class("prtip-start")
        self.stop_button.add_class("prtip-stop")
        self.start_button.on_click(lambda _b: self.start(quiet=True))
        self.stop_button.on_click(lambda _b: self.stop())
        self.status = W.HTML().add_class("prtip-status")
        self.bar = W.FloatProgress(min=0.0, max=1.0, value=0.0, bar_style="info",
                                   layout=W.Layout(width="100%")).add_class("prtip-progress")
        self.progress_label = W.Label().add_class("prtip-progress-text")
        self.chart_box = W.Box([W.HTML("<i style='color:#999'>loading the live chart…</i>")],
                               layout=W.Layout(width="100%", min_height="380px"))
        self.chart_box.add_class("prtip-chart-box")
        self._start_chart()
        self.table = W.HTML().add_class("prtip-open-ports")
        i = self.inputs
        form = [W.HBox([i["targets"], i["ports"]]),
                W.HBox([i["method"], i["rate"], i["timing"], *([i["service"]]
                       if "service" in i else [])])]
        self.widget = W.VBox([
            W.HTML(_CSS), *form, self.errors,
            W.HBox([self.start_button, self.stop_button, self.status]),
            self.bar, self.progress_label, self.chart_box,
            W.VBox([self.table], layout=W.Layout(max_height="260px", overflow="auto")),
        ]).add_class("prtip-panel")

    def _start_chart(self) -> None:
        """Build the live chart now if plotly's widget is loaded, else on a thread.

        The panel shows (and Start works) at once; the chart joins it when plotly has
        loaded, drawn with whatever the scan has measured by then."""
        if _FIGUREWIDGET in sys.modules:
            self._set_chart()
        else:
            threading.Thread(target=self._set_chart, name="panel-chart-import",
                             daemon=True).start()

    def _set_chart(self) -> None:
        try:
            chart: Any = live.make_chart()
        except Exception as exc:  # shown in place of the chart; the scan works without it
            chart = W.HTML(f"<i>live chart unavailable: {type(exc).__name__}: {exc}</i>")
        with self._render_lock:
            if self._closed:
                _close_tree(chart)
            else:
                self._chart = chart
                if hasattr(chart, "batch_update"):
                    live.draw_series(chart, self.state)
                waiting, self.chart_box.children = self.chart_box.children, (chart,)
                for widget in waiting:
                    widget.close()
        self._chart_ready.set()

    @property
    def chart(self) -> Any:
        """The live chart (a plotly FigureWidget); waits for plotly on first use."""
        self._chart_ready.wait(60)
        return self._chart

    # -- rendering (on whichever thread changed the state) -----------------------------
    def _render(self, state: PanelState, changed: frozenset[str]) -> None:
        with self._render_lock:
            if "form" in changed:
                self.errors.value = live.errors_html(state)
                for name, widget in self.inputs.items():
                    message = state.errors.get(name)
                    if message:
                        widget.add_class("prtip-invalid")
                    else:
                        widget.remove_class("prtip-invalid")
                    widget.tooltip = message
            if changed & {"status", "progress", "form"}:
                self.status.value = live.status_html(state)
                self.start_button.disabled = state.running or not state.valid
                self.stop_button.disabled = not state.running
                for widget in self.inputs.values():
                    widget.disabled = state.running
            # "ports" too: the line's open count and the table's rows change together.
            if changed & {"progress", "status", "ports"}:
                p = state.progress
                self.bar.value = p.fraction if p is not None else 0.0
                self.bar.bar_style = {"completed": "success", "failed": "danger",
                                      "cancelled": "warning"}.get(state.status, "info")
                self.progress_label.value = live.progress_text(state)
            if "series" in changed and hasattr(self._chart, "batch_update"):
                live.draw_series(self._chart, state)
            if changed & {"ports", "status"}:
                self.table.value = live.ports_table_html(state)

    # -- the API -----------------------------------------------------------------------
    def start(self, *, quiet: bool = False) -> Scan | None:
        """Start a scan of the form's values (what the Start button does).

        Errors show in the panel; ``quiet=False`` also raises them.
        """
        from ..errors import PrtipError

        try:
            return self.state.start()
        except PrtipError as exc:
            self.state.message = str(exc)
            self._render(self.state, frozenset({"status"}))
            if not quiet:
                raise
            return None

    def stop(self) -> None:
        """Cancel the scan (within a second); what it found so far is kept."""
        self.state.stop()

    def wait(self, timeout: float | None = None) -> ScanResult:
        """Block until the scan ends; Ctrl-C (kernel interrupt) stops it cleanly."""
        return self.state.wait(timeout)

    @property
    def result(self) -> ScanResult:
        """What the current (or last) scan found: a snapshot while it runs."""
        return self.state.result

    @property
    def scan(self) -> Scan | None:
        return self.state.scan

    def close(self) -> None:
        """Stop any scan and close the widgets."""
        self.state.close()
        with self._render_lock:
            self._closed = True
            _close_tree(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<ScanPanel {self.state.status}: {self.state.values['targets']!r} " \
               f"ports {self.state.values['ports'] or 'top 1000'!r}>"


def _close_tree(widget: Any) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()
