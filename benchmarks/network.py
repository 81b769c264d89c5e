"""Scanning networks, not loopback (issue 13): prtip_nb against nmap on a RangeLab.

A responder namespace behind one veth link answers for a whole prefix of 198.18.0.0/15
(``prtip_nb.lab.RangeLab``): ports 80 and 443 open on every host, every other port resets.
Each row of the issue's table runs both tools alternately in the same run, whole process,
with ``-Pn -n`` (the port scan alone), and checks every (host, port) they call open
against the lab's truth. Each tool also prints its own scan time (prtip-nb's "Done: ... in
X s", nmap's "scanned in X seconds"): their ratio leaves out interpreter start-up.

- ``net-table``: a /24 x the top 100 ports at -T3, -T4, -T5 and ``--rate 100000`` (against
  nmap -T4); one host's 65,535 ports at -T4; a connect scan of the /24 at -T4.
- ``net-bottleneck``: the same /24 x 200 ports behind a link that carries 20,000 probes/s:
  the adaptive rate (-T4, no --rate) against ``--rate 100000`` and nmap -T5, for recall,
  time and the rate the scan settled at (from telemetry, in-process).
- ``net-4096``: 4,096 hosts x the top 100 ports (409,600 probes) at the default timing.
- ``net-fixed``: the fixed costs apart: one port of one host (SYN and connect) against
  nmap, whole process; and for prtip-nb the interpreter alone and its imports alone, so
  start-up, the scan's machinery (sockets, capture ring, threads, result, report, exit)
  and the per-probe cost can be told apart from the table's rows.
"""

from __future__ import annotations

import re
import statistics
import time
from typing import Any

from .harness import as_dict, nmap_path, save, timed

OPEN = (80, 443)
_REPORT = re.compile(r"^(?:Nmap s|S)can report for (\S+)", re.M)
_PORT = re.compile(r"^(\d+)/tcp\s+open\b")
_OURS_S = re.compile(r"^Done: .* in ([0-9.]+) s\.", re.M)
_NMAP_S = re.compile(r"scanned in ([0-9.]+) seconds")


def open_pairs(text: str) -> set[tuple[str, int]]:
    """(host, port) of every open TCP port in nmap's or prtip-nb's normal output."""
    out: set[tuple[str, int]] = set()
    host = ""
    for line in text.splitlines():
        m = _REPORT.match(line)
        if m:
            host = m[1]
            continue
        p = _PORT.match(line)
        if p and host:
            out.add((host, int(p[1])))
    return out


def _truth(lab: Any, hosts: list[str], ports: tuple[int, ...]) -> set[tuple[str, int]]:
    t = lab.truth(ports)
    return {(h, p) for h in hosts for p in OPEN if p in ports and not t.is_dropped(h)}


def measured_run(cmd: list[str], tool: str, truth: set[tuple[str, int]], label: str,
                 timeout: float = 900) -> tuple[float, float, int, bool]:
    """One whole-process run of ``tool``: (wall s, its own scan time s, peak RSS bytes,
    whether the open ports it printed are exactly ``truth``), printed as it goes."""
    out: list[str] = []
    r = timed(cmd, tool, timeout=timeout, capture=out)
    found = open_pairs(out[0])
    m = (_OURS_S if tool == "prtip_nb" else _NMAP_S).search(out[0])
    scan = float(m[1]) if m else float("nan")
    print(f"  {label:14s} {tool:9s} {r.wall_s:7.3f} s (scan {scan:.3f} s) "
          f"{r.peak_rss_bytes / 2**20:6.1f} MiB  open {len(found)}/{len(truth)}", flush=True)
    return r.wall_s, scan, r.peak_rss_bytes, found == truth


def _row(name: str, ours: list[str], theirs: list[str], truth: set[tuple[str, int]],
         runs: int) -> dict[str, Any]:
    """Both commands ``runs`` times, alternately, after one warm-up each."""
    walls: dict[str, list[float]] = {"prtip_nb": [], "nmap": []}
    own: dict[str, list[float]] = {"prtip_nb": [], "nmap": []}
    rss: dict[str, list[int]] = {"prtip_nb": [], "nmap": []}
    exact = {"prtip_nb": True, "nmap": True}
    timed(ours, "prtip_nb", timeout=900)
    timed(theirs, "nmap", timeout=900)
    for _ in range(runs):
        for cmd, tool in ((ours, "prtip_nb"), (theirs, "nmap")):
            wall, scan, peak, ok = measured_run(cmd, tool, truth, name, timeout=900)
            exact[tool] &= ok
            walls[tool].append(wall)
            own[tool].append(scan)
            rss[tool].append(peak)
    med = {k: statistics.median(v) for k, v in walls.items()}
    med_own = {k: statistics.median(v) for k, v in own.items()}
    return {
        "prtip_nb_median_s": med["prtip_nb"], "nmap_median_s": med["nmap"],
        "ratio": med["prtip_nb"] / med["nmap"],
        "prtip_nb_scan_s": med_own["prtip_nb"], "nmap_scan_s": med_own["nmap"],
        "scan_ratio": med_own["prtip_nb"] / med_own["nmap"],
        "prtip_nb_peak_rss_mib": max(rss["prtip_nb"]) / 2**20,
        "nmap_peak_rss_mib": max(rss["nmap"]) / 2**20,
        "exact": exact["prtip_nb"], "nmap_exact": exact["nmap"],
    }


def net_table(runs: int = 3) -> dict[str, Any]:
    from prtip_nb.lab import RangeLab

    nmap = nmap_path()
    prefix = "198.18.0.0/24"
    base = ["prtip-nb", "scan", "-Pn", "-n", "--no-progress", "--open"]
    nbase = [nmap, "-Pn", "-n", "--open"]
    top = ["--top-ports", "100"]
    rows = {
        "syn-T3": ([*base, "-sS", *top, "-T3", prefix], [*nbase, "-sS", *top, "-T3", prefix]),
        "syn-T4": ([*base, "-sS", *top, "-T4", prefix], [*nbase, "-sS", *top, "-T4", prefix]),
        "syn-T5": ([*base, "-sS", *top, "-T5", prefix], [*nbase, "-sS", *top, "-T5", prefix]),
        "syn-rate100k": ([*base, "-sS", *top, "--rate", "100000", prefix],
                         [*nbase, "-sS", *top, "-T4", prefix]),
        "syn-p-": ([*base, "-sS", "-p-", "-T4", "198.18.0.7"],
                   [*nbase, "-sS", "-p-", "-T4", "198.18.0.7"]),
        "connect-T4": ([*base, "-sT", *top, "-T4", prefix], [*nbase, "-sT", *top, "-T4", prefix]),
    }
    summary: dict[str, Any] = {"runs": runs}
    with RangeLab(prefix, tcp=OPEN) as lab:
        hosts = [lab.host(i) for i in range(256)]
        for name, (ours, theirs) in rows.items():
            scope = ["198.18.0.7"] if name == "syn-p-" else hosts
            ports = tuple(range(1, 65536)) if name == "syn-p-" else OPEN
            summary[name] = _row(name, ours, theirs, _truth(lab, scope, ports), runs)
    summary["exact"] = all(v["exact"] for k, v in summary.items() if isinstance(v, dict))
    _print_table(summary)
    print(f"  saved {save('net-table', {'scenario': 'net-table', 'summary': summary})}")
    return {"summary": summary}


def _print_table(summary: dict[str, Any]) -> None:
    print(f"  {'row':14s} {'prtip-nb':>9s} {'nmap':>7s} {'ratio':>6s} | scan only: "
          f"{'ours':>7s} {'nmap':>7s} {'ratio':>6s} exact")
    for k, v in summary.items():
        if isinstance(v, dict) and "ratio" in v:
            print(f"  {k:14s} {v['prtip_nb_median_s']:8.3f}s {v['nmap_median_s']:6.3f}s "
                  f"{v['ratio']:6.2f} |            {v['prtip_nb_scan_s']:6.3f}s "
                  f"{v['nmap_scan_s']:6.3f}s {v['scan_ratio']:6.2f} {v['exact']}")


def net_bottleneck(runs: int = 3) -> dict[str, Any]:
    """A link that carries 20,000 probes/s: what the adaptive rate settles at."""
    import prtip_nb as pn
    from prtip_nb.lab import RangeLab

    nmap = nmap_path()
    prefix, ports = "198.18.0.0/24", "1-200"
    capacity = 20_000.0
    summary: dict[str, Any] = {"runs": runs, "capacity_pps": capacity}
    with RangeLab(prefix, tcp=OPEN, bottleneck_pps=capacity, shaper="police") as lab:
        truth = _truth(lab, [lab.host(i) for i in range(256)], tuple(range(1, 201)))
        base = ["prtip-nb", "scan", "-Pn", "-n", "--no-progress", "--open", "-sS", "-p", ports]
        nbase = [nmap, "-Pn", "-n", "--open", "-sS", "-p", ports]
        summary["adaptive-T4"] = _row("adaptive-T4", [*base, "-T4", prefix],
                                      [*nbase, "-T5", prefix], truth, runs)
        summary["rate100k"] = _row("rate100k", [*base, "--rate", "100000", prefix],
                                   [*nbase, "-T5", prefix], truth, runs)
        # In-process, for the rate in force over time (telemetry) and the recall.
        settled, recall = [], []
        for _ in range(runs):
            t0 = time.monotonic()
            res = pn.scan(prefix, ports, method="syn", timing=4, telemetry_interval=0.05)
            took = time.monotonic() - t0
            tel = res.telemetry
            late = tel[tel["t"] >= tel["t"].max() / 2]["rate_pps"].dropna()
            settled.append(float(late.median()) if len(late) else float("nan"))
            op = res.ports[res.ports["state"] == "open"]
            got = {(h, int(p)) for h, p in zip(op["host"], op["port"], strict=True)} & truth
            recall.append(len(got) / len(truth))
            print(f"  in-process adaptive: {took:.2f} s, settled {settled[-1]:,.0f}/s "
                  f"({settled[-1] / capacity:.0%} of the link), recall {recall[-1]:.4%}",
                  flush=True)
        summary["settled_pps_median"] = statistics.median(settled)
        summary["settled_fraction"] = statistics.median(settled) / capacity
        summary["recall_min"] = min(recall)
        summary["link"] = lab.link_stats()
    summary["exact"] = summary["adaptive-T4"]["exact"] and summary["recall_min"] >= 0.999
    print(f"  saved {save('net-bottleneck', {'scenario': 'net-bottleneck', 'summary': summary})}")
    return {"summary": summary}


def net_4096(runs: int = 1) -> dict[str, Any]:
    """4,096 hosts x the top 100 ports at the default timing (409,600 probes)."""
    from prtip_nb.lab import RangeLab

    nmap = nmap_path()
    prefix = "198.18.0.0/20"
    summary: dict[str, Any] = {"runs": runs}
    with RangeLab(prefix, tcp=OPEN) as lab:
        truth = _truth(lab, [lab.host(i) for i in range(4096)], OPEN)
        ours = ["prtip-nb", "scan", "-Pn", "-n", "--no-progress", "--open", "-sS",
                "--top-ports", "100", prefix]
        theirs = [nmap, "-Pn", "-n", "--open", "-sS", "--top-ports", "100", prefix]
        summary["default-T3"] = _row("default-T3", ours, theirs, truth, runs)
    summary["exact"] = summary["default-T3"]["exact"]
    summary["pps"] = 409_600 / summary["default-T3"]["prtip_nb_scan_s"]
    print(f"  saved {save('net-4096', {'scenario': 'net-4096', 'summary': summary})}")
    return {"summary": summary}


#: What prtip-nb imports for a SYN scan from the command line (cli, engine, SYN engine,
#: results, pyarrow.compute): the start-up a scan pays before its first probe.
#: Left by os._exit, as prtip-nb is: the interpreter's teardown is no part of either.
_IMPORTS = ("import os, prtip_nb.cli, prtip_nb.engine.scan, prtip_nb.engine.syn, "
            "prtip_nb.engine.sink, prtip_nb.results.builder, pyarrow.compute; os._exit(0)")


def net_fixed(runs: int = 5) -> dict[str, Any]:
    """Fixed costs: one port of one host, whole process, against nmap; prtip-nb's
    interpreter and imports alone. The table's rows minus these are the per-probe cost."""
    import sys

    from prtip_nb.lab import RangeLab

    from .harness import env_for_scan

    nmap = nmap_path()
    host = "198.18.0.7"
    base = ["prtip-nb", "scan", "-Pn", "-n", "--no-progress", "--open", "-p", "80"]
    nbase = [nmap, "-Pn", "-n", "--open", "-p", "80"]
    summary: dict[str, Any] = {"runs": runs}
    env_for_scan()  # bytecode compiled, as installed
    alone: dict[str, list[float]] = {"interpreter": [], "imports": []}
    for _ in range(runs + 1):
        for name, code in (("interpreter", "import os; os._exit(0)"), ("imports", _IMPORTS)):
            alone[name].append(timed([sys.executable, "-c", code], name).wall_s)
    for name, walls in alone.items():
        summary[f"{name}_s"] = statistics.median(walls[1:])
    with RangeLab("198.18.0.0/24", tcp=OPEN) as lab:
        truth = _truth(lab, [host], (80,))
        summary["syn-1port"] = _row("syn-1port", [*base, "-sS", "-T4", host],
                                    [*nbase, "-sS", "-T4", host], truth, runs)
        summary["connect-1port"] = _row("connect-1port", [*base, "-sT", "-T4", host],
                                        [*nbase, "-sT", "-T4", host], truth, runs)
    syn = summary["syn-1port"]
    summary["imports_only_s"] = summary["imports_s"] - summary["interpreter_s"]
    summary["machinery_s"] = syn["prtip_nb_median_s"] - summary["imports_s"]
    summary["exact"] = syn["exact"] and summary["connect-1port"]["exact"]
    print(f"  prtip-nb fixed cost {syn['prtip_nb_median_s']:.3f} s (nmap's whole run "
          f"{syn['nmap_median_s']:.3f} s) = interpreter {summary['interpreter_s']:.3f} + "
          f"imports {summary['imports_only_s']:.3f} + scan machinery "
          f"{summary['machinery_s']:.3f} s", flush=True)
    print(f"  saved {save('net-fixed', {'scenario': 'net-fixed', 'summary': summary})}")
    return {"summary": summary}


__all__ = ["as_dict", "measured_run", "net_4096", "net_bottleneck", "net_fixed", "net_table",
           "open_pairs"]
