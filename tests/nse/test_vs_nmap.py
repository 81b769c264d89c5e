"""Built-in scripts against nmap's on real daemons, field by field, in the same test.

nginx (HTTP, HTTPS), OpenSSH, Exim, vsftpd (anonymous), dnsmasq, Redis and memcached run in
the suite's private namespace (``lab.daemons``); prtip_nb (-sV plus the scripts) and
``nmap -sV --script`` scan them one after the other. Every (port, script) that nmap reports
we report, with the same text and the same structured data, except fields that change
between two connections (dates, CPU counters, connection counts; named below) and the keys
nmap 7.93 does not have (``sha256``, ``hassh``). Fingerprints are also checked against
OpenSSH's own ``ssh-keygen -l`` and the certificate file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import prtip_nb as pn
from prtip_nb.interop._nmap_inventory import script_row
from prtip_nb.lab.daemons import DAEMONS, HOST, PACKAGES, installed, start_daemons

from ..conftest import need

SCRIPTS = ("banner,http-title,http-server-header,http-headers,http-methods,http-robots.txt,"
           "http-favicon,ssl-cert,ssh-hostkey,ssh2-enum-algos,ftp-anon,smtp-commands,"
           "redis-info,memcached-info,dns-nsid")  # fmt: skip
OURS_ONLY = {"sha256", "hassh", "hassh_string"}  # data keys nmap 7.93 lacks
OURS_ONLY_IN = {"http-favicon": ("md5", "mmh3")}  # nmap's http-favicon has no data
#: Data keys (dotted paths' last part) and text lines that differ between two connections.
VOLATILE = {
    "redis-info": ("Used CPU (sys)", "Used CPU (user)", "Connected clients", "Used memory"),
    "memcached-info": ("Uptime", "Server time", "Used CPU (user)", "Used CPU (system)",
                       "Current connections", "Total connections"),
    "http-headers": ("Date",),
}


def _strip(tree: list[list[Any]], drop: tuple[str, ...]) -> list[list[Any]]:
    """The tree less our extra and the volatile keys; a table whose items all have keys
    is sorted by key: nmap's order there is Lua's hash order, which varies run to run
    (ssh-hostkey's fingerprint/key/bits/type came in two orders in two runs)."""
    out = []
    for key, value in tree:
        if key in OURS_ONLY or key in drop:
            continue
        out.append([key, _strip(value, drop) if isinstance(value, list) else value])
    if out and all(k is not None for k, _ in out):
        out.sort(key=lambda kv: kv[0])
    return out


def _text(script_id: str, text: str | None) -> str:
    drop = VOLATILE.get(script_id, ())
    lines = [ln for ln in (text or "").split("\n")
             if not any(ln.strip().startswith(f"{k}:") for k in drop)
             and not ln.startswith("  hassh:")]  # fmt: skip
    return "\n".join(lines)


def _nmap_scripts(xml: str) -> dict[tuple[int, str], dict[str, Any]]:
    out = {}
    for port in ET.fromstring(xml).iter("port"):
        for s in port.findall("script"):
            out[(int(port.get("portid", "0")), s.get("id", ""))] = script_row(s)
    return out


def test_scripts_agree_with_nmap(netns: None, root: None, nmap: str, tmp_path: Path) -> None:
    for name in DAEMONS:
        need(installed(name), f"needs {DAEMONS[name][0]}: apt-get install {' '.join(PACKAGES)} "
                              "(make test installs them as root)")  # fmt: skip
    with start_daemons(tmp_path) as up:
        assert set(up) == set(DAEMONS), f"did not come up: {set(DAEMONS) - set(up)}"
        spec = ",".join(map(str, sorted(set(up.values()))))
        t0 = time.monotonic()
        res = pn.scan(HOST, ports=spec, service=True, scripts=SCRIPTS,
                      script_args="smtp.domain=nmap.scanme.org")  # nmap's EHLO name
        ours_s = time.monotonic() - t0
        t0 = time.monotonic()
        xml = subprocess.run([nmap, "-sV", "-n", "-Pn", "-p", spec, "--script", SCRIPTS, HOST,
                              "-oX", "-"], capture_output=True, text=True, check=True,
                             timeout=180).stdout  # fmt: skip
        nmap_s = time.monotonic() - t0
        hostkey_pub = (tmp_path / "hostkey.pub").read_text().split()[1]
        keygen = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f",
                                 str(tmp_path / "hostkey.pub")], capture_output=True,
                                text=True, check=True).stdout.split()[1]  # fmt: skip
    cert_der = _pem_der((tmp_path / "cert.pem").read_text())
    theirs = _nmap_scripts(xml)
    ours = {(r["port"], r["id"]): r for r in res.tables["scripts"].to_pylist()}
    print(f"\nprtip_nb -sV + scripts {ours_s:.2f} s, nmap -sV --script {nmap_s:.2f} s; "
          f"{len(ours)} script results, nmap {len(theirs)}")
    assert set(theirs) == set(ours), (sorted(set(theirs) ^ set(ours)))
    checked = 0
    for key, t in sorted(theirs.items()):
        o = ours[key]
        port, sid = key
        if sid == "banner" and port == 25:  # Exim's greeting carries the time of day
            assert o["output"].split(" ESMTP ")[0] == t["output"].split(" ESMTP ")[0]
            continue
        if sid == "ssl-cert" and port == 25:
            # Exim makes a new self-signed certificate for every STARTTLS: compare what
            # stays (subject, issuer, key type and size, signature algorithm).
            oo, tt = json.loads(o["data"]), json.loads(t["data"])
            for k in ("subject", "issuer", "sig_algo"):
                assert dict(oo)[k] == dict(tt)[k], (key, k)
            assert dict(oo)["pubkey"][:2] == dict(tt)["pubkey"][:2]
            continue
        assert _text(sid, o["output"]) == _text(sid, t["output"]), key
        drop = VOLATILE.get(sid, ()) + OURS_ONLY_IN.get(sid, ())
        ot = _strip(json.loads(o["data"]), drop) if o["data"] else []
        tt = _strip(json.loads(t["data"]), drop) if t["data"] else []
        assert ot == tt, key
        checked += 1
    assert checked >= 18, checked
    # Fingerprints, from sources other than nmap.
    hk = json.loads(ours[(22, "ssh-hostkey")]["data"])[0][1]
    assert dict(hk)["key"] == hostkey_pub and dict(hk)["sha256"] == keygen
    assert dict(hk)["fingerprint"] == hashlib.md5(base64.b64decode(hostkey_pub)).hexdigest()
    cert = dict(json.loads(ours[(443, "ssl-cert")]["data"]))
    assert cert["sha256"] == hashlib.sha256(cert_der).hexdigest()
    assert cert["sha1"] == hashlib.sha1(cert_der).hexdigest()
    algos = dict(json.loads(ours[(22, "ssh2-enum-algos")]["data"]))
    lists = [",".join(v for _, v in algos[k]) for k in ("kex_algorithms",
             "encryption_algorithms", "mac_algorithms", "compression_algorithms")]  # fmt: skip
    assert algos["hassh"] == hashlib.md5(";".join(lists).encode()).hexdigest()
    # The same rows in the DataFrame and in our nmap XML.
    df = res.scripts
    assert str(df["id"].dtype).endswith("[pyarrow]") and len(df) == len(ours)
    mine = _nmap_scripts(_to_xml(res, tmp_path))
    assert {k: v["output"] for k, v in mine.items()} == {k: v["output"] for k, v in ours.items()}
    # The HTML report shows, per host, the title, server, host key and certificate.
    page = pn.report(res, tmp_path / "report.html", with_charts=False).read_text()
    section = page.split("Per host: titles")[1].split("<h2>")[0]
    for fact in ("real nginx", "nginx/1.22.1", dict(hk)["fingerprint"], keygen,
                 cert["sha256"], "CN=prtip-lab.test"):  # fmt: skip
        assert fact in section, fact


def _pem_der(pem: str) -> bytes:
    body = re.sub(r"-----[^-]+-----|\s", "", pem)
    return base64.b64decode(body)


def _to_xml(res: pn.ScanResult, tmp: Path) -> str:
    from prtip_nb.interop.nmap_xml import write_nmap_xml

    path = tmp / "ours.xml"
    write_nmap_xml(res, path)
    return path.read_text()


def test_ssl_cert_by_category_is_nmaps_short_text(netns: None, nmap: str) -> None:
    """-sC runs ssl-cert at nmap's verbosity 0: subject, SAN and dates only, where naming
    it in --script adds issuer, key, signature and fingerprints. Both, against nmap, on the
    lab's HTTPS server."""
    from prtip_nb.lab import Lab

    def nmap_text(*select: str) -> str:
        xml = subprocess.run([nmap, "-sV", "--version-light", "-n", "-Pn", "-p", str(port),
                              *select, "127.0.0.1",
                              "-oX", "-"], capture_output=True, text=True, check=True,
                             timeout=120).stdout  # fmt: skip
        return _nmap_scripts(xml)[(port, "ssl-cert")]["output"]

    def our_text(scripts: str) -> str:
        res = pn.scan("127.0.0.1", ports=str(port), method="connect", service=True,
                      scripts=scripts)
        rows = {r["id"]: r for r in res.tables["scripts"].to_pylist()}
        return rows["ssl-cert"]["output"]

    lab = Lab("127.0.0.1", https=20443).start()
    try:
        port = lab.services["https"]
        short, long = nmap_text("-sC"), nmap_text("--script", "ssl-cert")
        assert our_text("default") == short
        assert our_text("ssl-cert") == long
    finally:
        lab.stop()
    assert [ln.split(":")[0] for ln in short.split("\n")] == [
        "Subject", "Subject Alternative Name", "Not valid before", "Not valid after"]
    assert "Issuer:" in long and "SHA-1:" in long
