"""Charts of the telemetry table: throughput and memory over the scan's time."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from prtip_nb._display import reason_text
from prtip_nb.viz._frames import esc, figure, frame, note, numbers, scan_label, texts

__all__ = ["memory", "throughput"]

_LIMIT_COLOR = "#9467bd"
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _by_scan(res: Any) -> list[tuple[str, np.ndarray, dict[str, np.ndarray]]]:
    """(scan_id, t, columns) per scan, rows in time order."""
    df = frame(res, "telemetry")
    if df.empty:
        return []
    ids = np.array(texts(df, "scan_id", "scan"), dtype=object)
    t = numbers(df, "t")
    cols: dict[str, np.ndarray] = {
        c: numbers(df, c) for c in ("pps", "pps_received", "rss_bytes", "cpu_percent", "rate_pps")
    }
    cols["rate_reason"] = np.array(texts(df, "rate_reason"), dtype=object)
    out = []
    for sid in dict.fromkeys(ids.tolist()):
        mine = ids == sid
        order = np.argsort(t[mine], kind="stable")
        out.append((str(sid), t[mine][order], {c: v[mine][order] for c, v in cols.items()}))
    return out


def _limit_trace(t: np.ndarray, cols: dict[str, np.ndarray], color: str, tag: str) -> Any:
    """The send rate in force as steps, its reason in the hover; None when never limited.

    Rows with no limit (null rate_pps: unlimited) are gaps, not a line at zero."""
    limit = cols["rate_pps"]
    if np.isnan(limit).all():
        return None
    reasons = [esc(reason_text(r)) for r in cols["rate_reason"]]
    return go.Scatter(
        x=t, y=limit, mode="lines", name=f"rate limit{tag}", customdata=reasons,
        line={"color": color, "dash": "dash", "shape": "hv", "width": 1.5},
        hovertemplate="t=%{x:.2f} s<br>limit %{y:,.0f} probes/s<br>%{customdata}<extra></extra>",
    )


def throughput(res: Any) -> go.Figure:
    """Probes sent and replies received per second over the scan (from telemetry), and the
    send rate in force (dashed steps; hover: why, e.g. backing off after loss)."""
    fig = figure("Throughput", "seconds since the scan started", "packets per second")
    scans = _by_scan(res)
    if not scans:
        return note(fig, "no telemetry")
    many = len(scans) > 1
    for k, (sid, t, cols) in enumerate(scans):
        color = _PALETTE[k % len(_PALETTE)]
        tag = f" · {scan_label(sid)}" if many else ""
        # Each row is the mean over the interval that ends at its t: steps that rise at
        # the interval's start (shape "vh") from the scan's start at t=0, so a 1 s scan
        # covers its whole second rather than 4 points from 0.25 s on.
        fig.add_trace(go.Scatter(
            x=np.concatenate([[0.0], t]), y=np.concatenate([[0.0], cols["pps"]]),
            mode="lines+markers", name=f"sent{tag}",
            line={"color": color, "shape": "vh"}, marker={"size": 5},
            hovertemplate="t=%{x:.2f} s<br>%{y:,.0f} probes/s sent<extra></extra>",
        ))
        if not np.isnan(cols["pps_received"]).all():
            fig.add_trace(go.Scatter(
                x=np.concatenate([[0.0], t]), y=np.concatenate([[0.0], cols["pps_received"]]),
                mode="lines", name=f"received{tag}",
                line={"color": color, "dash": "dot", "shape": "vh"},
                hovertemplate="t=%{x:.2f} s<br>%{y:,.0f} replies/s<extra></extra>",
            ))
        limit = _limit_trace(t, cols, _LIMIT_COLOR if not many else color, tag)
        if limit is not None:
            fig.add_trace(limit)
    fig.update_yaxes(rangemode="tozero")
    fig.update_xaxes(rangemode="tozero")
    return fig


def memory(res: Any) -> go.Figure:
    """Resident memory (RSS) of the scan's process tree over the scan, and its peak.

    The tree is the scanning process and its descendants (a connect scan's worker
    processes, a LocalCluster's Dask workers): their RSS summed, their CPU in the hover
    (100% = one core). A Dask shard's rows measure the tree of the worker that ran it."""
    fig = figure("Memory of the process tree (scanner and its workers)",
                 "seconds since the scan started", "RSS, summed over processes (MiB)")
    scans = _by_scan(res)
    if not scans:
        return note(fig, "no telemetry")
    many = len(scans) > 1
    for k, (sid, t, cols) in enumerate(scans):
        mib = cols["rss_bytes"] / 2**20
        peak = float(np.nanmax(mib)) if len(mib) else float("nan")
        name = f"{scan_label(sid)} (peak {peak:.1f} MiB)" if many else f"RSS (peak {peak:.1f} MiB)"
        fig.add_trace(go.Scatter(
            x=t, y=mib, mode="lines+markers", name=name, marker={"size": 4},
            line={"color": _PALETTE[k % len(_PALETTE)], "shape": "hv"},
            customdata=cols["cpu_percent"],
            hovertemplate="t=%{x:.2f} s<br>%{y:.1f} MiB<br>CPU %{customdata:.0f}%<extra></extra>",
        ))
    fig.update_yaxes(rangemode="tozero")
    fig.update_xaxes(rangemode="tozero")
    return fig
