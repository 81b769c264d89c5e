"""A self-contained HTML report of a scan: summary, charts, open ports, telemetry.

``pn.report(res, "report.html")`` and ``prtip-nb report DIR -o report.html`` write it.

- Every value from the scan is HTML-escaped (banners come from hostile services); plotly's
  own JSON escapes ``<`` inside the chart data, and ``viz`` escapes hover text.
- plotly.js is inlined once, so the file opens with no network at all. Without plotly
  installed (a broken install: plotly is a core dependency), the report has the tables only.

(The module is not called ``report``: ``prtip_nb.report`` is the function, and a
submodule of that name would replace it on the package once imported.)
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._display import display_frame, duration
from ._fileio import atomic_file
from ._report_summary import rate_summary, summary_lines
from ._version import __version__

if TYPE_CHECKING:
    from .results import ScanResult

__all__ = ["charts", "report", "service_counts"]

_CSS = """
table.summary th{text-align:left;vertical-align:top;white-space:nowrap}
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px}
th{background:#f0f0f0}h1{font-size:1.4em}.muted{color:#777}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:1em}
.chart{border:1px solid #eee;border-radius:4px;padding:4px}
.chart[data-chart=ports]{grid-column:1/-1}
"""
_PORT_COLUMNS = ("host", "hostname", "proto", "port", "state", "reason", "rtt_ms", "service",
                 "tunnel", "product", "version", "cpe", "banner", "tls_subject",
                 "tls_not_after")  # fmt: skip


def charts(res: ScanResult) -> dict[str, Any]:
    """The report's figures by name (plotly needed): those with something to show (no
    services chart when no open port has a service name)."""
    from . import viz

    makers: dict[str, Callable[[Any], Any]] = {
        "ports": viz.ports, "states": viz.states, "services": viz.services,
        "throughput": viz.throughput, "memory": viz.memory, "rtt": viz.rtt,
    }
    if not any(name for name, _n, _guess in service_counts(res)):
        # No open port has a name (not even a guess from its number): the chart would be
        # one "unknown" bar. The summary says what is known instead.
        del makers["services"]
    figs = {name: make(res) for name, make in makers.items()}
    if "tls_not_after" in res.ports.columns and res.ports["tls_not_after"].notna().any():
        figs["certificates"] = viz.certificates(res)
    if res.tables["trace"].num_rows:  # --traceroute: the paths as a graph
        figs["topology"] = viz.topology(res)
    return figs


def service_counts(res: ScanResult) -> list[tuple[str, int, bool]]:
    """(service, open ports, guessed) for the open ports, most common first.

    Without service detection a port is named from the port table (``80/tcp``: http), as
    nmap does, with guessed=True."""
    from collections import Counter

    from .viz._frames import service_names

    ports = res.open_ports
    if not len(ports):
        return []
    names, guessed = service_names(ports)
    counts = Counter((n, g) for n, g in zip(names, guessed, strict=True) if n)
    return [(n, c, g) for (n, g), c in counts.most_common()]


def _chart_html(figs: dict[str, Any]) -> list[str]:
    import plotly.io as pio
    import plotly.offline

    parts = [f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script>",
             "<h2>Charts</h2><div class='charts'>"]
    config = {"displaylogo": False, "responsive": True}
    for name, fig in figs.items():
        div = pio.to_html(fig, full_html=False, include_plotlyjs=False, config=config,
                          div_id=f"chart-{name}", default_width="100%")
        parts.append(f"<div class='chart' data-chart='{html.escape(name)}'>{div}</div>")
    parts.append("</div>")
    return parts


def _title(res: ScanResult) -> str:
    if res.scan_id is not None:
        return f"prtip_nb scan {res.scan_id}"
    ids = [m.scan_id for m in res.scans]
    return f"prtip_nb: {len(ids)} scans" + (f" ({', '.join(ids[:3])}, …)" if len(ids) > 3 else
                                            f" ({', '.join(ids)})" if ids else "")


def _table(df: Any) -> str:
    """A DataFrame as an HTML table of readable, escaped text (see ``_display``)."""
    return display_frame(df).to_html(index=False, escape=True, na_rep="")


def _changes_html(res: ScanResult, previous: ScanResult) -> str:
    from ._report_changes import changes_html

    return changes_html(res, previous)


def _summary_html(res: ScanResult, previous: ScanResult | None) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{html.escape(text)}</td></tr>"
        for label, text in summary_lines(res, previous=previous, services=service_counts(res))
    )
    return f"<h2>Summary</h2><table class='summary' id='summary'>{rows}</table>"


def report(
    res: ScanResult, path: str | os.PathLike[str], *, with_charts: bool | None = None,
    previous: ScanResult | None = None,
) -> Path:
    """Write ``res`` as one HTML file at ``path`` and return the path.

    The file opens with a summary (what was scanned, when, how long, what was found, and,
    given ``previous``, an earlier scan of the same targets, what changed since), then, with
    ``previous``, a "What changed" section (new and gone hosts, ports opened and closed,
    services changed, certificates expired or expiring within 30 days: sentences first,
    then a table each), then the charts and the tables.

    ``with_charts``: None (the default) draws the plotly charts when plotly is installed;
    True insists (ImportError without plotly); False writes the tables only.
    """
    missing = False
    if with_charts is None:
        import importlib.util

        with_charts = importlib.util.find_spec("plotly") is not None
        missing = not with_charts
    figs = charts(res) if with_charts else {}
    open_ports = res.open_ports
    cols = [c for c in _PORT_COLUMNS if c in open_ports.columns and
            (c in ("host", "proto", "port", "state", "reason") or open_ports[c].notna().any())]
    tel = res.telemetry
    title = _title(res)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _summary_html(res, previous),
        _changes_html(res, previous) if previous is not None else "",
        "<h2>Hosts</h2>",
        _table(res.summary()),
    ]
    if figs:
        parts += _chart_html(figs)
    elif missing:
        parts.append("<p class='muted'>Charts left out (plotly is not installed: "
                     "it is a core dependency: reinstall with <code>pip install prtip_nb</code>)."
                     "</p>")
    parts += [
        f"<h2>Open ports ({len(open_ports):,})</h2>",
        _table(open_ports[cols]),
    ]
    # The inventory, when the scan (or the file it was imported from) has one.
    if len(res.os):
        best = res.os.groupby("host", sort=False).head(1)[["host", "name", "accuracy"]]
        parts += ["<h2>Operating systems (best match per host)</h2>",
                  best.to_html(index=False, escape=True, na_rep="")]  # fmt: skip
    if res.tables["scripts"].num_rows:
        from ._report_scripts import facts_html

        parts.append(facts_html(res))
    if len(res.scripts):
        shown = res.scripts[["host", "proto", "port", "id", "output"]].copy()
        shown["output"] = shown["output"].astype(object).map(
            lambda s: s if s is None or len(s) <= 300 else s[:300] + "…")
        parts += [f"<h2>Scripts ({len(shown)})</h2>",
                  shown.to_html(index=False, escape=True, na_rep="")]  # fmt: skip
    if len(tel):
        last = tel.iloc[-1]
        parts.append(
            "<h2>Telemetry</h2><p>"
            f"{int(tel['sent'].max()):,} probes sent in {duration(float(last['t']))}; "
            f"peak RSS {int(tel['rss_bytes'].max()) / 2**20:,.1f} MiB; "
            f"peak rate {float(tel['pps'].max()):,.0f} probes/s</p>"
            f"<p class='rate'>send rate: {html.escape(rate_summary(tel))}</p>"
        )
    parts.append(f"<p class='muted'>prtip_nb {html.escape(__version__)}; this file needs no "
                 "network to open.</p></body></html>\n")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out, "w", encoding="utf-8") as fh:
        fh.write("\n".join(parts))
    return out
