"""Plotly figures of a ``profile.run`` table: memory scaling, run time, syscall mix, ratios."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def report(df: pd.DataFrame) -> dict[str, Any]:
    """{"memory", "runtime", "syscalls", "ratio"} -> plotly Figure (plotly is imported here)."""
    import plotly.express as px
    import plotly.graph_objects as go

    data = df.astype({"peak_rss_bytes": "float64", "wall_s": "float64"}).copy()
    data["peak_rss_mib"] = data["peak_rss_bytes"] / 2**20
    figs: dict[str, Any] = {}
    scaling = data[data["scenario"].str.startswith("syn-")]
    figs["memory"] = px.line(
        scaling.sort_values("ports"), x="ports", y="peak_rss_mib", color="tool", markers=True,
        log_x=True, title="Peak memory against ports scanned",
        labels={"ports": "ports scanned", "peak_rss_mib": "peak RSS (MiB)"},
    )
    figs["runtime"] = px.bar(
        data, x="scenario", y="wall_s", color="tool", barmode="group",
        title="Wall time per scenario", labels={"wall_s": "wall time (s)"},
    )
    if "syscalls" in data.columns:
        shares = ["futex_share", "brk_share", "mmap_share", "network_share"]
        mix = data.melt(id_vars=["scenario", "tool"], value_vars=shares, var_name="group",
                        value_name="share")
        mix["group"] = mix["group"].str.replace("_share", "")
        mix["who"] = mix["scenario"] + " · " + mix["tool"]
        figs["syscalls"] = px.bar(
            mix, x="who", y="share", color="group", title="System-call mix (strace -c)",
            labels={"who": "scenario · tool", "share": "share of all calls"},
        )
    if {"prtip_nb", "nmap"} <= set(data["tool"]):
        wide = data.pivot(index="scenario", columns="tool", values="wall_s")
        ratio = (wide["prtip_nb"] / wide["nmap"]).dropna()
        figs["ratio"] = go.Figure(
            go.Bar(x=list(ratio.index), y=list(ratio.values)),
            layout={"title": "prtip_nb wall time ÷ nmap's (below 1 is faster)",
                    "yaxis_title": "ratio", "xaxis_title": "scenario"},
        )
    return figs
