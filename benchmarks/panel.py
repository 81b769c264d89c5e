"""The notebook panel's cost: a ScanPanel scan of all 65,535 lab ports against ``pn.scan``.

Paired runs in one process against a lab process, alternating which goes first; the
figure is the median of the per-pair ratios (issue 7: at most 1.15). The panel renders
everything it would in a notebook (progress, FigureWidget, table); with no frontend
attached its comm messages go nowhere, which is the kernel side's whole cost.

Also the kernel's responsiveness: while a panel scan runs, how long a trivial
``execute_request`` takes to answer in a real ipykernel (issue 7: at most 200 ms).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .harness import save
from .scenarios import lab_process


def _method() -> str:
    """SYN where privileged and this version has it, else connect (as issue 7 asks)."""
    import prtip_nb as pn
    from prtip_nb.config import is_privileged

    if not is_privileged():
        return "connect"
    try:
        pn.Scan("127.0.0.1", ports="1", method="syn")  # parses only: sends nothing
    except pn.PrtipError:
        return "connect"
    return "syn"


def panel_overhead(runs: int = 5) -> dict[str, Any]:
    """Each method this machine can run: SYN (privileged) and connect."""
    methods = dict.fromkeys([_method(), "connect"])
    summary = {m: _paired(m, runs) for m in methods}
    save("panel-overhead", {"summary": summary})
    return {"summary": summary}


def _paired(method: str, runs: int) -> dict[str, Any]:
    import prtip_nb as pn

    ratios, plain, panel, started = [], [], [], []
    with lab_process() as lab:
        truth = set(lab["tcp"])
        pn.scan("127.0.0.1", ports="-", method=method)  # warm-up
        pn.ScanPanel(targets="127.0.0.1", ports="-", method=method)  # import ipywidgets/plotly
        for i in range(runs):
            pair: dict[str, float] = {}
            for with_panel in ((False, True) if i % 2 == 0 else (True, False)):
                t0 = time.perf_counter()
                if with_panel:
                    p = pn.ScanPanel(targets="127.0.0.1", ports="-", method=method)
                    t_start = time.perf_counter()  # the widgets built: ~10 ms of ipywidgets
                    p.start()
                    res = p.wait()
                    assert p.state.status == "completed" and len(p.state.series.t) > 0
                else:
                    res = pn.scan("127.0.0.1", ports="-", method=method)
                pair["panel" if with_panel else "plain"] = time.perf_counter() - t0
                if with_panel:
                    pair["started"] = time.perf_counter() - t_start
                assert set(res.open_ports["port"].astype(int)) == truth
            plain.append(pair["plain"])
            panel.append(pair["panel"])
            started.append(pair["started"] / pair["plain"])
            ratios.append(pair["panel"] / pair["plain"])
    return {
        "method": method, "runs": runs, "median_ratio": statistics.median(ratios),
        "plain_median_s": statistics.median(plain), "panel_median_s": statistics.median(panel),
        "ratios": [round(r, 3) for r in ratios],
        # From Start to the end shown: the scan's slow-down alone, without building the
        # panel's widgets (done once in a notebook, before Start is pressed).
        "median_ratio_from_start": statistics.median(started),
    }


def kernel_latency(runs: int = 20) -> dict[str, Any]:
    """Round trips of a trivial cell while a 65,535-port panel scan runs in the kernel."""
    from jupyter_client.manager import start_new_kernel

    method = _method()
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        with lab_process():
            quiet = {"output_hook": lambda msg: None}
            kc.execute_interactive("import prtip_nb as pn", timeout=60, **quiet)
            setup = (f"p = pn.ScanPanel(targets='127.0.0.1', ports='-', method={method!r}, "
                     "rate=30000)\np.start()")
            kc.execute_interactive(setup, timeout=60, **quiet)
            lat = []
            for _ in range(runs):
                t0 = time.perf_counter()
                kc.execute_interactive("1 + 1", timeout=10, **quiet)
                lat.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.05)
            status = kc.execute_interactive("p.wait()", timeout=60, **quiet)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    summary = {"method": method, "runs": runs, "max_ms": max(lat),
               "median_ms": statistics.median(lat), "latencies_ms": lat,
               "final": status["content"]["status"]}
    save("kernel-latency", {"summary": summary})
    return {"summary": summary}


# -- the panel at scale (issue 20, "Live at scale") ----------------------------------------
# A /17 of the scale lab (benchmarks.scale: 198.18.0.0/15, 80 and 443 open everywhere,
# seeded hosts that drop everything) x the top 100 ports: 3.3M SYN probes, 65K open ports,
# past hold="auto"'s million (the in-memory result holds the open rows; -o has them all).
SCALE_PREFIX = "198.18.0.0/17"
SCALE_DROP = 32  # seeded dropping hosts: a quarter of scale-15's 128 for a quarter of it


def panel_scale(runs: int = 3) -> dict[str, Any]:
    """``pn.scan`` against a headless ``ScanPanel`` driving the same scan, each run in a
    fresh process (its peak RSS is its own; the panel's imports are done before its clock
    starts), alternating which goes first; the median of the per-pair time ratios."""
    import shutil
    import tempfile

    from prtip_nb.lab import RangeLab

    from .harness import timed
    from .scale import OPEN, SEED

    rows: dict[str, list[dict[str, Any]]] = {"plain": [], "panel": []}
    ratios = []
    work = Path(tempfile.mkdtemp(prefix="prtip-panel-scale-"))
    try:
        with RangeLab(SCALE_PREFIX, tcp=OPEN, drop_count=SCALE_DROP, seed=SEED) as lab:
            expected_open = lab.truth(OPEN).counts()["open"]
            for i in range(runs):
                pair: dict[str, dict[str, Any]] = {}
                for mode in (("plain", "panel") if i % 2 == 0 else ("panel", "plain")):
                    out = work / f"{mode}{i}"
                    text: list[str] = []
                    r = timed([sys.executable, "-m", "benchmarks.panel", mode, SCALE_PREFIX,
                               str(out)], mode, timeout=1800, capture=text)
                    row = json.loads(text[0].strip().splitlines()[-1])
                    row["peak_rss_mib"] = r.peak_rss_bytes / 2**20
                    row["exact_open"] = row["open"] == expected_open == row.get(
                        "panel_open_count", expected_open)
                    pair[mode] = row
                    rows[mode].append(row)
                    shutil.rmtree(out, ignore_errors=True)
                    print(f"  {mode:5s} {row['scan_s']:6.2f} s  {row['peak_rss_mib']:6.1f} MiB  "
                          f"open {row['open']:,}  ticks max {row['tick_max_s']:.3f} s"
                          + (f"  redraws {row['redraws']}  queue max {row['queue_max']}"
                             if mode == "panel" else ""), flush=True)
                ratios.append(pair["panel"]["scan_s"] / pair["plain"]["scan_s"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(mode: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in rows[mode])

    summary = {
        "prefix": SCALE_PREFIX, "probes": (1 << 15) * 100, "runs": runs,
        "median_ratio": statistics.median(ratios), "ratios": [round(r, 3) for r in ratios],
        "plain_median_s": med("plain", "scan_s"), "panel_median_s": med("panel", "scan_s"),
        "plain_peak_rss_mib": med("plain", "peak_rss_mib"),
        "panel_peak_rss_mib": med("panel", "peak_rss_mib"),
        "plain_tick_max_s": max(r["tick_max_s"] for r in rows["plain"]),
        "panel_tick_max_s": max(r["tick_max_s"] for r in rows["panel"]),
        "panel_redraws": med("panel", "redraws"), "panel_queue_max": max(
            r["queue_max"] for r in rows["panel"]),
        "panel_dropped": max(r["dropped"] for r in rows["panel"]),
        "panel_render_s": med("panel", "render_s"),
        "exact": all(r["exact_open"] for m in rows for r in rows[m]),
    }
    save("panel-scale", {"scenario": "panel-scale", "summary": summary, "runs": rows})
    return {"summary": summary}


def _one(mode: str, prefix: str, out: str) -> dict[str, Any]:
    """One scan of ``prefix`` x the top 100 ports, plain or through a ScanPanel (the child
    process of ``panel_scale``)."""
    import gc
    import threading

    import prtip_nb as pn

    from .scale import N_PORTS, _ticks

    opts: dict[str, Any] = dict(method="syn", timing=4, top_ports=N_PORTS, resolve="never",
                                output=out)
    extra: dict[str, Any] = {}
    gc_s, gc_t = [0.0], [0.0]

    def gc_clock(phase: str, info: dict[str, int]) -> None:  # time in the cyclic GC
        if phase == "start":
            gc_t[0] = time.perf_counter()
        else:
            gc_s[0] += time.perf_counter() - gc_t[0]

    # WARM-UP, both modes: the scan's own lazy imports (numpy, pyarrow, pandas: a second or
    # two on a loaded machine) and its first sockets, outside the clock; the panel's
    # ScanPanel() imports them too, so a cold plain scan would be timed with them.
    pn.scan(prefix.split("/")[0], **{**opts, "output": None})
    if mode == "imports":  # diagnosis: the panel's imports and widgets, then a plain scan
        assert pn.ScanPanel(targets=prefix, **opts).chart is not None
    gc.callbacks.append(gc_clock)
    if mode in ("plain", "imports"):
        t0 = time.perf_counter()
        res = pn.scan(prefix, **opts)
        scan_s = time.perf_counter() - t0
    else:
        panel = pn.ScanPanel(targets=prefix, **opts)
        assert panel.chart is not None  # plotly imported and the chart built: not timed
        renders: list[frozenset[str]] = []
        busy = [0.0]
        render = panel._render

        def timed_render(state: Any, changed: frozenset[str]) -> None:
            t = time.perf_counter()
            render(state, changed)
            busy[0] += time.perf_counter() - t
            renders.append(changed)

        panel.state.unobserve(render)
        panel.state.observe(timed_render)
        queue_max, stop = [0], threading.Event()

        def watch() -> None:  # every subscription queue of the scan's bus, 20 times a second
            while not stop.wait(0.05):
                scan = panel.scan
                if scan is not None:
                    subs = list(scan.bus._subs)
                    queue_max[0] = max([queue_max[0], *(len(s.queue) for s in subs)])

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        panel.start()
        res = panel.wait()
        scan_s = time.perf_counter() - t0
        stop.set()
        watcher.join()
        assert panel.state.status == "completed", panel.state.status
        sub = panel.state._sub
        extra = {"redraws": sum("series" in c for c in renders), "renders": len(renders),
                 "render_s": busy[0], "queue_max": queue_max[0],
                 "dropped": sub.dropped if sub is not None else 0,
                 "panel_table_rows": len(panel.state.open_ports),
                 "panel_open_count": panel.state.open_count,
                 "series_points": len(panel.state.series.t)}
        panel.close()
    live = _ticks(Path(out) / f"scan_id={res.scan_id}")
    return {"scan_s": scan_s, "gc_s": gc_s[0], "gc_collections": [
        g["collections"] for g in gc.get_stats()], "open": int(res.tables["ports"].num_rows),
            "tick_max_s": live["tick_max_s"], "tick_median_s": live["tick_median_s"],
            "ticks_late": live["ticks_late_over_0_5s"], **extra}


if __name__ == "__main__":
    print(json.dumps(_one(*sys.argv[1:4])), flush=True)
