"""Ten real daemons on ports that belong to other services, identified by what they say
(issue 17 item 4), by prtip_nb -sV and by nmap -sV in the same test.

nginx serves HTTP on 2222 and HTTPS on 25, OpenSSH listens on 8080, Redis on 21, Exim on
6379, vsftpd on 3306, dnsmasq (DNS over TCP) on 5432, memcached on 5900 (VNC's; it
binds after dropping root, so no port below 1024), an rsync daemon on
80 and Dovecot's IMAP on 22: a scanner that trusts the port number names every one wrong.
The bars: every service identified, its name the one nmap gives, and the median
identification within 5 handshakes (LZR's figure: 99% of services within 5).
"""

from __future__ import annotations

import statistics
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import prtip_nb as pn
from prtip_nb.lab.daemons import HOST, PACKAGES, installed, start_daemons

from ..conftest import need

#: daemon -> the odd port it listens on (nginx's two listeners are HTTP and HTTPS).
LAYOUT = {"nginx": 2222, "nginx-tls": 25, "sshd": 8080, "redis": 21, "exim": 6379,
          "vsftpd": 3306, "dnsmasq": 5432, "memcached": 5900, "rsync": 80, "dovecot": 22}
#: What each one is, in nmap's words (ssl/ when the service is inside TLS).
TRUTH = {"nginx": "http", "nginx-tls": "ssl/http", "sshd": "ssh", "redis": "redis",
         "exim": "smtp", "vsftpd": "ftp", "dnsmasq": "domain", "memcached": "memcached",
         "rsync": "rsync", "dovecot": "imap"}  # fmt: skip


def _name(service: str | None, tunnel: str | None) -> str | None:
    return f"{tunnel}/{service}" if tunnel and service else service


def _nmap(nmap: str, spec: str, box: dict[str, object]) -> None:
    t0 = time.monotonic()
    box["xml"] = subprocess.run(
        [nmap, "-sT", "-sV", "-n", "-Pn", "-T4", "-p", spec, HOST, "-oX", "-"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    box["took"] = time.monotonic() - t0


def _nmap_names(xml: str) -> dict[int, str | None]:
    out: dict[int, str | None] = {}
    for port in ET.fromstring(xml).iter("port"):
        svc = port.find("service")
        out[int(port.get("portid", "0"))] = (
            None if svc is None else _name(svc.get("name"), svc.get("tunnel"))
        )
    return out


def test_services_on_odd_ports_are_named_by_what_they_say(
    netns: None, root: None, nmap: str, tmp_path: Path
) -> None:
    for name in LAYOUT:
        need(installed(name), f"needs {name}: apt-get install {' '.join(PACKAGES)} "
                              "(make system-deps installs them as root)")  # fmt: skip
    others = {n: p for n, p in LAYOUT.items() if not n.startswith("nginx")}
    with start_daemons(tmp_path, list(LAYOUT), http=[LAYOUT["nginx"]],
                       https=[LAYOUT["nginx-tls"]], ports=others) as up:  # fmt: skip
        assert up == LAYOUT, f"did not come up: {set(LAYOUT) - set(up)}"
        spec = ",".join(str(p) for p in sorted(LAYOUT.values()))
        box: dict[str, object] = {}
        ref = threading.Thread(target=_nmap, args=(nmap, spec, box))
        ref.start()  # the same daemons, at the same time
        t0 = time.monotonic()
        res = pn.scan(HOST, ports=spec, service=True)
        ours_s = time.monotonic() - t0
        ref.join()
    df = res.ports.set_index("port")
    text = {c: df[c].astype(object).where(df[c].notna(), None) for c in ("service", "tunnel")}
    ours = {int(p): _name(text["service"][p], text["tunnel"][p]) for p in df.index}
    theirs = _nmap_names(str(box["xml"]))
    hs = {int(p): int(h) for p, h in df["handshakes"].items()}
    table = "\n".join(f"{n:>10} {p:>5}  truth={TRUTH[n]:<9} ours={ours.get(p)!s:<9} "
                      f"nmap={theirs.get(p)!s:<9} handshakes={hs.get(p)}"
                      for n, p in LAYOUT.items())  # fmt: skip
    print(f"\nprtip_nb -sV {ours_s:.1f} s, nmap -sV {box['took']:.1f} s\n{table}")
    assert ours == {p: TRUTH[n] for n, p in LAYOUT.items()}, table
    assert theirs == ours, table
    assert df["verified"].all()
    assert statistics.median(hs.values()) <= 5, table  # LZR's bar
