"""``prtip-nb scan -A`` against ``nmap -A`` on the same lab, in the same test.

-A is nmap's "everything": version detection, default scripts, OS detection and traceroute.
The lab is a RouteLab target (four routers away, the third silent) running Python's
http.server on 8080, with 81 closed (OS detection wants an open and a closed port). Both
tools write nmap XML; one reader takes both apart, and every part -A adds must agree:
port states, the service and product on 8080, the default scripts' http-title, the OS
family of the best match, and the traceroute hops.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from tests.conftest import in_netns, need

PORT_OPEN, PORT_CLOSED = 8080, 81


def _read(path: Path) -> dict[str, Any]:
    """The parts of one host's nmap XML that -A fills in."""
    host = ET.parse(path).getroot().find("host")
    assert host is not None, f"{path} has no host"
    ports = {}
    scripts: dict[int, dict[str, str]] = {}
    for p in host.iter("port"):
        port = int(p.get("portid", 0))
        state = p.find("state")
        svc = p.find("service")
        ports[port] = (state.get("state") if state is not None else None,
                       svc.get("name") if svc is not None else None,
                       svc.get("product") if svc is not None else None)
        scripts[port] = {s.get("id", ""): s.get("output", "").strip() for s in p.iter("script")}
    best = list(host.iter("osmatch"))[:1]
    families = [c.get("osfamily") for m in best for c in m.iter("osclass")]
    hops = [(int(h.get("ttl", 0)), h.get("ipaddr")) for h in host.iter("hop")]
    return {"ports": ports, "scripts": scripts, "os": families, "hops": hops}




def test_aggressive_scan_equals_nmap_A(tmp_path: Path) -> None:
    need(in_netns(), "needs a private network namespace: run under scripts/in-netns")
    need(os.geteuid() == 0, "needs root (raw sockets for -O and --traceroute)")
    need(shutil.which("nmap") is not None, "needs nmap (the reference)")
    need(all(shutil.which(t) for t in ("nsenter", "unshare")), "needs nsenter and unshare")
    from prtip_nb.lab.childns import wait_listening
    from prtip_nb.lab.routelab import RouteLab

    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("<html><head><title>prtip lab</title></head></html>\n")
    ours, theirs = tmp_path / "ours.xml", tmp_path / "nmap.xml"
    with RouteLab(targets=1, silent=(3,), tcp=()) as lab:
        host = lab.targets4[0]
        lab.target_ns.spawn([sys.executable, "-m", "http.server", str(PORT_OPEN), "--bind",
                             host, "--directory", str(www)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(host, PORT_OPEN)
        ports = f"{PORT_CLOSED},{PORT_OPEN}"
        # --privileged: the scan keeps root, so it may write into pytest's 0700 folder.
        done = subprocess.run([sys.executable, "-m", "prtip_nb.cli", "scan", "-A", "-n", "-Pn",
                               "--privileged", "-T4", "-p", ports, host, "--no-progress",
                               "-oX", str(ours)],
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        # One OS try, as ours: nmap repeats detection up to 5 times when no match is perfect
        # (every modern Linux); benchmarks os-10 and aggressive-10 time that.
        subprocess.run(["nmap", "-A", "-T4", "--max-os-tries", "1", "-n", "-Pn", "-p", ports,
                        "-oX", str(theirs), host],
                       check=True, capture_output=True, timeout=300)
    a, b = _read(ours), _read(theirs)
    # Ports and -sV: the same states, service and product (SimpleHTTPServer).
    assert a["ports"][PORT_CLOSED][0] == b["ports"][PORT_CLOSED][0] == "closed"
    assert a["ports"][PORT_OPEN] == b["ports"][PORT_OPEN], (a["ports"], b["ports"])
    assert b["ports"][PORT_OPEN][1] == "http"
    # -sC: nmap's default http scripts ran on 8080 and agree on the page's title.
    assert "http-title" in b["scripts"][PORT_OPEN]
    assert a["scripts"][PORT_OPEN].get("http-title") == b["scripts"][PORT_OPEN]["http-title"]
    # -sV's version scripts too (nmap runs the version category with -sV).
    assert "http-server-header" in b["scripts"][PORT_OPEN]
    assert (a["scripts"][PORT_OPEN].get("http-server-header")
            == b["scripts"][PORT_OPEN]["http-server-header"])
    # http-methods by category (-A) is not verbose in nmap: no risky method, no output.
    ours_8080, theirs_8080 = a["scripts"][PORT_OPEN], b["scripts"][PORT_OPEN]
    assert ("http-methods" in ours_8080) == ("http-methods" in theirs_8080)
    # -O: both name Linux first.
    assert b["os"] and a["os"] and a["os"][0] == b["os"][0] == "Linux", (a["os"], b["os"])
    # --traceroute: the same hops, the silent third router missing from both.
    assert a["hops"] == b["hops"] and len(b["hops"]) == 4, (a["hops"], b["hops"])
    assert 3 not in [ttl for ttl, _ in a["hops"]]
