"""Service detection against the lab, whose ground truth is known: the engine, the scan's
-sV stage (ports table, events, Parquet) and the CLI."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

import prtip_nb as pn
from prtip_nb.cli import main
from prtip_nb.lab import Lab
from prtip_nb.service.service import ServiceScanner, detect_services

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def lab() -> object:
    from ..conftest import in_netns

    if not in_netns():
        pytest.skip("needs a private network namespace: run the suite with `make test`")
    with Lab(HOST, http=0, https=0, ssh=0, smtp=0, ftp=0, tcp=2, closed=1, base_port=0) as lab:
        yield lab


def test_lab_services_match_the_ground_truth(lab: Lab) -> None:
    truth = {row["port"]: row for row in lab.table.to_pylist()}
    found = {r.port: r for r in detect_services([(HOST, p) for p in lab.open_ports["tcp"]])}
    assert set(found) == set(lab.open_ports["tcp"])
    for port, r in found.items():
        t = truth[port]
        if t["service"] is None:  # plain listeners accept and close: nmap's tcpwrapped
            assert r.service == "tcpwrapped" and r.elapsed < 1.0
            continue
        row = r.row()
        got = {k: row.get(k) for k in ("service", "product", "version", "extrainfo", "banner")}
        assert got == {k: t[k] for k in got}, port
        if t["tls_subject"] is not None:
            for col in ("tls_subject", "tls_issuer", "tls_san", "tls_self_signed"):
                assert row[col] == t[col], col
            assert row["tls_version"] == "TLSv1.3"
            assert r.tls is not None and r.tls.cert is not None
            assert r.tls.cert.not_after == t["tls_not_after"]
            assert r.tls.cipher and r.tls.cert.sha256
        assert r.elapsed < 1.0, (port, r.elapsed)  # no port waits for a banner in vain
    http = found[lab.services["http"]]
    assert http.http == {"http_version": "1.1", "status": 200, "server": "prtip-lab/1.0",
                         "title": "prtip_nb lab"}  # fmt: skip


def test_ipv6_and_intensity_zero(netns: None) -> None:
    with Lab("::1", ssh=0, https=0, http=0) as lab6:
        targets = [("::1", p) for p in lab6.open_ports["tcp"]]
        found = {r.port: r for r in ServiceScanner().scan(targets)}
        assert found[lab6.services["ssh"]].product == "OpenSSH"
        tls = found[lab6.services["https"]]
        assert (tls.service, tls.tunnel) == ("http", "ssl")  # nmap's words: ssl/http
        assert found[lab6.services["http"]].product == "prtip-lab"
        # At intensity 0 only hinted probes go out: HTTP on an odd port says nothing to the
        # NULL probe and gets no GET, so it stays unknown; a banner still names SSH.
        found = {r.port: r for r in ServiceScanner(intensity=0, deadline=1.0).scan(targets)}
        assert found[lab6.services["http"]].service is None
        assert found[lab6.services["ssh"]].product == "OpenSSH"


def test_scan_with_service_detection_fills_the_ports_table(lab: Lab, tmp_path: Path) -> None:
    ports = ",".join(str(p) for p in [*lab.open_ports["tcp"], *lab.closed_ports])
    res = pn.scan(HOST, ports=ports, service=True, version_intensity=7, output=str(tmp_path))
    df = res.ports.set_index("port")
    ssh, https = df.loc[lab.services["ssh"]], df.loc[lab.services["https"]]
    assert (ssh["service"], ssh["product"], ssh["version"]) == ("ssh", "OpenSSH", "9.2p1")
    assert ssh["banner"] == "SSH-2.0-OpenSSH_9.2p1 prtip-lab"
    assert https["tls_subject"] == "CN=prtip-lab.test" and https["tls_self_signed"]
    assert list(https["tls_san"]) == ["prtip-lab.test", HOST]
    assert https["tls_not_after"] == lab.cert.not_after  # type: ignore[union-attr]
    assert df.loc[lab.closed_ports[0], "service"] is pd_na()
    assert str(df["service"].dtype) == "string[pyarrow]"
    ev = res.events
    kinds = ev["kind"].astype(str).tolist()
    assert kinds.count("ServiceDetected") == len(lab.open_ports["tcp"])
    assert kinds.count("CertificateFound") == 1
    payloads = list(zip(kinds, ev["payload"], strict=True))
    assert {"stage": "service"} in [json.loads(p) for k, p in payloads if k == "StageChanged"]
    details = [json.loads(p)["details"] for k, p in payloads if k == "ServiceDetected"]
    tls = next(d["tls"] for d in details if d["tls"])
    assert tls["cert"]["key_type"] == "EC" and tls["cert"]["sigalg"] == "ecdsa-with-SHA256"
    assert len(tls["cert"]["sha256"]) == 95 and tls["cipher"]
    back = pn.read_scans(str(tmp_path)).ports.set_index("port")
    assert back.loc[lab.services["ftp"], "product"] == "vsftpd"


def pd_na() -> object:
    import pandas as pd

    return pd.NA


def test_config_and_cli_flags(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(pn.ConfigError, match="version_intensity"):
        pn.ScanConfig(targets=(HOST,), version_intensity=10)
    ports = f"{lab.services['ssh']},{lab.services['http']},{lab.services['https']}"
    assert main(["scan", "-sV", "--version-intensity", "2", "-p", ports, HOST,
                 "--no-progress"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "SERVICE" in out and "VERSION" in out
    assert "OpenSSH 9.2p1 (protocol 2.0)" in out and "prtip-lab 1.0" in out
    tls_line = next(line for line in out.splitlines()
                    if line.startswith(f"{lab.services['https']}/tcp"))  # fmt: skip
    assert " ssl/http " in tls_line  # nmap's words for HTTP over TLS
    with pytest.raises(SystemExit) as exc:
        main(["scan", "-sV", "--version-intensity", "12", HOST])
    assert exc.value.code == 2
    assert main(["scan", "-p", ports, HOST, "--no-progress"]) == 0
    assert "SERVICE" not in capsys.readouterr().out  # no -sV, no service columns


def test_cancel_during_service_detection(netns: None) -> None:
    with Lab(HOST, hostile={"slow": 0}) as slow_lab:
        sc = pn.Scan(HOST, ports=str(slow_lab.hostile["slow"]), service=True).start()
        time.sleep(0.6)
        t0 = time.monotonic()
        sc.cancel()
        res = sc.wait(5)
        assert time.monotonic() - t0 < 1.0 and sc.status == "cancelled"
        assert len(res.ports) == 1


def test_detection_from_a_thread_with_a_running_loop(lab: Lab) -> None:
    import asyncio

    async def inside() -> str | None:  # as in a notebook: a loop already runs here
        return detect_services([(HOST, lab.services["ftp"])])[0].product

    box: list[str | None] = []
    t = threading.Thread(target=lambda: box.append(asyncio.run(inside())))
    t.start()
    t.join(10)
    assert box == ["vsftpd"]
