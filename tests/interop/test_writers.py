"""JSON Lines, CSV and greppable writers: read back, and written without pandas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pcsv

import prtip_nb as pn
from prtip_nb.results import schema

from .conftest import DATA

SAMPLE = DATA / "nmap-sample.xml"


def test_json_lines_one_row_per_port(tmp_path: Path) -> None:
    res = pn.read_nmap_xml(SAMPLE)
    out = res.to_json(tmp_path / "ports.jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == res.tables["ports"].num_rows
    assert list(rows[0]) == schema.PORTS.names
    by_port = {(r["host"], r["proto"], r["port"]): r for r in rows}
    apache = by_port["198.51.100.2", "tcp", 443]
    assert apache["extrainfo"] == 'Debian & "friends"' and apache["ttl"] == 61
    assert apache["banner"] == "HTTP/1.1 400 Bad Request\nServer: Apache"


def test_json_times_and_lists(tmp_path: Path) -> None:
    res = pn.read_masscan(DATA / "masscan-1.3.json")
    rows = [json.loads(x) for x in res.to_json(tmp_path / "m.jsonl").read_text().splitlines()]
    assert rows[0]["first_seen"] == "2025-11-28T10:20:01.000000Z"


def test_csv_reads_back(tmp_path: Path) -> None:
    res = pn.read_nmap_xml(SAMPLE)
    # pyarrow writes null as an empty unquoted field, "" as a quoted one
    options = pcsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False)
    back = pcsv.read_csv(res.to_csv(tmp_path / "ports.csv"), convert_options=options)
    assert back.column_names == schema.PORTS.names
    assert back.num_rows == res.tables["ports"].num_rows
    assert back["port"].to_pylist() == res.tables["ports"]["port"].to_pylist()
    assert back["extrainfo"].to_pylist() == res.tables["ports"]["extrainfo"].to_pylist()


def test_grepable_like_nmap(tmp_path: Path) -> None:
    text = pn.read_nmap_xml(SAMPLE).to_grepable(tmp_path / "out.gnmap").read_text()
    lines = text.splitlines()
    assert lines[0].startswith("# ") and lines[-1].startswith("# ")
    assert "Host: 198.51.100.3 ()\tStatus: Down" in lines
    ports = next(x for x in lines if x.startswith("Host: 198.51.100.2 ()\tPorts: "))
    # port/state/proto/owner/service/rpc/version/ ; "/" in a field becomes "|"
    # HTTP over TLS is written as nmap writes it: ssl|http
    assert "443/open/tcp//ssl|http//Apache httpd 2.4.62 Debian & \"friends\"/" in ports
    assert "53/open/udp//domain//ISC BIND 9.18.28/" in ports
    assert ports.endswith("\tIgnored State: closed (3)")


def test_writers_do_not_import_pandas(tmp_path: Path) -> None:
    code = (
        "import sys; from prtip_nb.interop.masscan import read_masscan; "
        f"r = read_masscan({str(DATA / 'masscan.list')!r}); "
        f"r.to_nmap_xml({str(tmp_path / 'a.xml')!r}); r.to_json({str(tmp_path / 'a.jsonl')!r}); "
        f"r.to_csv({str(tmp_path / 'a.csv')!r}); r.to_grepable({str(tmp_path / 'a.gnmap')!r}); "
        "print('pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
