"""Real Debian daemons, identified by prtip_nb and by ``nmap -sV`` in the same test.

nginx (HTTP and HTTPS with a certificate made here), OpenSSH, Redis, Exim, vsftpd and
dnsmasq run on their usual ports inside the suite's private namespace (root binds them),
configured from a temporary directory and killed at teardown. The figures to reach: the
service name agrees with nmap on >= 95% of the ports, the product on >= 80%.
"""

from __future__ import annotations

import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import prtip_nb as pn
from prtip_nb.lab.daemons import DAEMONS, HOST, PACKAGES, installed, start_daemons

from ..conftest import need


def _nmap_services(xml: str) -> dict[int, tuple[str | None, str | None]]:
    out: dict[int, tuple[str | None, str | None]] = {}
    for port in ET.fromstring(xml).iter("port"):
        svc = port.find("service")
        if svc is None:
            continue
        name = svc.get("name")
        if svc.get("tunnel") == "ssl":  # compared as "ssl/http" on both sides
            name = f"ssl/{name}"
        out[int(port.get("portid", "0"))] = (name, svc.get("product"))
    return out


@pytest.mark.serial
def test_real_daemons_agree_with_nmap(netns: None, root: None, nmap: str, tmp_path: Path) -> None:
    for name in DAEMONS:
        need(installed(name), f"needs {DAEMONS[name][0]}: apt-get install {' '.join(PACKAGES)} "
                              "(make test installs them as root)")  # fmt: skip
    with start_daemons(tmp_path) as up:
        assert set(up) == set(DAEMONS), f"did not come up: {set(DAEMONS) - set(up)}"
        ports = sorted(set(up.values()))
        spec = ",".join(map(str, ports))
        t0 = time.monotonic()
        res = pn.scan(HOST, ports=spec, service=True)
        ours_s = time.monotonic() - t0
        t0 = time.monotonic()
        xml = subprocess.run([nmap, "-sV", "-n", "-Pn", "-p", spec, HOST, "-oX", "-"],
                             capture_output=True, text=True, check=True, timeout=120).stdout
        nmap_s = time.monotonic() - t0
    theirs = _nmap_services(xml)
    df = res.ports.set_index("port")
    # The same words as nmap's: service "http" with tunnel "ssl" on the TLS port.
    tunnel = df["tunnel"].astype(object).where(df["tunnel"].notna(), None)
    ours = {p: (f"ssl/{df.loc[p, 'service']}" if tunnel[p] == "ssl" else df.loc[p, "service"],
                df.loc[p, "product"]) for p in ports}  # fmt: skip
    table = "\n".join(f"{p:>5}  ours={ours[p]}  nmap={theirs.get(p)}" for p in ports)
    print(f"\nprtip_nb {ours_s:.2f} s, nmap -sV {nmap_s:.2f} s\n{table}")
    same_service = sum(ours[p][0] == theirs.get(p, (None,))[0] for p in ports) / len(ports)
    same_product = sum(ours[p][1] == theirs.get(p, (None, None))[1] for p in ports) / len(ports)
    assert same_service >= 0.95, table
    assert same_product >= 0.80, table
    assert ours_s <= nmap_s, (ours_s, nmap_s)
    https = df.loc[443]
    assert (https["service"], https["tunnel"]) == ("http", "ssl")
    assert https["tls_subject"] == "CN=prtip-lab.test" and https["tls_self_signed"]
    assert https["tls_version"] in ("TLSv1.2", "TLSv1.3")
    ssh = df.loc[22]
    assert ssh["extrainfo"] == "protocol 2.0" and str(ssh["banner"]).startswith("SSH-2.0-OpenSSH")
