"""The paths of a traceroute as a graph: the scanner on the left, one column per TTL.

Each hop address is one node in its TTL's column, however many hosts' paths cross it; a
silent hop (no answer at that TTL) is a grey "?" node, shared by the paths that have the
same answered hop before it. Edges join consecutive hops of each path; a wider edge
carries more paths. The traced hosts end their paths, drawn as squares. Hover: address,
name, RTT and how many traced hosts go through the node.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import plotly.graph_objects as go

from prtip_nb.viz._frames import esc, figure, frame, host_key, join_lines, note, numbers, texts

__all__ = ["topology"]

MAX_HOSTS = 200  # paths drawn; beyond, the first by address (the title says so)


def _paths(df: Any) -> dict[str, list[tuple[int, str | None, float | None, str | None]]]:
    """host -> [(ttl, address or None, rtt_ms, name)] from TTL 1 to the host, gaps filled."""
    hosts, ttls = texts(df, "host"), numbers(df, "ttl")
    addrs, names, rtts = texts(df, "address"), texts(df, "hostname"), numbers(df, "rtt_ms")
    hops: dict[str, dict[int, tuple[str | None, float | None, str | None]]] = defaultdict(dict)
    for h, t, a, n, r in zip(hosts, ttls, addrs, names, rtts, strict=True):
        if h is None or t != t:
            continue
        hops[h][int(t)] = (a, None if r != r else float(r), n)
    out = {}
    for h, by_ttl in hops.items():
        last = max(by_ttl)
        out[h] = [(t, *by_ttl.get(t, (None, None, None))) for t in range(1, last + 1)]
    return out


def topology(res: Any) -> go.Figure:
    """The traceroute paths of ``res`` (a ScanResult or its ``trace`` DataFrame) as a graph."""
    df = frame(res, "trace")
    fig = figure("Network paths (traceroute)", "hops (TTL)", "", height=420)
    paths = _paths(df)
    if not paths:
        return note(fig, "No traceroute in this result: scan with traceroute=True "
                         "(--traceroute)")
    hosts = sorted(paths, key=host_key)
    cut = max(0, len(hosts) - MAX_HOSTS)
    hosts = hosts[:MAX_HOSTS]
    # Nodes: ("scanner",), (ttl, address) or ("?", ttl, previous node) for a silent hop.
    through: dict[Any, set[str]] = defaultdict(set)
    info: dict[Any, dict[str, Any]] = {}
    edges: dict[tuple[Any, Any], int] = defaultdict(int)
    scanner: Any = ("scanner",)
    info[scanner] = {"ttl": 0, "label": "scanner", "hover": "this scanner", "kind": "scanner"}
    for h in hosts:
        prev = scanner
        for ttl, addr, rtt, name in paths[h]:
            node: Any = (ttl, addr) if addr else ("?", ttl, prev)
            through[node].add(h)
            if node not in info:
                kind = "host" if addr == h else ("silent" if addr is None else "router")
                label = "?" if addr is None else (name or addr)
                hover = join_lines([
                    f"<b>{esc(addr)}</b>" if addr else "<b>no answer</b> at this TTL",
                    f"name: {esc(name)}" if name else None,
                    f"RTT: {rtt:.2f} ms" if rtt is not None else None,
                ])
                info[node] = {"ttl": ttl, "label": label, "hover": hover, "kind": kind}
            edges[(prev, node)] += 1
            prev = node
    # Layout: nodes of a column spread evenly, in the order paths reach them.
    columns: dict[int, list[Any]] = defaultdict(list)
    for node, meta in info.items():
        columns[meta["ttl"]].append(node)
    pos: dict[Any, tuple[float, float]] = {}
    for ttl, nodes in columns.items():
        nodes.sort(key=lambda n: min((hosts.index(h) for h in through[n]), default=0))
        for i, node in enumerate(nodes):
            pos[node] = (float(ttl), (len(nodes) - 1) / 2 - i)
    for (a, b), count in edges.items():
        (x0, y0), (x1, y1) = pos[a], pos[b]
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="skip",
                                 line={"width": 1 + min(6, count), "color": "#9aa8b8"},
                                 showlegend=False))
    styles = {"scanner": ("#1f77b4", "diamond", "scanner"), "router": ("#2ca02c", "circle",
              "router"), "silent": ("#bbbbbb", "circle-open", "silent hop"),
              "host": ("#d62728", "square", "traced host")}
    for kind, (color, symbol, legend) in styles.items():
        drawn = [n for n, m in info.items() if m["kind"] == kind]
        if not drawn:
            continue
        hovers = [info[n]["hover"] + (f"<br>paths through it: {len(through[n])}"
                                     if kind != "scanner" else "") for n in drawn]
        fig.add_trace(go.Scatter(
            x=[pos[n][0] for n in drawn], y=[pos[n][1] for n in drawn], mode="markers+text",
            marker={"size": 14, "color": color, "symbol": symbol,
                    "line": {"width": 1, "color": color}},
            text=[esc(info[n]["label"], 40) for n in drawn], textposition="top center",
            hovertext=hovers, hoverinfo="text", name=legend))
    fig.update_yaxes(visible=False)
    fig.update_xaxes(dtick=1)
    if cut:
        fig.update_layout(title={"text": f"Network paths (traceroute): {MAX_HOSTS} of "
                                          f"{MAX_HOSTS + cut} hosts"})
    return fig
