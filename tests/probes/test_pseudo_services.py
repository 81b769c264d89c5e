"""A real service or only a SYN-ACK (issue 17 item 4): ``ports.verified``,
``ports.handshakes`` and ``hosts.pseudo_services``, against nmap -sV on the same lab.

127.0.0.2 accepts every TCP port (nftables sends them all to one listener that accepts and
closes without a byte: nmap's tcpwrapped); 127.0.0.1 runs real services on odd ports.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import prtip_nb as pn
from prtip_nb.lab import Lab

from ..conftest import need

REAL, PSEUDO = "127.0.0.1", "127.0.0.2"
PORTS = "2000-2199"  # 200 ports
LAYOUT = {"ssh": 2080, "http": 2022, "https": 2025, "smtp": 2143, "ftp": 2110}
NMAP_REAL = "2080,2110,2143"
BEHIND = 2005  # a real service on the pseudo host, inside the sample
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"


def _talk(conn: socket.socket, banner: bytes) -> None:
    """Say ``banner`` and wait for the client, as sshd does (nmap fails to name a server
    that closes right after its banner); no banner: close at once (tcpwrapped)."""
    try:
        conn.sendall(banner)
        if banner:
            conn.settimeout(5.0)
            conn.recv(4096)
    except OSError:
        pass
    conn.close()


def _serve(sock: socket.socket, stop: threading.Event, banner: bytes) -> None:
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        if banner:
            threading.Thread(target=_talk, args=(conn, banner), daemon=True).start()
        else:
            _talk(conn, banner)


@pytest.fixture
def pseudo_host(netns: None, root: None) -> object:
    """127.0.0.2: every TCP port goes to one listener that never speaks (nftables), but
    for BEHIND, a real service behind the middlebox (an SSH banner)."""
    nft = shutil.which("nft")
    need(nft is not None, "needs nft (apt-get install nftables)")
    assert nft is not None
    stop = threading.Event()
    socks, threads = [], []
    for port, banner in ((9, b""), (BEHIND, SSH_BANNER)):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((PSEUDO, port))
        sock.listen(4096)
        sock.settimeout(0.2)
        socks.append(sock)
        threads.append(threading.Thread(target=_serve, args=(sock, stop, banner), daemon=True))
        threads[-1].start()
    rules = ("add table ip prtip_pseudo\n"
             "add chain ip prtip_pseudo out { type nat hook output priority -100 ; }\n"
             f"add rule ip prtip_pseudo out ip daddr {PSEUDO} tcp dport != {{ 9, {BEHIND} }} "
             f"dnat to {PSEUDO}:9\n")  # fmt: skip
    subprocess.run([nft, "-f", "-"], input=rules, text=True, check=True)
    try:
        yield PSEUDO
    finally:
        subprocess.run([nft, "delete", "table", "ip", "prtip_pseudo"], check=False)
        stop.set()
        for t in threads:
            t.join()
        for sock in socks:
            sock.close()


def _nmap(nmap: str, box: dict[str, object]) -> None:
    """nmap -sV on the pseudo host's 200 ports and on the real host's banner services
    (nmap spends minutes on the lab's HTTP and TLS servers on odd ports: not compared)."""
    t0 = time.monotonic()
    box["xml"] = [subprocess.run(
        [nmap, "-sT", "-sV", "-Pn", "-n", "-T4", "-p", ports, "-oX", "-", host],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout for host, ports in ((PSEUDO, PORTS), (REAL, NMAP_REAL))]  # fmt: skip
    box["took"] = time.monotonic() - t0


def _nmap_services(xml: str) -> dict[tuple[str, int], str | None]:
    found: dict[tuple[str, int], str | None] = {}
    for host in ET.fromstring(xml).iter("host"):
        addr = host.find("address")
        assert addr is not None
        for port in host.iter("port"):
            state = port.find("state")
            if state is None or state.get("state") != "open":
                continue
            svc = port.find("service")
            name = None if svc is None else svc.get("name")
            if svc is not None and svc.get("tunnel"):
                name = f"{svc.get('tunnel')}/{name}"
            found[(str(addr.get("addr")), int(port.get("portid", 0)))] = name
    return found


def test_pseudo_services_are_flagged_and_real_ones_verified(pseudo_host: str, nmap: str) -> None:
    with Lab(REAL, **LAYOUT, closed=[2001, 2002]) as lab:
        box: dict[str, object] = {}
        ref = threading.Thread(target=_nmap, args=(nmap, box))
        ref.start()  # nmap -sV runs alongside: the same lab, the same time
        t0 = time.monotonic()
        res = pn.scan([REAL, PSEUDO], ports=PORTS, service=True)
        took = time.monotonic() - t0
        ref.join()
    ports, hosts = res.ports, res.hosts.set_index("host")
    print(f"\nprtip_nb -sV {took:.1f} s, nmap -sV {box['took']:.1f} s on the same lab")

    # The pseudo host: flagged, with a reason; no port of it is reported as a service.
    assert hosts.loc[PSEUDO, "pseudo_services"] == True  # noqa: E712 (a nullable bool)
    reason = "200/200 scanned TCP ports open; 31/32 checked said nothing"
    assert hosts.loc[PSEUDO, "pseudo_reason"] == reason
    fake = ports[ports["host"] == PSEUDO].set_index("port")
    assert len(fake) == 200 and (fake["state"].astype(str) == "open").all()
    behind = fake.loc[BEHIND]  # it spoke: a real service behind the middlebox keeps its name
    assert (behind["service"], behind["product"], behind["verified"]) == ("ssh", "OpenSSH", True)
    silent = fake.drop(index=BEHIND)
    assert silent["service"].isna().all() and silent["product"].isna().all()
    checked = silent[silent["verified"].notna()]
    assert 20 <= len(checked) <= 31 and not checked["verified"].any()  # the sample only
    assert (checked["handshakes"] >= 1).all()
    # nmap: the same ports, all tcpwrapped but the SSH one.
    theirs = {k: v for xml in box["xml"] for k, v in _nmap_services(xml).items()}
    assert {p for (h, p), s in theirs.items() if h == PSEUDO} == set(fake.index)
    assert theirs.pop((PSEUDO, BEHIND)) == "ssh"
    assert {s for (h, _), s in theirs.items() if h == PSEUDO} == {"tcpwrapped"}

    # The real host: not flagged; every service found, verified, named as nmap names it.
    assert hosts.loc[REAL, "pseudo_services"] == False  # noqa: E712
    assert pd_isna(hosts.loc[REAL, "pseudo_reason"])
    real = ports[ports["host"] == REAL].set_index("port")
    open_ = real[real["state"].astype(str) == "open"]
    assert set(open_.index) == set(LAYOUT.values())
    assert open_["verified"].all()
    ours = {p: (f"{t}/{s}" if isinstance(t, str) else s)
            for p, s, t in zip(open_.index, open_["service"], open_["tunnel"], strict=True)}
    truth = {r["port"]: r["service"] for r in lab.table.to_pylist()}
    assert dict(open_["service"]) == {p: truth[p] for p in LAYOUT.values()}
    assert ours[LAYOUT["https"]] == "ssl/http"  # nmap's words for HTTP inside TLS
    assert {p: ours[p] for p in (2080, 2110, 2143)} == {p: theirs[(REAL, p)]
                                                        for p in (2080, 2110, 2143)}
    hs = sorted(int(n) for n in open_["handshakes"])
    assert hs[len(hs) // 2] <= 5, hs  # LZR's bar: the median identification in <= 5
    print(f"handshakes per identification: {dict(open_['handshakes'])}")
    shut = real[real["state"].astype(str) != "open"]
    assert len(shut) == 195 and shut["verified"].isna().all()


def pd_isna(v: object) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


def test_verify_without_service_detection(pseudo_host: str) -> None:
    """``verify=True`` alone: the light check fills verified/handshakes, no service columns."""
    with Lab(REAL, http=2022, ssh=2030):
        res = pn.scan([REAL, PSEUDO], ports="2000-2039", verify=True)
    hosts = res.hosts.set_index("host")
    assert hosts.loc[PSEUDO, "pseudo_services"] == True  # noqa: E712
    assert hosts.loc[REAL, "pseudo_services"] == False  # noqa: E712
    real = res.ports[(res.ports["host"] == REAL) & (res.ports["state"].astype(str) == "open")]
    assert sorted(real["port"]) == [2022, 2030]
    assert real["verified"].all() and real["service"].isna().all()


def test_verify_must_be_a_bool() -> None:
    with pytest.raises(pn.ConfigError, match="verify must be True, False or None"):
        pn.scan(REAL, ports="1", verify="yes")


def test_cli_verify_flags_and_nmap_xml(pseudo_host: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """-sV checks by default; --no-verify leaves the columns null; nmap XML of a flagged
    host's ports has no <service> (what nmap shows is tcpwrapped: no invented name)."""
    from prtip_nb.cli import main

    xml, data = tmp_path / "a.xml", tmp_path / "scans"
    assert main(["scan", "-sV", "-p", "2000-2039", PSEUDO, "--no-progress", "-oX", str(xml),
                 "-o", str(data)]) == 0  # fmt: skip
    assert "Pseudo-services: 40/40 scanned TCP ports open; 31/32 checked" in capsys.readouterr().out
    root = ET.parse(xml).getroot()
    assert len(list(root.iter("port"))) == 40
    assert [s.get("name") for s in root.iter("service")] == ["ssh"]  # only what spoke
    res = pn.read_scans(data)
    assert res.hosts["pseudo_services"].tolist() == [True]  # through Parquet and back
    assert main(["scan", "-sV", "--no-verify", "-p", "2000-2039", PSEUDO, "--no-progress",
                 "-o", str(tmp_path / "off")]) == 0  # fmt: skip
    off = pn.read_scans(tmp_path / "off")
    assert pd_isna(off.hosts["pseudo_services"].iloc[0]) and off.ports["verified"].isna().all()


@pn.script("test-always", rule=lambda t: True)
async def _always(ctx: object) -> str:
    return "ran"


def test_scripts_skip_the_silent_ports_of_a_pseudo_host(pseudo_host: str) -> None:
    res = pn.scan(PSEUDO, ports="2000-2039", service=True, scripts=[_always])
    assert res.hosts["pseudo_services"].tolist() == [True]
    assert res.scripts["port"].tolist() == [BEHIND]  # only the port that spoke
