"""Charts of the ports table: open-port map, states, services, RTT, certificate expiry."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from prtip_nb.viz._frames import (
    STATE_COLORS,
    esc,
    figure,
    frame,
    host_key,
    join_lines,
    note,
    numbers,
    texts,
)

__all__ = ["certificates", "ports", "rtt", "services", "states"]

MAX_COLUMNS = 2000  # ports shown in the map; more would be unreadable anyway


def _open_rows(df: pd.DataFrame) -> pd.DataFrame:
    if "state" not in df.columns:
        return df
    return df[df["state"].astype(object) == "open"]


def _service_line(service: str | None, product: str | None, version: str | None) -> str:
    what = " ".join(p for p in (product, version) if p)
    if service and what:
        return f"service: {esc(service)} ({esc(what)})"
    if service or what:
        return f"service: {esc(service or what)}"
    return ""


def ports(res: Any) -> go.Figure:
    """Open ports as a map, host × port; hover shows service, product and banner.

    A result of several scans colours each cell by how many of them saw the port open.
    """
    df = _open_rows(frame(res, "ports"))
    n_scans = df["scan_id"].nunique() if "scan_id" in df.columns and len(df) else 1
    title = f"Open ports by host ({len(df)} open)"
    fig = figure(title, "port / protocol", "host", height=360)
    if df.empty:
        return note(fig, "no open ports")
    hosts = texts(df, "host")
    protos = texts(df, "proto", "tcp")
    port = numbers(df, "port").astype(int)
    service, product = texts(df, "service"), texts(df, "product")
    version, banner = texts(df, "version"), texts(df, "banner")
    seen: dict[tuple[str, str, int], int] = defaultdict(int)
    hover: dict[tuple[str, str, int], str] = {}
    labels: dict[tuple[str, str, int], str] = {}
    for i, key in enumerate(zip(hosts, protos, port.tolist(), strict=True)):
        h, pr, p = str(key[0]), str(key[1]), int(key[2])
        seen[h, pr, p] += 1
        if service[i] and service[i] != "tcpwrapped":
            labels[h, pr, p] = str(service[i])
        hover[h, pr, p] = join_lines([
            f"<b>{esc(h)}:{p}/{esc(pr)}</b>",
            _service_line(service[i], product[i], version[i]),
            f"banner: {esc(banner[i])}" if banner[i] else "",
        ])
    cols = sorted({(pr, p) for _h, pr, p in seen}, key=lambda c: (c[0], c[1]))[:MAX_COLUMNS]
    rows = sorted({h for h, _pr, _p in seen}, key=host_key)
    col_index = {c: j for j, c in enumerate(cols)}
    row_index = {h: i for i, h in enumerate(rows)}
    z = np.full((len(rows), len(cols)), np.nan)
    tips = [[""] * len(cols) for _ in rows]
    names = [[""] * len(cols) for _ in rows]  # the service, written in its cell
    for (h, pr, p), count in seen.items():
        j = col_index.get((pr, p))
        if j is None:
            continue
        i = row_index[h]
        z[i, j] = count
        extra = f"<br>open in {count} of {n_scans} scans" if n_scans > 1 else ""
        tips[i][j] = hover[h, pr, p] + extra
        names[i][j] = esc(labels.get((h, pr, p), ""), 12)
    fig.add_trace(go.Heatmap(
        z=z, x=[f"{p}/{pr}" for pr, p in cols], y=rows, customdata=tips, text=names,
        hovertemplate="%{customdata}<extra></extra>",
        texttemplate="%{text}" if len(cols) <= 40 else None, textfont={"color": "white"},
        colorscale=[[0, "#74c476"], [1, "#006d2c"]], showscale=n_scans > 1, xgap=2, ygap=2,
        zmin=1 if n_scans > 1 else 0, zmax=max(1, n_scans),
        colorbar={"title": {"text": "scans"}} if n_scans > 1 else None,
    ))
    fig.update_xaxes(type="category", tickangle=-45)
    fig.update_yaxes(type="category")
    fig.update_layout(height=min(800, 220 + 36 * len(rows)))
    return fig


def states(res: Any) -> go.Figure:
    """Ports per state for each host and protocol (log scale: 26 open beside 65,509 closed)."""
    df = frame(res, "ports")
    fig = figure("Port states per host and protocol", "host / protocol", "ports (log scale)")
    if df.empty:
        return note(fig, "no ports were probed")
    keys = [f"{h} {p}" for h, p in zip(texts(df, "host"), texts(df, "proto", "tcp"), strict=True)]
    counts = pd.Series(1, index=pd.MultiIndex.from_arrays(
        [keys, texts(df, "state", "unknown")], names=["key", "state"])).groupby(level=[0, 1]).sum()
    order = sorted(set(keys), key=lambda k: (host_key(k.split(" ")[0]), k))
    present = set(counts.index.get_level_values("state"))
    for state in [s for s in STATE_COLORS if s in present] + sorted(present - set(STATE_COLORS)):
        ys = [int(counts.get((k, state), 0)) for k in order]
        fig.add_trace(go.Bar(
            name=state, x=order, y=ys, marker_color=STATE_COLORS.get(state, "#8c564b"),
            hovertemplate=f"%{{x}}<br>{esc(state)}: %{{y:,}} ports<extra></extra>",
            texttemplate="%{y:,}", textposition="outside",
        ))
    fig.update_layout(barmode="group")
    fig.update_xaxes(type="category")
    _count_axis(fig, [int(v) for v in counts.to_numpy()])
    return fig


def _count_axis(fig: go.Figure, counts: list[int]) -> None:
    """A log axis from 1 when counts span orders of magnitude (26 open, 65,509 closed)."""
    top = max(counts, default=1)
    if top / max(1, min((c for c in counts if c > 0), default=1)) < 50:
        fig.update_yaxes(title_text=fig.layout.yaxis.title.text.replace(" (log scale)", ""),
                         rangemode="tozero")
        return
    fig.update_yaxes(type="log", range=[-0.05, np.log10(top) + 0.25])


def services(res: Any) -> go.Figure:
    """Open ports counted by service; hover lists products, versions and ports."""
    df = _open_rows(frame(res, "ports"))
    fig = figure("Services on open ports", "open ports", "service")
    if df.empty:
        return note(fig, "no open ports")
    names = [s or "unknown" for s in texts(df, "service")]
    product, version = texts(df, "product"), texts(df, "version")
    port = numbers(df, "port").astype(int).tolist()
    by: dict[str, list[int]] = defaultdict(list)
    what: dict[str, set[str]] = defaultdict(set)
    for i, name in enumerate(names):
        by[name].append(port[i])
        label = " ".join(p for p in (product[i], version[i]) if p)
        if label:
            what[name].add(label)
    order = sorted(by, key=lambda n: (len(by[n]), n))  # largest bar on top
    hover = []
    for name in order:
        ps = sorted(set(by[name]))
        shown = ", ".join(map(str, ps[:12])) + (f" … (+{len(ps) - 12})" if len(ps) > 12 else "")
        hover.append(join_lines([
            f"<b>{esc(name)}</b>: {len(by[name])} open",
            "products: " + esc(", ".join(sorted(what[name]))) if what[name] else "",
            f"ports: {shown}",
        ]))
    fig.add_trace(go.Bar(
        x=[len(by[n]) for n in order], y=[esc(n) for n in order], orientation="h",
        text=hover, hovertemplate="%{text}<extra></extra>", marker_color="#1f77b4",
        texttemplate="%{x}", textposition="outside",
    ))
    fig.update_layout(height=max(300, 60 + 28 * len(order)))
    return fig


def rtt(res: Any, *, bins: int = 40) -> go.Figure:
    """Distribution of round-trip times, one bar series per state, on shared bins."""
    df = frame(res, "ports")
    fig = figure("Round-trip time per probe", "RTT (ms)", "ports (log scale)")
    values = numbers(df, "rtt_ms")
    state = np.array(texts(df, "state", "unknown"), dtype=object)
    have = ~np.isnan(values)
    if not have.any():
        return note(fig, "no RTT measured")
    edges = np.histogram_bin_edges(values[have], bins=bins)
    centers, width = (edges[:-1] + edges[1:]) / 2, float(edges[1] - edges[0]) or 1.0
    counts: list[int] = []
    for name in [s for s in STATE_COLORS if s in set(state[have])]:
        mine = values[have & (state == name)]
        hist, _ = np.histogram(mine, bins=edges)
        counts += [int(c) for c in hist if c]
        fig.add_trace(go.Bar(
            x=centers, y=hist, width=width, name=f"{name} (median {np.median(mine):.3g} ms)",
            marker_color=STATE_COLORS[name], opacity=0.75,
            customdata=np.stack([edges[:-1], edges[1:]], axis=-1),
            hovertemplate="%{customdata[0]:.3g}–%{customdata[1]:.3g} ms: %{y:,} ports"
                          "<extra>" + name + "</extra>",
        ))
    fig.update_layout(barmode="overlay", bargap=0)
    _count_axis(fig, counts)
    return fig


def certificates(res: Any, *, now: datetime | None = None, warn_days: int = 30) -> go.Figure:
    """Days until each TLS certificate expires (red: expired, orange: under ``warn_days``)."""
    df = frame(res, "ports")
    fig = figure("TLS certificate expiry", "days until expiry", "host:port")
    if "tls_not_after" not in df.columns or not df["tls_not_after"].notna().any():
        return note(fig, "no TLS certificates")
    df = df[df["tls_not_after"].notna()]
    now = now or datetime.now(UTC)
    ends = [pd.Timestamp(v).to_pydatetime() for v in df["tls_not_after"].astype(object)]
    order = sorted(range(len(ends)), key=lambda i: ends[i], reverse=True)  # soonest on top
    df, ends = df.iloc[order], [ends[i] for i in order]
    days = [(e - now).total_seconds() / 86400 for e in ends]
    where = [f"{h}:{p}" for h, p in zip(texts(df, "host"), numbers(df, "port").astype(int),
                                         strict=True)]
    subject, issuer = texts(df, "tls_subject"), texts(df, "tls_issuer")
    san = [", ".join(v) if isinstance(v, list | tuple | np.ndarray) else "" for v in
           (df["tls_san"].astype(object) if "tls_san" in df.columns else [None] * len(df))]
    colors = ["#d62728" if d < 0 else "#ff7f0e" if d < warn_days else "#2ca02c" for d in days]
    hover = [join_lines([
        f"<b>{esc(w)}</b>", f"subject: {esc(subject[i])}", f"issuer: {esc(issuer[i])}",
        f"SAN: {esc(san[i])}" if san[i] else "", f"not after: {ends[i]:%Y-%m-%d %H:%M} UTC",
        f"{days[i]:.1f} days left" if days[i] >= 0 else f"expired {-days[i]:.1f} days ago",
    ]) for i, w in enumerate(where)]
    fig.add_trace(go.Bar(
        x=days, y=where, orientation="h", marker_color=colors, text=hover,
        hovertemplate="%{text}<extra></extra>", texttemplate="%{x:.0f} d", textposition="auto",
    ))
    fig.add_vline(x=0, line_color="#d62728", line_dash="dot")
    fig.add_vline(x=warn_days, line_color="#ff7f0e", line_dash="dot",
                  annotation_text=f"{warn_days} days", annotation_position="top")
    fig.update_yaxes(type="category")
    fig.update_layout(height=max(260, 80 + 30 * len(where)))
    return fig
