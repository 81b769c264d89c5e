"""A ping sweep's files (``prtip-nb scan -sn -oX/-oG/-oJ/-oN``) are nmap ``-sn``'s shape.

The sweep runs over a small VethLab (prtip_nb.lab.veth): two hosts up (one on-link, found
by ARP; one routed, by ICMP echo) and three that do not exist. The XML must validate
against nmap.dtd, say ``-sn`` with no ``<scaninfo>`` and no ``<ports>``, read back with our
own reader host by host, and agree with ``nmap -sn -v -oX`` of the same lab.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import prtip_nb as pn
from prtip_nb.lab.veth import VethLab
from tests.conftest import need

from .conftest import validate

pytestmark = pytest.mark.usefixtures("netns", "root")

TARGETS = ["198.51.100.8-11", "203.0.113.5"]
UP = {"198.51.100.10": "arp-response", "203.0.113.5": "echo-reply"}
DOWN = {"198.51.100.8", "198.51.100.9", "198.51.100.11"}


@pytest.fixture(scope="module")
def lab() -> Iterator[VethLab]:
    need(shutil.which("nsenter") is not None, "needs nsenter (util-linux)")
    with VethLab(up=["198.51.100.10"], routed_up=["203.0.113.5"]) as lab:
        yield lab


@pytest.fixture(scope="module")
def files(lab: VethLab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sweep")
    out = {k: d / f"sweep.{k}" for k in ("xml", "gnmap", "jsonl", "txt")}
    done = subprocess.run(
        # --privileged: pytest's folders are root's (0700), which user nobody may not
        # enter after the drop; tests/net/test_privdrop.py covers the drop itself.
        [sys.executable, "-m", "prtip_nb.cli", "scan", "-sn", "--privileged", *TARGETS,
         "-oX", str(out["xml"]),
         "-oG", str(out["gnmap"]), "-oJ", str(out["jsonl"]), "-oN", str(out["txt"])],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return out


def test_sweep_xml_is_nmap_sn_shape(files: dict[str, Path], dtd: Any) -> None:
    validate(dtd, files["xml"])
    root = ET.parse(files["xml"]).getroot()
    assert "-sn" in root.get("args", "").split() and "-sT" not in root.get("args", "")
    assert root.find("scaninfo") is None
    assert root.find(".//ports") is None and root.find(".//port") is None
    status = {h.find("address").get("addr"): h.find("status").attrib  # type: ignore[union-attr]
              for h in root.iter("host")}
    assert {a: s["reason"] for a, s in status.items() if s["state"] == "up"} == UP
    assert {a for a, s in status.items() if s["state"] == "down"} == DOWN
    hosts = root.find("runstats/hosts")
    assert hosts is not None and hosts.attrib == {"up": "2", "down": "3", "total": "5"}


def test_sweep_xml_reads_back(files: dict[str, Path]) -> None:
    back = pn.read_nmap_xml(files["xml"])
    assert back.ports.empty
    df = back.hosts.set_index("host")
    assert set(df.index) == set(UP) | DOWN
    for addr, reason in UP.items():
        assert (df.loc[addr, "state"], df.loc[addr, "reason"]) == ("up", reason)
        assert df.loc[addr, "rtt_ms"] > 0  # from <times srtt>
    assert (df.loc[sorted(DOWN), "state"] == "down").all()
    # Written again, the imported sweep keeps its shape: still no scaninfo, no ports.
    again = files["xml"].with_name("again.xml")
    back.to_nmap_xml(again)
    root = ET.parse(again).getroot()
    assert root.find("scaninfo") is None and root.find(".//ports") is None


def test_sweep_agrees_with_nmap_sn_xml(lab: VethLab, files: dict[str, Path], nmap: str,
                                       tmp_path: Path) -> None:
    theirs = tmp_path / "nmap.xml"
    subprocess.run([nmap, "-sn", "-n", "-v", "-oX", str(theirs), *TARGETS], check=True,
                   capture_output=True, timeout=120)
    a, b = pn.read_nmap_xml(files["xml"]).hosts, pn.read_nmap_xml(theirs).hosts
    ours = dict(zip(a["host"], a["state"].astype(str), strict=True))
    assert ours == dict(zip(b["host"], b["state"].astype(str), strict=True))


def test_sweep_grepable_json_and_normal(files: dict[str, Path]) -> None:
    text = files["gnmap"].read_text()
    assert "as: prtip-nb scan -sn " in text
    assert "Host: 198.51.100.10 ()\tStatus: Up" in text
    assert "Host: 198.51.100.8 ()\tStatus: Down" in text
    assert "Ports:" not in text
    assert "(2 hosts up)" in text
    rows = [json.loads(line) for line in files["jsonl"].read_text().splitlines()]
    assert {r["host"]: r["state"] for r in rows} == {**dict.fromkeys(UP, "up"),
                                                     **dict.fromkeys(DOWN, "down")}
    assert {r["host"]: r["reason"] for r in rows if r["state"] == "up"} == UP
    normal = files["txt"].read_text()  # -oN: the text printed
    assert "Scan report for 203.0.113.5\n" in normal and "(2 hosts up)" in normal


def test_udp_scan_xml_says_su(tmp_path: Path) -> None:
    """A -sU scan's header is -sU with UDP scaninfo (not -sT over TCP)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        res = pn.scan("127.0.0.1", ports=f"{port},{port + 1}", method="udp", max_retries=0)
    out = res.to_nmap_xml(tmp_path / "u.xml")
    root = ET.parse(out).getroot()
    assert root.get("args", "").startswith("prtip-nb scan -sU -p ")
    infos = [i.attrib for i in root.iter("scaninfo")]
    assert [(i["type"], i["protocol"]) for i in infos] == [("udp", "udp")]
    back = pn.read_nmap_xml(out).ports
    assert set(back["proto"].astype(str)) == {"udp"}
    assert len(back) == 2


def test_sweep_read_from_a_dataset_keeps_its_shape(lab: VethLab, tmp_path: Path,
                                                   dtd: Any) -> None:
    """pn.discover(output=...) -> read_scans -> to_nmap_xml: still a -sn file."""
    res = pn.discover(TARGETS, output=str(tmp_path / "scans"))
    back = pn.read_scans(tmp_path / "scans", scan_id=res.scan_id)
    out = back.to_nmap_xml(tmp_path / "sweep.xml")
    validate(dtd, out)
    root = ET.parse(out).getroot()
    assert root.find("scaninfo") is None and root.find(".//ports") is None
    assert root.get("args", "").startswith("prtip-nb scan -sn ")
    got = pn.read_nmap_xml(out).hosts
    assert dict(zip(got["host"], got["state"].astype(str), strict=True)) == {
        **dict.fromkeys(UP, "up"), **dict.fromkeys(DOWN, "down")}
