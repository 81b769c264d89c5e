"""Reverse DNS benchmark (issue 18): 256 PTR lookups against ``nmap -sL -R``.

- rdns-256: the dnsmasq lab (prtip_nb.lab.dnslab) serving 198.51.100.0/24: 246 host
  records, 5 PTR-only names and 5 NXDOMAINs (no dropped queries: a timeout would make both
  tools wait out the same 13 s). ``prtip-nb scan -sL --dns-servers`` (whole process: with
  no output file it prints the text only, without pyarrow and without the forward lookups
  that only fill the result's ``confirmed``) and ``nmap -sL -R --dns-servers`` alternately,
  run by run, in the same namespace; plus ``resolve_names`` in-process with the cache
  cleared (forward confirmation included: 507 queries to nmap's 256), and the interpreter's
  floor (``python -c pass``) in the same run. Target: whole-process median <= 1.0x nmap's,
  and the same names; the floor says how much of the gap is Python's start.
"""

from __future__ import annotations

import re
import shutil
import statistics
import sys
import time
from typing import Any

from .harness import Run, as_dict, save, summarise, timed

RANGE = "198.51.100.0/24"
_REPORT = re.compile(r"^(?:Nmap )?[Ss]can report for (\S+) \(([\d.]+)\)$", re.M)


def _names(text: str) -> dict[str, str]:
    return {addr: name for name, addr in _REPORT.findall(text)}


def rdns_256(runs: int = 5) -> dict[str, Any]:
    from prtip_nb.lab.dnslab import DnsLab, default_layout
    from prtip_nb.net.rdns import clear_cache, resolve_names

    nmap = shutil.which("nmap")
    if nmap is None:
        raise SystemExit("nmap is not installed: apt-get install nmap (make bench does it)")
    layout = {n: ("host" if k == "drop" else k) for n, k in default_layout().items()}
    with DnsLab(layout=layout, tag="br") as lab:
        truth = {a: v[0] for a, v in lab.expected().items() if v[0] and "." in a}
        ours_cmd = ["prtip-nb", "scan", "-sL", "--dns-servers", lab.server, RANGE]
        nmap_cmd = [nmap, "-sL", "-R", "--dns-servers", lab.server, RANGE]
        results: list[Run] = []
        seen: dict[str, list[dict[str, str]]] = {"prtip_nb": [], "nmap": [], "inprocess": []}
        inproc: list[float] = []
        floor: list[Run] = []
        for cmd, tool in ((ours_cmd, "prtip_nb"), (nmap_cmd, "nmap")):  # warm-up
            timed(cmd, tool)
        for _ in range(runs):
            for cmd, tool in ((ours_cmd, "prtip_nb"), (nmap_cmd, "nmap")):
                out: list[str] = []
                results.append(timed(cmd, tool, capture=out))
                seen[tool].append(_names(out[-1]))
            floor.append(timed([sys.executable, "-c", "pass"], "python"))
            clear_cache()
            t0 = time.perf_counter()
            found = resolve_names([f"198.51.100.{n}" for n in range(256)], [lab.server])
            inproc.append(time.perf_counter() - t0)
            seen["inprocess"].append({a: h.name for a, h in found.items() if h.name})
    summary: dict[str, Any] = dict(summarise(results, "prtip_nb", "nmap"))
    summary["inprocess_median_s"] = statistics.median(inproc)
    summary["inprocess_ratio"] = summary["inprocess_median_s"] / summary["nmap_median_s"]
    summary["python_floor_ratio"] = (statistics.median(r.wall_s for r in floor)
                                     / summary["nmap_median_s"])
    summary["names_expected"] = len(truth)
    summary["exact"] = all(s == truth for s in seen["prtip_nb"] + seen["inprocess"])
    summary["nmap_exact"] = all(s == truth for s in seen["nmap"])
    summary["runs"] = runs
    for r in results:
        print(f"  {r.tool:9s} {r.wall_s:7.3f} s  {r.peak_rss_bytes / 2**20:6.1f} MiB")
    print(f"  in-process {summary['inprocess_median_s']:.3f} s (median)")
    payload = {"scenario": "rdns-256", "summary": summary,
               "runs": [as_dict(r) for r in results], "inprocess_s": inproc}
    print(f"  saved {save('rdns-256', payload)}")
    return payload
