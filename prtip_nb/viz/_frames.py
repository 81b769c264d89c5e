"""What every chart needs: a table as a DataFrame, plain columns, safe hover text, a layout.

The chart functions accept a ScanResult (live, finished or read back from Parquet), a
DataFrame of one of its tables, or an Arrow table. Columns come as ``pd.ArrowDtype``;
plotly wants plain Python and numpy values, so they are converted here, once.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

#: nmap's states, each with one colour in every chart.
STATE_COLORS = {
    "open": "#2ca02c",
    "closed": "#d62728",
    "filtered": "#7f7f7f",
    "unfiltered": "#17becf",
    "open|filtered": "#bcbd22",
    "closed|filtered": "#9467bd",
}
HOVER_MAX = 120  # characters of a banner shown in a tooltip
FONT = {"family": "system-ui, sans-serif", "size": 13}


def frame(obj: Any, table: str) -> pd.DataFrame:
    """``table`` ("ports", "telemetry", ...) of a ScanResult, or ``obj`` itself if a frame."""
    if isinstance(obj, pd.DataFrame):
        return obj
    tables = getattr(obj, "tables", None)
    if isinstance(tables, dict) and table in tables:
        return getattr(obj, table)  # ScanResult caches its DataFrames
    if hasattr(obj, "to_pandas") and hasattr(obj, "column_names"):  # a pyarrow Table
        return obj.to_pandas(types_mapper=pd.ArrowDtype)
    raise TypeError(
        f"expected a ScanResult or a {table} DataFrame, not {type(obj).__name__}"
    )


def texts(df: pd.DataFrame, column: str, default: str | None = None) -> list[str | None]:
    """A column as Python strings (None for nulls); ``default`` when the column is absent."""
    if column not in df.columns:
        return [default] * len(df)
    # pandas 3 infers a "str" dtype whose missing value is NaN, not None or pd.NA.
    return [None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v)
            for v in df[column].astype(object)]


def numbers(df: pd.DataFrame, column: str) -> np.ndarray:
    """A numeric column as float64, NaN for nulls (all NaN when the column is absent)."""
    if column not in df.columns:
        return np.full(len(df), np.nan)
    return df[column].to_numpy(dtype="float64", na_value=np.nan)


def esc(value: object, limit: int = HOVER_MAX) -> str:
    """Hover text is pseudo-HTML to plotly: escape what a hostile service sent, and cut it."""
    text = "" if value is None or value is pd.NA else str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text.replace("\r", "\\r").replace("\n", "\\n"))


def scan_label(scan_id: object) -> str:
    text = str(scan_id or "scan")
    return text if len(text) <= 24 else text[:23] + "…"


def host_key(host: str) -> tuple[int, int, str]:
    """Sort hosts as addresses (10.0.0.9 before 10.0.0.10), names last."""
    import ipaddress

    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return (9, 0, host)
    return (addr.version, int(addr), host)


def figure(title: str, x: str, y: str, *, height: int = 380) -> go.Figure:
    """An empty figure with the house layout: a title and both axis labels."""
    fig = go.Figure()
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left"},
        xaxis_title=x,
        yaxis_title=y,
        height=height,
        margin={"l": 70, "r": 20, "t": 60, "b": 55},
        font=FONT,
        template="plotly_white",
        hoverlabel={"align": "left"},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 1.0, "xanchor": "right"},
    )
    return fig


def note(fig: go.Figure, message: str) -> go.Figure:
    """Say in the plot area why a figure is empty (rather than show blank axes)."""
    fig.add_annotation(
        text=html.escape(message), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
        font={"size": 15, "color": "#777"},
    )
    # No axes at all: an empty grid with invented 0-4 and 0-6 ticks reads as data.
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def join_lines(parts: Iterable[str | None]) -> str:
    return "<br>".join(p for p in parts if p)


def service_names(df: pd.DataFrame) -> tuple[list[str | None], list[bool]]:
    """Each row's service and whether it is a guess.

    A name from service detection (``service`` column) is kept; otherwise the port table
    names it (nmap's ``nmap-services`` when installed, else the project's own list), marked
    as guessed, as nmap prints ``80/tcp open http`` without -sV. None: no name at all.
    """
    from prtip_nb.targets.portnames import port_names

    table = port_names()
    known = texts(df, "service")
    protos = texts(df, "proto", "tcp")
    ports = numbers(df, "port")
    names: list[str | None] = []
    guessed: list[bool] = []
    for name, proto, port in zip(known, protos, ports, strict=True):
        if name:
            names.append(name)
            guessed.append(False)
            continue
        guess = None if np.isnan(port) else table.get((str(proto).lower(), int(port)))
        names.append(guess)
        guessed.append(guess is not None)
    return names, guessed
