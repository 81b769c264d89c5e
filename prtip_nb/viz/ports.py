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
    service_names,
    texts,
)

__all__ = ["certificates", "ports", "rtt", "services", "states"]

MAX_POINTS = 3000  # open ports drawn one by one; beyond, ports are binned by range
MAX_HOSTS = 60  # host rows; beyond, the hosts with most open ports are kept (and it says so)
BIN = 1024  # ports per bin in the binned view: 64 bins cover 0-65535
LABELS_MAX = 30  # service names written beside the points up to this many in a row
# IANA's ranges, shaded behind the strip so a port's kind reads at a glance.
_RANGES = ((0.7, 1023.5, "#eef4fa"), (49151.5, 65535.5, "#f3f3f3"))
# Landmarks at least a third of a decade apart, so their labels never touch.
_TICKS = [1, 22, 80, 443, 1024, 3306, 8080, 20000, 65535]


def _open_rows(df: pd.DataFrame) -> pd.DataFrame:
    if "state" not in df.columns:
        return df
    return df[df["state"].astype(object) == "open"]


def _service_line(service: str | None, product: str | None, version: str | None,
                  guessed: bool = False) -> str:
    what = " ".join(p for p in (product, version) if p)
    if service and guessed:
        return f"service: {esc(service)}? (a guess from the port number)"
    if service and what:
        return f"service: {esc(service)} ({esc(what)})"
    if service or what:
        return f"service: {esc(service or what)}"
    return ""


def _cut_hosts(seen: dict[tuple[str, str, int], int]) -> tuple[list[str], int]:
    """Host rows to draw (most open ports first when cut, else in address order), and how
    many hosts were left out."""
    per: dict[str, int] = defaultdict(int)
    for h, _pr, _p in seen:
        per[h] += 1
    hosts = sorted(per, key=host_key)
    if len(hosts) <= MAX_HOSTS:
        return hosts, 0
    kept = set(sorted(hosts, key=lambda h: (-per[h], host_key(h)))[:MAX_HOSTS])
    return [h for h in hosts if h in kept], len(hosts) - MAX_HOSTS


def ports(res: Any) -> go.Figure:
    """Open ports, one strip per host along a log port axis; hover: service and banner.

    Up to ``MAX_POINTS`` ports are drawn one by one, named (service detection's name, or
    the port table's guess, marked "?"); beyond that, ports are counted in bins of 1,024.
    Beyond ``MAX_HOSTS`` hosts, those with most open ports are kept. The title says what
    is shown and what was cut. A result of several scans colours each port by how many of
    them saw it open.
    """
    df = _open_rows(frame(res, "ports"))
    n_scans = df["scan_id"].nunique() if "scan_id" in df.columns and len(df) else 1
    fig = figure("Open ports by host", "port (log scale)", "host", height=360)
    if df.empty:
        fig.update_layout(title_text="Open ports by host (0 open)")
        return note(fig, "no open ports")
    hosts = texts(df, "host")
    protos = texts(df, "proto", "tcp")
    port = numbers(df, "port").astype(int)
    names, guessed = service_names(df)
    product, version = texts(df, "product"), texts(df, "version")
    banner = texts(df, "banner")
    seen: dict[tuple[str, str, int], int] = defaultdict(int)
    hover: dict[tuple[str, str, int], str] = {}
    labels: dict[tuple[str, str, int], str] = {}
    for i, key in enumerate(zip(hosts, protos, port.tolist(), strict=True)):
        h, pr, p = str(key[0]), str(key[1]), int(key[2])
        seen[h, pr, p] += 1
        name = names[i]
        if name and name != "tcpwrapped":
            labels[h, pr, p] = name + ("?" if guessed[i] else "")
        hover[h, pr, p] = join_lines([
            f"<b>{esc(h)}:{p}/{esc(pr)}</b>",
            _service_line(name, product[i], version[i], guessed[i]),
            f"banner: {esc(banner[i])}" if banner[i] else "",
        ])
    rows, cut_hosts = _cut_hosts(seen)
    keep = set(rows)
    shown = {k: v for k, v in seen.items() if k[0] in keep}
    n_hosts = len(keep) + cut_hosts
    title = f"Open ports by host ({len(seen):,} open on {n_hosts:,} host" + (
        "s)" if n_hosts != 1 else ")")
    cut = []  # what is not drawn one by one: on a second, smaller line, clear of the toolbar
    if cut_hosts:
        cut.append(f"showing the {len(rows):,} hosts with most, {cut_hosts:,} left out")
    if len(shown) > MAX_POINTS:
        _binned(fig, shown, rows, n_scans)
        cut.append(f"{len(shown):,} ports counted in bins of {BIN:,}")
    else:
        _strip(fig, shown, rows, hover, labels, n_scans)
    if cut:
        title += f"<br><sup>{'; '.join(cut)}</sup>"
        fig.update_layout(margin={"t": 80})
    fig.update_layout(title_text=title, height=min(900, 220 + 34 * len(rows)))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=rows[::-1])
    return fig


def _strip(fig: go.Figure, seen: dict[tuple[str, str, int], int], rows: list[str],
           hover: dict[tuple[str, str, int], str], labels: dict[tuple[str, str, int], str],
           n_scans: int) -> None:
    keys = sorted(seen, key=lambda k: (host_key(k[0]), k[1], k[2]))
    per_row: dict[str, list[int]] = defaultdict(list)
    for h, _pr, p in keys:
        per_row[h].append(p)
    # Names beside the points only where they cannot run into each other. They alternate
    # above and below the row, so a name must clear the next name on its own side: two
    # points on, 0.4 of a decade (about 60 px of a 900 px chart, a 10-letter name).
    def crowded_row(ps: list[int]) -> bool:
        x = np.log10(np.maximum(sorted(ps), 1))
        return len(ps) > LABELS_MAX or (len(ps) > 2 and float(np.min(x[2:] - x[:-2])) < 0.4)

    crowded = {h for h, ps in per_row.items() if crowded_row(ps)}
    side = {k: ("top center" if i % 2 == 0 else "bottom center")
            for ps_keys in _by_row(keys).values() for i, k in enumerate(ps_keys)}
    for lo, hi, color in _RANGES:
        fig.add_vrect(x0=lo, x1=hi, fillcolor=color, line_width=0, layer="below")
    for proto in sorted({k[1] for k in keys}):
        mine = [k for k in keys if k[1] == proto]
        counts = [seen[k] for k in mine]
        extra = [f"<br>open in {seen[k]} of {n_scans} scans" if n_scans > 1 else "" for k in mine]
        fig.add_trace(go.Scatter(
            x=[max(k[2], 0.7) for k in mine], y=[k[0] for k in mine], name=proto,
            mode="markers+text", customdata=[hover[k] + e for k, e in zip(mine, extra,
                                                                             strict=True)],
            text=["" if k[0] in crowded else esc(labels.get(k, ""), 14) for k in mine],
            textposition=[side[k] for k in mine], textfont={"size": 10, "color": "#444"},
            cliponaxis=False,
            hovertemplate="%{customdata}<extra></extra>",
            marker={"size": 11, "symbol": "square" if proto == "tcp" else "diamond",
                    "color": counts if n_scans > 1 else STATE_COLORS["open"],
                    "colorscale": [[0, "#a1d99b"], [1, "#006d2c"]], "cmin": 1,
                    "cmax": max(1, n_scans), "showscale": n_scans > 1 and proto == "tcp",
                    "colorbar": {"title": {"text": "scans"}} if n_scans > 1 else None,
                    "line": {"width": 0.5, "color": "#1b5e20"}},
        ))
    fig.update_xaxes(type="log", range=[np.log10(0.7), np.log10(70000)], tickvals=_TICKS,
                     ticktext=[str(t) for t in _TICKS], tickangle=0,
                     title_text="port (log scale; shaded: well-known below 1024, "
                                "dynamic from 49152)")
    fig.update_layout(showlegend=len({k[1] for k in keys}) > 1)
    # Half a row more above and below: room for the names written above and below the rows.
    fig.update_yaxes(range=[-0.8, len(rows) - 0.2])


def _by_row(keys: list[tuple[str, str, int]]) -> dict[str, list[tuple[str, str, int]]]:
    """Keys per host, in port order (whatever the protocol)."""
    rows: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for k in sorted(keys, key=lambda k: (k[2], k[1])):
        rows[k[0]].append(k)
    return rows


def _binned(fig: go.Figure, seen: dict[tuple[str, str, int], int], rows: list[str],
            n_scans: int) -> None:
    row_index = {h: i for i, h in enumerate(rows)}
    z = np.zeros((len(rows), 65536 // BIN))
    for h, _pr, p in seen:
        z[row_index[h], min(p // BIN, z.shape[1] - 1)] += 1
    starts = np.arange(z.shape[1]) * BIN
    ranges = [f"{lo}–{lo + BIN - 1}" for lo in starts]
    fig.add_trace(go.Heatmap(
        z=np.where(z > 0, z, np.nan), x=starts + BIN / 2, y=rows, xgap=1, ygap=2,
        customdata=[ranges] * len(rows), colorscale="Greens",
        colorbar={"title": {"text": "open ports"}},
        hovertemplate="%{y}<br>ports %{customdata}: %{z:,} open<extra></extra>",
    ))
    fig.update_xaxes(title_text=f"port (bins of {BIN:,})", range=[0, 65536], tickformat="d",
                     tickvals=[0, 8192, 16384, 32768, 49152, 65535], tickangle=0)


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
            texttemplate="%{y:,}", textposition="outside", cliponaxis=False,
        ))
    fig.update_layout(barmode="group")
    fig.update_xaxes(type="category")
    _count_axis(fig, [int(v) for v in counts.to_numpy()])
    return fig


def _count_axis(fig: go.Figure, counts: list[int]) -> None:
    """A log axis from 1 when counts span orders of magnitude (26 open, 65,509 closed),
    ticked at powers of ten only (no minor-tick clutter), with room above the tallest bar
    for its label."""
    top = max(counts, default=1)
    if top / max(1, min((c for c in counts if c > 0), default=1)) < 50:
        fig.update_yaxes(title_text=fig.layout.yaxis.title.text.replace(" (log scale)", ""),
                         range=[0, top * 1.18], tickformat=",d",
                         **({"dtick": 1} if top < 10 else {}))  # no 0.5-port ticks
        return
    decades = [10**k for k in range(int(np.log10(top)) + 1)]
    fig.update_yaxes(type="log", range=[-0.05, np.log10(top) + 0.4], tickvals=decades,
                     ticktext=[f"{d:,}" for d in decades], minor={"showgrid": False})


def services(res: Any) -> go.Figure:
    """Open ports counted by service; hover lists products, versions and ports.

    Without service detection a port is named from the port table, as nmap does, and the
    bar says so: a "?" after the name, a lighter colour, and the count in the title.
    """
    df = _open_rows(frame(res, "ports"))
    fig = figure("Services on open ports", "open ports", "service")
    if df.empty:
        return note(fig, "no open ports")
    found, guess = service_names(df)
    names = [(n + "?" if g else n) if n else "unknown" for n, g in zip(found, guess,
                                                                           strict=True)]
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
            "named from the port number: a guess until service detection (-sV)"
            if name.endswith("?") else "",
            "products: " + esc(", ".join(sorted(what[name]))) if what[name] else "",
            f"ports: {shown}",
        ]))
    colors = ["#9ecae1" if n.endswith("?") else "#bbbbbb" if n == "unknown" else "#1f77b4"
              for n in order]
    fig.add_trace(go.Bar(
        x=[len(by[n]) for n in order], y=[esc(n) for n in order], orientation="h",
        text=hover, hovertemplate="%{text}<extra></extra>", marker_color=colors,
        texttemplate="%{x}", textposition="outside", cliponaxis=False,
    ))
    n_guessed = sum(guess)
    if n_guessed:
        fig.update_layout(title_text=f"Services on open ports<br><sup>{n_guessed:,} of "
                          f"{len(names):,} named from the port number (\"?\"): a guess until "
                          "service detection (-sV)</sup>")
    fig.update_xaxes(tickformat="d", rangemode="tozero")
    fig.update_layout(height=max(300, 90 + 28 * len(order)))
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
    present = [s for s in STATE_COLORS if s in set(state[have])]
    # Overlaid bars: the most common state first, open always last, so the few open
    # ports are drawn on top of the thousands of closed ones, never hidden under them.
    present.sort(key=lambda s: (s == "open", -int(np.sum(have & (state == s)))))
    for name in present:
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
    fig.update_xaxes(rangemode="tozero")
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
