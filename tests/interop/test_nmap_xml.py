"""nmap XML in and out: real nmap output from listeners this test opens, round-tripped
through prtip_nb and checked by nmap's own DTD and ndiff."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import prtip_nb as pn
from prtip_nb.interop import _nmap_fast, _nmap_parser
from prtip_nb.lab import Lab
from prtip_nb.results import schema

from .conftest import DATA, Listeners, validate

SAMPLE = DATA / "nmap-sample.xml"
KEEP = ["host", "proto", "port", "state", "reason", "service", "product", "version", "extrainfo"]


def _rows(res: pn.ScanResult, columns: list[str] = KEEP, table: str = "ports") -> list[Any]:
    return res.tables[table].select(columns).to_pylist()


def _same_ports(a: pn.ScanResult, b: pn.ScanResult) -> None:
    assert _rows(a) == _rows(b)
    hosts = ["host", "state", "open", "closed", "filtered"]
    assert _rows(a, hosts, "hosts") == _rows(b, hosts, "hosts")


def test_real_nmap_scan_reads_exactly(listeners: Listeners, run_nmap: Callable[..., Path]) -> None:
    listeners.open(9001, 9003)
    xml = run_nmap("9000-9005")
    res = pn.read_nmap_xml(xml)
    assert res.tables["ports"].schema.equals(schema.PORTS)
    df = res.ports
    assert all(isinstance(t, pd.ArrowDtype) for t in df.dtypes)
    assert sorted(df.loc[df["state"] == "open", "port"].astype(int)) == [9001, 9003]
    assert set(df.loc[df["state"] == "closed", "reason"].astype(str)) == {"conn-refused"}
    assert len(df) == 6 and df["ttl"].isna().all()  # -sT: nmap saw no TTL (reason_ttl="0")
    assert res.hosts[["host", "state", "open", "closed"]].values.tolist() == [
        ["127.0.0.1", "up", 2, 4]
    ]
    cfg = res.config
    assert (cfg["source"], cfg["method"], cfg["targets"]) == ("nmap-xml", "connect", ["127.0.0.1"])
    assert cfg["ports"] == "9000-9005" and res.started <= res.ended
    assert res.scan_id == pn.read_nmap_xml(xml).scan_id  # same file, same id


def test_round_trip_ndiff_finds_no_difference(
    listeners: Listeners, run_nmap: Callable[..., Path], ndiff: Any, dtd: Any, tmp_path: Path
) -> None:
    # 40 closed ports: nmap folds them into <extraports>, which must survive the trip.
    listeners.open(9010, 9020, 9049)
    original = run_nmap("9010-9049,9999")
    assert b"<extraports" in original.read_bytes()
    res = pn.read_nmap_xml(original)
    assert int(res.hosts["closed"].iloc[0]) == 38 and len(res.ports) == 3
    out = res.to_nmap_xml(tmp_path / "out.xml")
    validate(dtd, out)
    diff = ndiff(original, out)
    assert diff.returncode == 0 and diff.stdout == "", diff.stdout + diff.stderr
    _same_ports(res, pn.read_nmap_xml(out))


def test_ssl_cert_script_fills_tls_columns(
    netns: None, run_nmap: Callable[..., Path], ndiff: Any, dtd: Any, tmp_path: Path
) -> None:
    with Lab(host="127.0.0.1", https=0) as lab:
        port = lab.services["https"]
        original = run_nmap(str(port), "--script", "ssl-cert")
        truth = lab.table.select([c for c in schema.PORTS.names if c.startswith("tls_")])
    row = pn.read_nmap_xml(original).tables["ports"].to_pylist()[0]
    want = truth.to_pylist()[0]
    for column in ("tls_subject", "tls_issuer", "tls_san", "tls_self_signed"):
        assert row[column] == want[column], column
    assert row["tls_not_after"] == want["tls_not_after"].replace(microsecond=0)
    out = pn.read_nmap_xml(original).to_nmap_xml(tmp_path / "tls.xml")
    validate(dtd, out)
    back = pn.read_nmap_xml(out).tables["ports"].to_pylist()[0]
    assert {k: v for k, v in back.items() if k != "scan_id"} == {
        k: v for k, v in row.items() if k != "scan_id"
    }
    # nmap's ssl-cert output has fingerprints we do not keep: the script differs, the port
    # state and service must not (ndiff --xml: a state change shows as <a>/<b><state>).
    report = ET.fromstring(ndiff(original, out, "--xml").stdout)
    for portdiff in report.iter("portdiff"):
        assert portdiff.find("a/port/state") is None and portdiff.find("b/port/state") is None


def test_sample_with_services_hostnames_ipv6_and_extraports(dtd: Any, tmp_path: Path) -> None:
    validate(dtd, SAMPLE)  # the hand-written sample is valid nmap XML
    res = pn.read_nmap_xml(SAMPLE)
    df = res.ports.set_index(["host", "proto", "port"])
    ssh = df.loc[("198.51.100.1", "tcp", 22)]
    assert (ssh["service"], ssh["product"], ssh["version"], ssh["extrainfo"]) == (
        "ssh", "OpenSSH", "9.2p1 Debian 2+deb12u3", "protocol 2.0")  # fmt: skip
    assert ssh["hostname"] == "gw.example.test" and ssh["ttl"] == 63
    apache = df.loc[("198.51.100.2", "tcp", 443)]
    assert apache["extrainfo"] == 'Debian & "friends"'  # entities decoded
    assert apache["banner"] == "HTTP/1.1 400 Bad Request\nServer: Apache"
    assert df.loc[("2001:db8::10", "udp", 53), "family"] == 6
    hosts = res.hosts.set_index("host")
    assert hosts.loc["198.51.100.3", "state"] == "down"  # listed with no ports
    assert hosts.loc["198.51.100.2", "closed"] == 3  # extraports, no rows
    assert hosts.loc["198.51.100.1", "rtt_ms"] == pytest.approx(1.5)
    assert res.config["targets"] == ["198.51.100.0/30", "2001:db8::10"]
    assert res.config["ports"] == "T:22,80,443,8080,U:53"
    out = res.to_nmap_xml(tmp_path / "sample.xml")
    validate(dtd, out)
    back = pn.read_nmap_xml(out)
    _same_ports(res, back)
    assert _rows(back, ["banner", "hostname"]) == _rows(res, ["banner", "hostname"])


def test_fast_path_reads_what_expat_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = pn.read_nmap_xml(SAMPLE)
    monkeypatch.setattr(_nmap_parser, "_declares_utf8", lambda head: False)
    slow = pn.read_nmap_xml(SAMPLE)
    # Equal values (dictionary encodings may number words differently).
    assert fast.tables["ports"].to_pylist() == slow.tables["ports"].to_pylist()
    assert fast.tables["hosts"].to_pylist() == slow.tables["hosts"].to_pylist()


@pytest.mark.parametrize(
    "section",
    [
        '<port protocol="tcp" portid="1"><state state="open" reason="syn-ack" reason_ttl="1"/>'
        '<script id="x" output="y"/></port>',  # a script: only expat keeps it
        '<port protocol="tcp" portid="1"><state state="open" reason="a&amp;b" reason_ttl="1"/>'
        "</port>",  # an entity to decode
        "<!-- <port> in a comment --><port/>",
        '<port portid="1" protocol="tcp"><state state="open" reason="r" reason_ttl="1"/></port>',
    ],
)
def test_fast_path_declines_what_it_cannot_read_exactly(section: str) -> None:
    assert _nmap_fast.read_section(section) is None


def test_streams_a_large_file_in_chunks(tmp_path: Path) -> None:
    hosts, per_host = 40, 2000  # 80k rows: more than one chunk of each path
    path = tmp_path / "big.xml"
    with open(path, "w") as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8"?>\n<nmaprun scanner="nmap" args="nmap x"'
                 ' start="1764325200" version="7.93" xmloutputversion="1.05">\n')  # fmt: skip
        for h in range(hosts):
            fh.write('<host><status state="up" reason="syn-ack" reason_ttl="0"/>\n<address '
                     f'addr="203.0.113.{h}" addrtype="ipv4"/>\n<hostnames>\n</hostnames>\n'
                     "<ports>")  # fmt: skip
            for p in range(1, per_host + 1):
                fh.write(f'<port protocol="tcp" portid="{p}"><state state="closed" '
                         f'reason="reset" reason_ttl="64"/></port>\n')  # fmt: skip
            fh.write("</ports>\n</host>\n")
        fh.write('<runstats><finished time="1764325260" elapsed="60"/><hosts total="40"/>'
                 "</runstats></nmaprun>\n")  # fmt: skip
    res = pn.read_nmap_xml(path)
    ports = res.tables["ports"]
    assert ports.num_rows == hosts * per_host
    assert ports["ttl"].null_count == 0 and ports["port"].type == pa.uint16()
    assert res.tables["hosts"].num_rows == hosts
    assert (res.ended - res.started).total_seconds() == 60


def test_bad_files_say_what_is_wrong(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text('<nmaprun scanner="nmap"><host>')
    with pytest.raises(ValueError, match="broken.xml"):
        pn.read_nmap_xml(broken)
    other = tmp_path / "other.xml"
    other.write_text("<catalog/>")
    with pytest.raises(ValueError, match="not nmap XML"):
        pn.read_nmap_xml(other)
