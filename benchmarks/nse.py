"""Script benchmarks (issue 17), inside the runner's private namespace.

- sc-services: ``-sV -sC`` on N open lab services (N/5 each of http, https, ssh, smtp,
  ftp from ``prtip_nb.lab.farm`` in its own process) against ``nmap -sV -sC`` on the same
  ports in the same run: wall-time ratio (target <= 0.5x) and peak RSS (target <= 250 MiB).
  N defaults to 200 (nmap -sV -sC on 1,000 lab ports takes minutes per run);
  ``PRTIP_BENCH_SERVICES=1000`` gives the issue's size.
- The script stage alone is timed from the event log (StageChanged "scripts" to the end of
  the scan) and the rows counted in the -oX file: script runs per second.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from .harness import Run, as_dict, nmap_path, save, summarise, timed
from .sv import farm_process


def _stage(log: Path) -> float:
    start = end = None
    for line in log.read_text().splitlines():
        ev = json.loads(line)
        if ev["kind"] == "StageChanged" and ev.get("stage") == "scripts":
            start = ev["t"]
        if ev["kind"] in ("ScanCompleted", "ScanCancelled", "ScanFailed"):
            end = ev["t"]
    if start is None or end is None:
        raise RuntimeError(f"no script stage in {log}")
    return float(end - start)


def _spec(per: int, block: int, kinds: int = 5) -> str:
    """The first ``per`` ports of each of the farm's ``kinds`` blocks of ``block`` ports."""
    return ",".join(f"{20000 + k * block}-{20000 + k * block + per - 1}" for k in range(kinds))


def sc_services(runs: int = 2) -> dict[str, Any]:
    """-sV -sC on N services; nmap on a subset of them (``PRTIP_BENCH_NMAP_SERVICES``,
    default 100) when N is larger, and both tools on that subset for a same-run ratio."""
    n = int(os.environ.get("PRTIP_BENCH_SERVICES", "200"))
    sub = min(n, int(os.environ.get("PRTIP_BENCH_NMAP_SERVICES", "100")))
    per = n // 5
    mixed = [(k, per) for k in ("http", "https", "ssh", "smtp", "ftp")]
    spec, sub_spec = _spec(per, per), _spec(sub // 5, per)
    results: list[Run] = []
    stage_s: list[float] = []
    rows: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        log, xml = Path(tmp) / "events.jsonl", Path(tmp) / "ours.xml"

        def ours(ports: str) -> list[str]:
            return ["prtip-nb", "scan", "-sV", "-sC", "-p", ports, "127.0.0.1", "--no-progress",
                    "--open", "--event-log", str(log), "-oX", str(xml)]  # fmt: skip

        theirs = [nmap_path(), "-sV", "-sC", "-n", "-Pn", "-p", sub_spec, "127.0.0.1",
                  "-oX", str(Path(tmp) / "nmap.xml")]  # fmt: skip
        with farm_process(*mixed):
            timed(ours(spec), "prtip_nb")  # warm-up
            for _ in range(runs):
                results.append(timed(ours(spec), "prtip_nb_all", timeout=900))
                stage_s.append(_stage(log))
                rows.append(xml.read_text().count("<script "))
                results.append(timed(ours(sub_spec), "prtip_nb", timeout=900))
                sub_rows = xml.read_text().count("<script ")
                results.append(timed(theirs, "nmap", timeout=1800))
            nmap_rows = (Path(tmp) / "nmap.xml").read_text().count("<script ")
    summary: dict[str, Any] = dict(summarise(results, "prtip_nb", "nmap"))
    full = [r for r in results if r.tool == "prtip_nb_all"]
    full_s = statistics.median(r.wall_s for r in full)
    nmap_s = statistics.median(r.wall_s for r in results if r.tool == "nmap")
    summary.update(services=per * 5, nmap_services=sub, subset_script_rows=sub_rows,
                   nmap_script_rows=nmap_rows, script_rows=min(rows),
                   prtip_nb_all_wall_s=full_s,
                   prtip_nb_all_peak_rss_mib=max(r.peak_rss_bytes for r in full) / 2**20,
                   # nmap's time grown in proportion to the services: an estimate, said so
                   nmap_extrapolated_s=nmap_s * (per * 5) / sub,
                   script_stage_median_s=statistics.median(stage_s),
                   script_rows_per_s=min(rows) / statistics.median(stage_s), runs=runs)
    summary["targets_met"] = (summary["ratio"] <= 0.5
                              and summary["prtip_nb_all_peak_rss_mib"] <= 250)  # fmt: skip
    payload = {"scenario": "sc-services", "summary": summary,
               "runs": [as_dict(r) for r in results]}  # fmt: skip
    path = save("sc-services", payload)
    for r in results:
        print(f"  {r.tool:9s} {r.wall_s:7.3f} s  {r.peak_rss_bytes / 2**20:6.1f} MiB")
    print(f"  {json.dumps(summary)}\n  saved {path}")
    return payload


def sc_10k(runs: int = 2) -> dict[str, Any]:
    """``--script banner`` on 10,000 open ports (5,000 SSH and 5,000 SMTP banners of the
    farm): script runs per second of the script stage (target >= 500) and peak RSS."""
    n = int(os.environ.get("PRTIP_BENCH_SCRIPT_PORTS", "10000"))
    spec = f"20000-{20000 + n - 1}"
    results: list[Run] = []
    rates: list[float] = []
    rows: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        log, xml = Path(tmp) / "events.jsonl", Path(tmp) / "ours.xml"
        ours = ["prtip-nb", "scan", "--script", "banner", "-p", spec, "127.0.0.1",
                "--no-progress", "--open", "--event-log", str(log), "-oX", str(xml)]  # fmt: skip
        with farm_process(("ssh", n // 2), ("smtp", n - n // 2)):
            for _ in range(runs):
                results.append(timed(ours, "prtip_nb", timeout=900))
                rows.append(xml.read_text().count("<script "))
                rates.append(rows[-1] / _stage(log))
    summary = {"ports": n, "script_rows": min(rows), "runs_per_s": statistics.median(rates),
               "wall_s": statistics.median(r.wall_s for r in results),
               "peak_rss_mib": max(r.peak_rss_bytes for r in results) / 2**20, "runs": runs}
    summary["targets_met"] = summary["runs_per_s"] >= 500 and summary["script_rows"] == n
    payload = {"scenario": "sc-10k", "summary": summary, "runs": [as_dict(r) for r in results]}
    path = save("sc-10k", payload)
    print(f"  {json.dumps(summary)}\n  saved {path}")
    return payload
