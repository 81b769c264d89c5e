"""Benchmark scenarios. Each takes ``runs`` and returns {"runs": [...], "summary": {...}}.

Add a scenario by writing a function and listing it in ``SCENARIOS``.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .harness import Run, as_dict, save, summarise, timed

LAB_PORTS = 50


@contextmanager
def lab_process(tcp: int = LAB_PORTS, host: str = "127.0.0.1") -> Iterator[dict[str, list[int]]]:
    """The lab in its own process, so the scanner's peak RSS is the scanner's alone."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "prtip_nb.lab", "--host", host, "--tcp", str(tcp)],
        stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"lab did not start: {line!r}")
        yield json.loads(line.split(" ", 1)[1])
    finally:
        proc.terminate()
        proc.wait(5)


def connect_full(runs: int = 5) -> dict[str, Any]:
    """Connect scan of all 65,535 ports of 127.0.0.1 with 50 listeners, against nmap -sT."""
    nmap = shutil.which("nmap")
    if nmap is None:
        raise SystemExit("nmap is not installed: apt-get install nmap (make bench does it)")
    ours = ["prtip-nb", "scan", "-sT", "-p-", "127.0.0.1", "--open", "--no-progress"]
    theirs = [nmap, "-sT", "-p-", "-n", "-Pn", "-T4", "127.0.0.1"]
    results: list[Run] = []
    with lab_process() as ports:
        truth = set(ports["tcp"])
        timed(ours, "prtip_nb")  # warm-up: page cache, .pyc files
        timed(theirs, "nmap")
        for _ in range(runs):
            results.append(timed(ours, "prtip_nb"))
            results.append(timed(theirs, "nmap"))
    for r in results:
        r_missed = truth - r.open_ports
        r_extra = r.open_ports - truth
        if r_missed or r_extra:
            print(f"  {r.tool}: missed {sorted(r_missed)} false opens {sorted(r_extra)}")
    summary = summarise(results, "prtip_nb", "nmap")
    summary["exact"] = all(r.open_ports == truth for r in results if r.tool == "prtip_nb")
    summary["nmap_exact"] = all(r.open_ports == truth for r in results if r.tool == "nmap")
    summary["runs"] = runs
    payload = {"scenario": "connect-full", "summary": summary,
               "runs": [as_dict(r) for r in results]}
    path = save("connect-full", payload)
    for r in results:
        print(f"  {r.tool:9s} {r.wall_s:7.3f} s  {r.peak_rss_bytes / 2**20:6.1f} MiB  "
              f"open={len(r.open_ports)}")
    print(f"  saved {path}")
    return payload


def import_time(runs: int = 5) -> dict[str, Any]:
    """``python -c 'import prtip_nb'``, whole process, against a bare interpreter."""
    results = []
    for _ in range(runs):
        results.append(timed([sys.executable, "-c", "import prtip_nb"], "prtip_nb"))
        results.append(timed([sys.executable, "-c", "pass"], "python"))
    summary = summarise(results, "prtip_nb", "python")
    payload = {"scenario": "import", "summary": summary, "runs": [as_dict(r) for r in results]}
    save("import", payload)
    return payload


def _event_overhead(runs: int = 5) -> dict[str, Any]:
    from .inprocess import event_overhead

    return event_overhead(runs)


def _poller_overhead(runs: int = 5) -> dict[str, Any]:
    from .inprocess import poller_overhead

    return poller_overhead(runs)


def _panel_overhead(runs: int = 5) -> dict[str, Any]:
    from .panel import panel_overhead

    return panel_overhead(runs)


def _kernel_latency(runs: int = 5) -> dict[str, Any]:
    from .panel import kernel_latency

    return kernel_latency(max(20, runs))


def _lazy(module: str, name: str) -> Callable[..., dict[str, Any]]:
    """Scenario ``name`` of ``benchmarks/<module>.py``, imported only when it runs (so
    listing the scenarios imports nothing heavy)."""

    def run(runs: int = 3) -> dict[str, Any]:
        mod = importlib.import_module(f".{module}", __package__)
        fn: Callable[..., dict[str, Any]] = getattr(mod, name.replace("-", "_"))
        return fn(runs)

    return run


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "connect-full": connect_full,
    "dask-scaling": _lazy("distributed", "dask-scaling"),
    "dask-read": _lazy("distributed", "dask-read"),
    "resume": _lazy("distributed", "resume"),
    "event-overhead": _event_overhead,
    "poller-overhead": _poller_overhead,
    "panel-overhead": _panel_overhead,
    "panel-scale": _lazy("panel", "panel-scale"),
    "kernel-latency": _kernel_latency,
    "import": import_time,
    "syn-full": _lazy("syn", "syn-full"),
    "syn-ipv6": _lazy("syn", "syn-ipv6"),
    "syn-memory": _lazy("syn", "syn-memory"),
    "syn-rate": _lazy("syn", "syn-rate"),
    "syn-sendto-ceiling": _lazy("syn", "syn-sendto-ceiling"),
    "discover-24": _lazy("discover", "discover-24"),
    "rdns-256": _lazy("rdns", "rdns-256"),
    "trace-50": _lazy("trace", "trace-50"),
    "sv-4ports": _lazy("sv", "sv-4ports"),
    "udp-1000": _lazy("udp", "udp-1000"),
    "udp-icmp-cost": _lazy("udp", "udp-icmp-cost"),
    "sv-1000": _lazy("sv", "sv-1000"),
    "sc-services": _lazy("nse", "sc-services"),
    "sc-10k": _lazy("nse", "sc-10k"),
    "import-nmap-xml": _lazy("interop", "import-nmap-xml"),
    "read-filtered": _lazy("interop", "read-filtered"),
    "net-table": _lazy("network", "net-table"),
    "net-bottleneck": _lazy("network", "net-bottleneck"),
    "net-4096": _lazy("network", "net-4096"),
    "net-fixed": _lazy("network", "net-fixed"),
    "connect-ceiling": _lazy("connfloor", "connect-ceiling"),
    "net-late": _lazy("ratelate", "net-late"),
    "scale-15": _lazy("scale", "scale-15"),
    "os-10": _lazy("osdetect", "os-10"),
    "aggressive-10": _lazy("aggressive", "aggressive-10"),
}
