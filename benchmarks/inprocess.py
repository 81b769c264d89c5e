"""In-process scenarios: the cost of events and telemetry, as paired runs in one process.

Each pair runs the same scan with and without the feature, alternating which goes first,
against a lab process; the figure is the median of the per-pair ratios.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

from .harness import save
from .scenarios import lab_process


def _cpu() -> float:
    """CPU seconds this process has used so far, all threads (user + system), to the
    nanosecond (CLOCK_PROCESS_CPUTIME_ID; os.times() counts 10 ms ticks, ~2% of a scan)."""
    return time.process_time()


def _paired(runs: int, method: str, make: Any, rate: float | None = None) -> dict[str, Any]:
    import prtip_nb as pn

    ratios, base_times, feature_times = [], [], []
    cpu_ratios, base_cpu, feature_cpu = [], [], []
    with lab_process():
        pn.scan("127.0.0.1", ports="-", method=method)  # warm-up
        for i in range(runs):
            pair, cpu = {}, {}
            for feature in ((False, True) if i % 2 == 0 else (True, False)):
                kwargs, hook = make(feature)
                s = pn.Scan("127.0.0.1", ports="-", method=method, rate=rate, **kwargs)
                hook(s)
                gc.collect()
                c0, t0 = _cpu(), time.perf_counter()
                s.start().wait()
                pair[feature] = time.perf_counter() - t0
                cpu[feature] = _cpu() - c0
            base_times.append(pair[False])
            feature_times.append(pair[True])
            ratios.append(pair[True] / pair[False])
            base_cpu.append(cpu[False])
            feature_cpu.append(cpu[True])
            cpu_ratios.append(cpu[True] / cpu[False])
    return {
        "method": method,
        "runs": runs,
        "median_ratio": statistics.median(ratios),
        "overhead_percent": (statistics.median(ratios) - 1) * 100,
        "base_median_s": statistics.median(base_times),
        "feature_median_s": statistics.median(feature_times),
        "ratios": ratios,
        # CPU time of the whole process: what the feature costs in work, without the
        # scheduling and reply-timing noise of wall time on a shared 2-core machine.
        "cpu_median_ratio": statistics.median(cpu_ratios),
        "cpu_overhead_percent": (statistics.median(cpu_ratios) - 1) * 100,
        "base_cpu_median_s": statistics.median(base_cpu),
        "feature_cpu_median_s": statistics.median(feature_cpu),
        "cpu_ratios": cpu_ratios,
    }


def _method() -> str:
    from prtip_nb.config import is_privileged

    try:
        import prtip_nb.engine.syn  # noqa: F401

        return "syn" if is_privileged() else "connect"
    except ImportError:
        return "connect"


def event_overhead(runs: int = 5) -> dict[str, Any]:
    """65,535-port scan with a callback subscribed to every event type vs none (≤ 2%)."""
    seen = [0]

    def make(feature: bool) -> tuple[dict[str, Any], Any]:
        def hook(s: Any) -> None:
            if feature:
                s.subscribe(lambda ev: seen.__setitem__(0, seen[0] + 1))
                s.events()  # and an iterator nobody reads: its queue must not grow unbounded
        return {}, hook

    summary = _paired(runs, _method(), make)
    summary["events_delivered"] = seen[0]
    save("event-overhead", {"summary": summary})
    return {"summary": summary}


def poller_overhead(runs: int = 5) -> dict[str, Any]:
    """Telemetry every 250 ms vs every 60 s (effectively off) on the same scan (<= 1%).

    Why not just wall time of 5 pairs: a full SYN scan of the lab lasts ~0.5 s, so the
    poller takes two samples in it, a few hundred microseconds in all, while the wall time
    of two identical scans differs by 5-30% here (thread scheduling on 2 shared cores,
    the RTT-estimated quiet period). Five wall-time pairs measure that noise, not the
    poller. So this scenario:
    - runs a rate-limited scan (50,000 pps: ~1.4 s, ~6 samples), in at least 15 pairs;
    - compares the process's CPU time (all threads), the work the poller adds, as the
      headline ``overhead_percent`` (wall-time ratios are kept beside it);
    - times ``Poller.sample`` itself (with the scan's own Progress tick and live-flush
      check) and gives the bound it implies, ``bound_percent`` = sample cost / interval /
      the scan's CPU cores: the overhead at 4 samples a second whatever the noise.
    """

    def make(feature: bool) -> tuple[dict[str, Any], Any]:
        return {"telemetry_interval": 0.25 if feature else 60.0}, lambda s: None

    method = _method()
    summary = _paired(max(runs, 15), method, make, rate=50_000.0)
    summary["wall_overhead_percent"] = summary["overhead_percent"]
    summary["overhead_percent"] = summary["cpu_overhead_percent"]
    sample_s = _sample_cost(method)
    cores = summary["base_cpu_median_s"] / summary["base_median_s"]
    summary["sample_us"] = sample_s * 1e6
    summary["bound_percent"] = sample_s / 0.25 / max(cores, 1e-9) * 100
    save("poller-overhead", {"summary": summary})
    return {"summary": summary}


def _sample_cost(method: str, n: int = 2000) -> float:
    """Seconds per ``Poller.sample()``, as a scan's poller runs it (telemetry row, RSS and
    CPU reads, the Progress event, the sink's age check)."""
    import prtip_nb as pn
    from prtip_nb.engine.telemetry import Poller

    with lab_process():
        s = pn.Scan("127.0.0.1", ports="1-100", method=method)
        s.start().wait()
    assert s._builder is not None
    poller = Poller(s.counters, s._builder, 0.0, 0.25, on_sample=s._tick)
    t0 = time.perf_counter()
    for _ in range(n):
        poller.sample()
    return (time.perf_counter() - t0) / n
