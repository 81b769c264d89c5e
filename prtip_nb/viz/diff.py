"""What opened and what closed between two scans: a table, and a chart of it."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from prtip_nb.viz._frames import esc, figure, frame, host_key, note, numbers, scan_label, texts

__all__ = ["changes", "diff"]

_KEY = ["host", "proto", "port"]
CHANGE_COLORS = {"opened": "#2ca02c", "closed": "#d62728", "new-host": "#17becf",
                 "gone-host": "#7f7f7f", "service-changed": "#ff7f0e"}
_SYMBOLS = {"opened": "triangle-up", "closed": "triangle-down", "new-host": "star",
            "gone-host": "x", "service-changed": "diamond"}


def _states(df: pd.DataFrame) -> dict[tuple[str, str, int], str]:
    """(host, proto, port) -> state; a port open in any scan of the result counts as open."""
    out: dict[tuple[str, str, int], str] = {}
    for h, pr, p, st in zip(texts(df, "host"), texts(df, "proto", "tcp"),
                            numbers(df, "port").astype(int).tolist(), texts(df, "state"),
                            strict=True):
        key = (str(h), str(pr), int(p))
        if out.get(key) != "open":
            out[key] = str(st)
    return out


def _from_interop(old: Any, new: Any) -> pd.DataFrame | None:
    """``prtip_nb.interop.diff``'s answer when that module exists and speaks our columns."""
    try:
        from prtip_nb.interop import diff as interop_diff
    except ImportError:
        return None
    fn = getattr(interop_diff, "diff", None)
    if not callable(fn):
        return None
    try:
        out = fn(old, new)
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
    if not isinstance(out, pd.DataFrame) or not {*_KEY, "change"} <= set(out.columns):
        return None
    return out.reset_index(drop=True)


def changes(old: Any, new: Any) -> pd.DataFrame:
    """One row per port that opened or closed between ``old`` and ``new``.

    Columns: host, proto, port, before, after (state, or null if not probed), change
    ("opened": open now and not before; "closed": open before and not now). This is
    ``prtip_nb.interop.diff`` where it is installed, which also reports new and gone hosts
    and changed services (see its docstring).
    """
    found = _from_interop(old, new)
    if found is not None:
        return found
    before, after = _states(frame(old, "ports")), _states(frame(new, "ports"))
    rows = []
    for key in sorted(set(before) | set(after), key=lambda k: (host_key(k[0]), k[1], k[2])):
        b, a = before.get(key), after.get(key)
        if (a == "open") != (b == "open"):
            rows.append((*key, b, a, "opened" if a == "open" else "closed"))
    df = pd.DataFrame(rows, columns=[*_KEY, "before", "after", "change"])
    return df.astype({"port": "uint16"})


def diff(old: Any, new: Any) -> go.Figure:
    """Ports that opened (green) and closed (red) between two scans, host × port."""
    df = changes(old, new)
    ids = [getattr(r, "scan_id", None) for r in (old, new)]
    # The scan ids go on a second, smaller line: on one line the title ran under plotly's
    # toolbar at the top right.
    what = f"<br><sup>{scan_label(ids[0])} → {scan_label(ids[1])}</sup>" if all(ids) else ""
    kinds = df["change"].astype(object)
    n_open, n_closed = int((kinds == "opened").sum()), int((kinds == "closed").sum())
    other = len(df) - n_open - n_closed
    title = f"Changes: {n_open} opened, {n_closed} closed" + (
        f", {other} other" if other else "") + what
    fig = figure(title, "port", "host", height=340)
    fig.update_layout(margin={"t": 80})
    df = df[df["port"].notna()]  # a host-level change (a host that came or went) has no port
    if df.empty:
        return note(fig, "no port opened or closed")
    for change, color in CHANGE_COLORS.items():
        part = df[df["change"].astype(object) == change]
        if part.empty:
            continue
        hover = [
            f"<b>{esc(h)}:{int(p)}/{esc(pr)}</b><br>{change}: {esc(b or 'not probed')} → "
            f"{esc(a or 'not probed')}"
            for h, pr, p, b, a in zip(texts(part, "host"), texts(part, "proto"),
                                      numbers(part, "port"), texts(part, "before"),
                                      texts(part, "after"), strict=True)
        ]
        fig.add_trace(go.Scatter(
            x=numbers(part, "port"), y=texts(part, "host"), mode="markers", name=change,
            marker={"color": color, "size": 11, "symbol": _SYMBOLS[change]},
            text=hover, hovertemplate="%{text}<extra></extra>",
        ))
    fig.update_yaxes(type="category")
    fig.update_xaxes(tickformat="d")  # port 31337, not "31.337k"
    return fig
