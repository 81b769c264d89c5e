"""The notebook panel's cost: a ScanPanel scan of all 65,535 lab ports against ``pn.scan``.

Paired runs in one process against a lab process, alternating which goes first; the
figure is the median of the per-pair ratios (issue 7: at most 1.15). The panel renders
everything it would in a notebook (progress, FigureWidget, table); with no frontend
attached its comm messages go nowhere, which is the kernel side's whole cost.

Also the kernel's responsiveness: while a panel scan runs, how long a trivial
``execute_request`` takes to answer in a real ipykernel (issue 7: at most 200 ms).
"""

from __future__ import annotations

import statistics
import time
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

    ratios, plain, panel = [], [], []
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
                    p.start()
                    res = p.wait()
                    assert p.state.status == "completed" and len(p.state.series.t) > 0
                else:
                    res = pn.scan("127.0.0.1", ports="-", method=method)
                pair["panel" if with_panel else "plain"] = time.perf_counter() - t0
                assert set(res.open_ports["port"].astype(int)) == truth
            plain.append(pair["plain"])
            panel.append(pair["panel"])
            ratios.append(pair["panel"] / pair["plain"])
    return {
        "method": method, "runs": runs, "median_ratio": statistics.median(ratios),
        "plain_median_s": statistics.median(plain), "panel_median_s": statistics.median(panel),
        "ratios": [round(r, 3) for r in ratios],
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
