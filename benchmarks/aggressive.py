"""``-A`` benchmark (issue 18): 10 lab hosts, ``prtip-nb scan -A`` against ``nmap -A``.

- aggressive-10: os-10's StackLab (10 hosts, each its own Linux stack and namespace, on one
  bridge) with Python's http.server on 8080 of every host (an index.html whose <title> names
  the host) and 81 closed, so -sV, -sC, -O and --traceroute all have work. ``python -m
  prtip_nb.cli scan -A -n -Pn -p 81,8080`` and ``nmap -A -n -Pn -p 81,8080`` (whole
  processes, wall time and peak RSS) alternate run by run in the same namespace. Checked per
  host, from both -oX files: the same open ports, the same service name and product on
  8080, the same http-title, the same OS family of the best match, the same traceroute
  hops ("exact": all of them on every host in every run); the set of script ids run on
  8080 is reported beside them. Then one more run of each, untimed, for where the time
  goes: our stages from ``--event-log``, nmap's from ``-d``. Target: median <= 1.0x nmap's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .harness import Run, as_dict, nmap_path, save, summarise, timed
from .osdetect import _hosts

PORT_OPEN, PORT_CLOSED = 8080, 81
CHECKS = ("open_ports", "service", "http_title", "os_family", "hops")
INFO = ("scripts",)  # reported, not part of "exact": the script ids that ran on 8080


def _read(path: Path) -> dict[str, dict[str, Any]]:
    """Per host address: what -A adds, in comparable form."""
    out: dict[str, dict[str, Any]] = {}
    for h in ET.parse(path).getroot().iter("host"):
        addr = h.find("address")
        if addr is None:
            continue
        opened, service, title, scripts = set(), None, None, set()
        for p in h.iter("port"):
            state = p.find("state")
            if state is not None and state.get("state") == "open":
                opened.add(int(p.get("portid", "0")))
            if int(p.get("portid", "0")) == PORT_OPEN:
                svc = p.find("service")
                if svc is not None:
                    service = (svc.get("name"), svc.get("product"))
                for s in p.iter("script"):
                    scripts.add(s.get("id"))
                    if s.get("id") == "http-title":
                        title = s.get("output", "").strip()
        best = list(h.iter("osmatch"))[:1]
        families = [c.get("osfamily") for m in best for c in m.iter("osclass")][:1]
        hops = [(int(x.get("ttl", "0")), x.get("ipaddr")) for x in h.iter("hop")]
        out[addr.get("addr", "")] = {"open_ports": opened, "service": service,
                                     "http_title": title, "hops": hops,
                                     "os_family": families[0] if families else None,
                                     "scripts": scripts}
    return out


def _agreement(ours: dict[str, dict[str, Any]], theirs: dict[str, dict[str, Any]],
               hosts: list[str]) -> dict[str, int]:
    """How many hosts agree with nmap on each check (a value nmap did not find either
    counts as a disagreement: both must have found it)."""
    counts = dict.fromkeys(CHECKS + INFO, 0)
    for a in hosts:
        o, t = ours.get(a, {}), theirs.get(a, {})
        for c in CHECKS + INFO:
            if t.get(c) and o.get(c) == t.get(c):
                counts[c] += 1
    return counts




@contextmanager
def web_lab(tmp: Path) -> Iterator[Any]:
    """os-10's StackLab with http.server on 8080 of every host, serving ``tmp``/www<i>."""
    from prtip_nb.lab.childns import wait_listening
    from prtip_nb.lab.stacks import StackLab

    with StackLab(_hosts(), tcp=()) as lab:
        for i, addr in enumerate(lab.addresses):
            www = tmp / f"www{i}"
            www.mkdir()
            (www / "index.html").write_text(
                f"<html><head><title>prtip lab host {i}</title></head><body>{addr}</body>"
                "</html>\n")
            lab.spawn(i, [sys.executable, "-m", "http.server", str(PORT_OPEN), "--bind", addr,
                          "--directory", str(www)],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for addr in lab.addresses:
            wait_listening(addr, PORT_OPEN)
        yield lab


def _show(v: Any) -> str:
    return repr(sorted(v)) if isinstance(v, set) else repr(v)


_NMAP_DONE = re.compile(r"^Completed (.+?) at [0-9:]+, ([0-9.]+)s elapsed", re.M)
_NMAP_TOTAL = re.compile(r"scanned in ([0-9.]+) seconds")


def _stages(ours: list[str], theirs: list[str], tmp: Path) -> dict[str, dict[str, float]]:
    """Where the time goes, from one more (untimed) run of each: our stages from the
    event log's StageChanged times; nmap's from ``-d``'s "Completed ... elapsed" lines,
    the rest of its "scanned in" (OS detection, traceroute, start-up) as one figure."""
    ev = tmp / "events.jsonl"
    start = time.monotonic()
    subprocess.run([*ours, "--event-log", str(ev)], check=True, capture_output=True,
                   timeout=300)
    wall = time.monotonic() - start
    mine: dict[str, float] = {}
    stage, since, t = "start", 0.0, 0.0
    for line in ev.read_text().splitlines():
        e = json.loads(line)
        t = e["t"]
        if e["kind"] in ("StageChanged", "ScanCompleted"):
            mine[stage] = round(mine.get(stage, 0.0) + t - since, 3)
            stage, since = e.get("stage", "done"), t
    mine.pop("start", None)
    mine["rest (start-up, imports, writing -oX)"] = round(wall - sum(mine.values()), 3)
    d = subprocess.run([*theirs, "-d"], check=True, capture_output=True, text=True,
                       timeout=300).stdout
    nm: dict[str, float] = {}
    for name, secs in _NMAP_DONE.findall(d):
        nm[name] = round(nm.get(name, 0.0) + float(secs), 3)
    total = _NMAP_TOTAL.search(d)
    if total:
        nm["rest (OS detection, traceroute, start-up)"] = round(
            float(total[1]) - sum(nm.values()), 3)
    return {"prtip_nb_stages_s": mine, "nmap_stages_s": nm}


def aggressive_10(runs: int = 3) -> dict[str, Any]:
    nmap = nmap_path()
    results: list[Run] = []
    agree: list[dict[str, int]] = []
    diffs: dict[str, set[str]] = {}
    with tempfile.TemporaryDirectory() as tmp, web_lab(Path(tmp)) as lab:
        ox, nx = Path(tmp) / "ours.xml", Path(tmp) / "nmap.xml"
        ports = f"{PORT_CLOSED},{PORT_OPEN}"
        # --privileged: the scan keeps root, so it may write into the 0700 temporary folder.
        ours = [sys.executable, "-m", "prtip_nb.cli", "scan", "-A", "-n", "-Pn",
                "--privileged", "-p", ports, *lab.addresses, "--no-progress", "-oX", str(ox)]
        theirs = [nmap, "-A", "-n", "-Pn", "-p", ports, "-oX", str(nx), *lab.addresses]
        timed(ours, "prtip_nb", timeout=300)  # warm-up: page cache, .pyc files, databases
        timed(theirs, "nmap", timeout=300)
        for _ in range(runs):
            results.append(timed(ours, "prtip_nb", timeout=300))
            results.append(timed(theirs, "nmap", timeout=300))
            o, t = _read(ox), _read(nx)
            agree.append(_agreement(o, t, lab.addresses))
            for a in lab.addresses:
                for c in CHECKS + INFO:
                    pair = (o.get(a, {}).get(c), t.get(a, {}).get(c))
                    if pair[0] != pair[1]:
                        diffs.setdefault(f"{c}: ours {_show(pair[0])} nmap {_show(pair[1])}",
                                         set()).add(a)
        stages = _stages(ours, theirs, Path(tmp))
    for what, where in diffs.items():
        print(f"  differs on {len(where)} host(s) in some run: {what}")
    n = len(lab.addresses)
    summary: dict[str, Any] = dict(summarise(results, "prtip_nb", "nmap"))
    summary["hosts"] = n
    summary["runs"] = runs
    summary["agreement"] = {c: f"{min(a[c] for a in agree)}/{n}" for c in CHECKS + INFO}
    summary["exact"] = all(a[c] == n for a in agree for c in CHECKS)
    summary.update(stages)
    for r in results:
        print(f"  {r.tool:9s} {r.wall_s:7.3f} s  {r.peak_rss_bytes / 2**20:6.1f} MiB")
    payload = {"scenario": "aggressive-10", "summary": summary,
               "runs": [as_dict(r) for r in results], "agreement": agree}
    print(f"  saved {save('aggressive-10', payload)}")
    return payload
