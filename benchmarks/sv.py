"""Service-detection benchmarks (issue 5), inside the runner's private namespace.

- sv-4ports: the ProRT-IP report's scenario (1.97 GB, 35.9 s for 4 ports): ``-sV`` on
  80, 443, 8080, 8443 with a real nginx (HTTP and HTTPS) behind them, against
  ``nmap -sV`` on the same ports in the same run. Targets: wall <= 1.0x nmap, peak RSS of
  the whole process tree <= 150 MiB.
- sv-1000: ``-sV`` on 1,000 open lab ports (200 each of http, https, ssh, smtp, ftp, from
  ``prtip_nb.lab.farm`` in its own process). Targets: peak RSS <= 250 MiB, >= 100
  services/s (the service stage, timed from the event log), every service named. Then
  1,000 endless banners against 1,000 ports that close at once: the difference in peak RSS
  is what endless banners cost (target < 50 MiB).
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .harness import Run, as_dict, nmap_path, save, summarise, timed

SV4_PORTS = "80,443,8080,8443"
_SERVICE_RE = re.compile(r"^(\d+)/tcp\s+open\s+\S+\s+(\S+)\s+(\S+)", re.M)


@contextmanager
def farm_process(*counts: tuple[str, int], base_port: int = 20000) -> Iterator[dict[str, Any]]:
    """``prtip_nb.lab.farm`` in its own process (its RSS is not the scanner's)."""
    args = [f"--{k}={n}" for k, n in counts]
    proc = subprocess.Popen(
        [sys.executable, "-m", "prtip_nb.lab.farm", f"--base-port={base_port}", *args],
        stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"farm did not start: {line!r}")
        yield json.loads(line.split(" ", 1)[1])
    finally:
        proc.terminate()
        proc.wait(10)


def _services(text: str) -> dict[int, tuple[str, str]]:
    return {int(m[1]): (m[2], m[3]) for m in _SERVICE_RE.finditer(text)}


def sv_4ports(runs: int = 3) -> dict[str, Any]:
    from prtip_nb.lab.daemons import installed, start_daemons

    if not installed("nginx"):
        raise SystemExit("nginx is not installed: apt-get install nginx (make bench does it)")
    ours = ["prtip-nb", "scan", "-sV", "-p", SV4_PORTS, "127.0.0.1", "--no-progress"]
    theirs = [nmap_path(), "-sV", "-n", "-Pn", "-p", SV4_PORTS, "127.0.0.1"]
    results: list[Run] = []
    outputs: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, start_daemons(
        Path(tmp), ["nginx", "nginx-tls"], http=(80, 8080), https=(443, 8443)
    ) as up:
        if set(up) != {"nginx", "nginx-tls"}:
            raise RuntimeError(f"nginx did not come up: {up}")
        timed(ours, "prtip_nb")  # warm-up: page cache, .pyc files
        for _ in range(runs):
            r = timed(ours, "prtip_nb", capture=outputs)
            results.append(r)
            results.append(timed(theirs, "nmap"))
    summary: dict[str, Any] = dict(summarise(results, "prtip_nb", "nmap"))
    named = [_services(text) for text in outputs]
    summary["exact"] = all(
        {p: s[0] for p, s in n.items()} == {80: "http", 8080: "http", 443: "https", 8443: "https"}
        and all(s[1] == "nginx" for s in n.values())
        for n in named
    )
    summary["runs"] = runs
    summary["targets_met"] = summary["ratio"] <= 1.0 and summary["prtip_nb_peak_rss_mib"] <= 150
    payload = {"scenario": "sv-4ports", "summary": summary, "runs": [as_dict(r) for r in results]}
    path = save("sv-4ports", payload)
    for r in results:
        print(f"  {r.tool:9s} {r.wall_s:7.3f} s  {r.peak_rss_bytes / 2**20:6.1f} MiB")
    print(f"  saved {path}")
    return payload


def _stage_seconds(log: Path) -> float:
    """From the event log: the service stage's start to its last ServiceDetected."""
    start = end = None
    for line in log.read_text().splitlines():
        ev = json.loads(line)
        if ev["kind"] == "StageChanged" and ev.get("stage") == "service":
            start = ev["t"]
        elif ev["kind"] == "ServiceDetected":
            end = ev["t"]
    if start is None or end is None:
        raise RuntimeError(f"no service stage in {log}")
    return float(end - start)


def sv_1000(runs: int = 3) -> dict[str, Any]:
    mixed = [("http", 200), ("https", 200), ("ssh", 200), ("smtp", 200), ("ftp", 200)]
    results: list[Run] = []
    stage_s: list[float] = []
    named: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "events.jsonl"
        cmd = ["prtip-nb", "scan", "-sV", "-p", "20000-20999", "127.0.0.1", "--no-progress",
               "--open", "--event-log", str(log)]  # fmt: skip
        with farm_process(*mixed):
            timed(cmd, "prtip_nb")
            for _ in range(runs):
                outputs: list[str] = []
                results.append(timed(cmd, "prtip_nb", capture=outputs))
                stage_s.append(_stage_seconds(log))
                named.append(sum(1 for s in _services(outputs[0]).values() if s[1]))
        for kind, tool in (("endless", "endless"), ("wrapped", "wrapped")):
            with farm_process((kind, 1000)):
                for _ in range(runs):
                    results.append(timed(cmd, tool))
    peak = {t: max(r.peak_rss_bytes for r in results if r.tool == t) / 2**20
            for t in ("prtip_nb", "endless", "wrapped")}  # fmt: skip
    rate = 1000 / statistics.median(stage_s)
    summary: dict[str, Any] = {
        "prtip_nb_median_s": statistics.median(r.wall_s for r in results if r.tool == "prtip_nb"),
        "service_stage_median_s": statistics.median(stage_s),
        "services_per_s": rate,
        "prtip_nb_peak_rss_mib": peak["prtip_nb"],
        "endless_peak_rss_mib": peak["endless"],
        "wrapped_peak_rss_mib": peak["wrapped"],
        "endless_extra_mib": peak["endless"] - peak["wrapped"],
        "named": min(named),
        "exact": min(named) == 1000,
        "runs": runs,
    }
    summary["targets_met"] = (peak["prtip_nb"] <= 250 and rate >= 100
                              and summary["endless_extra_mib"] < 50)  # fmt: skip
    payload = {"scenario": "sv-1000", "summary": summary, "runs": [as_dict(r) for r in results]}
    path = save("sv-1000", payload)
    for r in results:
        print(f"  {r.tool:9s} {r.wall_s:7.3f} s  {r.peak_rss_bytes / 2**20:6.1f} MiB")
    print(f"  saved {path}")
    return payload
