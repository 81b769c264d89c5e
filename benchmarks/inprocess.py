"""In-process scenarios: the cost of events and telemetry, as paired runs in one process.

Each pair runs the same scan with and without the feature, alternating which goes first,
against a lab process; the figure is the median of the per-pair ratios.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from .harness import save
from .scenarios import lab_process


def _paired(runs: int, method: str, make: Any) -> dict[str, Any]:
    import prtip_nb as pn

    ratios, base_times, feature_times = [], [], []
    with lab_process():
        pn.scan("127.0.0.1", ports="-", method=method)  # warm-up
        for i in range(runs):
            pair = {}
            for feature in ((False, True) if i % 2 == 0 else (True, False)):
                kwargs, hook = make(feature)
                s = pn.Scan("127.0.0.1", ports="-", method=method, **kwargs)
                hook(s)
                t0 = time.perf_counter()
                s.start().wait()
                pair[feature] = time.perf_counter() - t0
            base_times.append(pair[False])
            feature_times.append(pair[True])
            ratios.append(pair[True] / pair[False])
    return {
        "method": method,
        "runs": runs,
        "median_ratio": statistics.median(ratios),
        "overhead_percent": (statistics.median(ratios) - 1) * 100,
        "base_median_s": statistics.median(base_times),
        "feature_median_s": statistics.median(feature_times),
        "ratios": ratios,
    }


def _method() -> str:
    from prtip_nb.config import is_privileged

    try:
        import prtip_nb.net.syn  # noqa: F401

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
    """Telemetry every 250 ms vs every 60 s (effectively off) on the same scan (≤ 1%)."""

    def make(feature: bool) -> tuple[dict[str, Any], Any]:
        return {"telemetry_interval": 0.25 if feature else 60.0}, lambda s: None

    summary = _paired(runs, _method(), make)
    save("poller-overhead", {"summary": summary})
    return {"summary": summary}
