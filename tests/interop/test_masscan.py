"""masscan's outputs, from hand-written samples (masscan itself must never run here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import prtip_nb as pn
from prtip_nb.interop.masscan import detect_format
from prtip_nb.results import schema

from .conftest import DATA, validate

# The same scan in every format masscan writes (see tests/data/masscan*).
SAMPLES = {
    "masscan-1.3.json": "json",  # leading commas (valid JSON)
    "masscan-1.0-trailing.json": "json",  # a trailing comma after the last record
    "masscan.ndjson": "json",  # -oD
    "masscan.list": "list",  # -oL
    "masscan.xml": "xml",  # -oX
}
EXPECTED = [
    ("198.51.100.7", "tcp", 22, "open", "syn-ack", "ssh", "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"),
    ("198.51.100.7", "tcp", 80, "open", "syn-ack", None, None),
    ("203.0.113.20", "tcp", 443, "open", "syn-ack", None, None),
    ("203.0.113.21", "tcp", 25, "closed", "reset", None, None),
    ("2001:db8::15", "udp", 53, "open", "udp-response", None, None),
]  # fmt: skip
COLUMNS = ["host", "proto", "port", "state", "reason", "service", "banner"]


def _rows(res: pn.ScanResult) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in res.tables["ports"].select(COLUMNS).to_pylist()]


@pytest.mark.parametrize("name", SAMPLES)
def test_every_format_reads_the_same_scan(name: str) -> None:
    path = DATA / name
    assert detect_format(path) == SAMPLES[name]
    res = pn.read_masscan(path)
    assert res.tables["ports"].schema.equals(schema.PORTS)
    assert _rows(res) == EXPECTED
    assert res.started.timestamp() == 1764325200 and res.ended.timestamp() == 1764325205
    assert res.config["source"] == f"masscan-{SAMPLES[name]}"
    first_seen = res.ports.set_index("port")["first_seen"]
    assert first_seen[22].timestamp() == 1764325201  # the status record's, not the banner's
    hosts = res.hosts.set_index("host")
    assert list(hosts.index) == ["198.51.100.7", "203.0.113.20", "203.0.113.21", "2001:db8::15"]
    assert (hosts["state"] == "up").all() and hosts.loc["198.51.100.7", "open"] == 2
    if SAMPLES[name] != "list":  # -oL records no TTL
        assert res.ports.set_index("port").loc[443, "ttl"] == 117
    assert res.scan_id == pn.read_masscan(path).scan_id


def test_oldest_json_with_unquoted_keys_and_finished_record() -> None:
    res = pn.read_masscan(DATA / "masscan-old.json")
    assert _rows(res) == [
        ("198.51.100.7", "tcp", 22, "open", "syn-ack", None, None),
        ("198.51.100.7", "tcp", 80, "open", "syn-ack", None, None),
        ("203.0.113.20", "tcp", 443, "open", "syn-ack", None, None),
    ]
    assert res.ports["first_seen"].isna().all()  # that version wrote no timestamps


def test_reindented_json_is_read_whole(tmp_path: Path) -> None:
    import json

    records = json.loads((DATA / "masscan-1.3.json").read_text())
    path = tmp_path / "pretty.json"
    path.write_text(json.dumps(records, indent=2))
    assert _rows(pn.read_masscan(path)) == EXPECTED


def test_masscan_result_exports_as_valid_nmap_xml(dtd: Any, tmp_path: Path) -> None:
    res = pn.read_masscan(DATA / "masscan.list")
    out = res.to_nmap_xml(tmp_path / "m.xml")
    validate(dtd, out)
    back = pn.read_nmap_xml(out)
    assert _rows(back) == EXPECTED


def test_garbage_lines_are_reported_with_their_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.list"
    path.write_text("#masscan\nopen tcp 80 198.51.100.7 1764325200\nopen tcp eighty x\n")
    with pytest.raises(ValueError, match=":3:"):
        pn.read_masscan(path)


BANNERS = """\
{"ip":"198.51.100.8","timestamp":"1764325200","port":80,"proto":"tcp","rec_type":"status","data":{"status":"open","reason":"syn-ack","ttl":54}}
{"ip":"198.51.100.8","timestamp":"1764325201","port":80,"proto":"tcp","rec_type":"banner","data":{"service_name":"http.server","banner":"nginx/1.22.1"}}
{"ip":"198.51.100.8","timestamp":"1764325201","port":80,"proto":"tcp","rec_type":"banner","data":{"service_name":"title","banner":"Welcome"}}
{"ip":"198.51.100.8","timestamp":"1764325201","port":443,"proto":"tcp","rec_type":"banner","data":{"service_name":"X509","banner":"MIIBszCCAVmgAwIBAgIU"}}
{"ip":"198.51.100.8","timestamp":"1764325202","port":443,"proto":"tcp","rec_type":"banner","data":{"service_name":"title","banner":"Admin"}}
"""  # noqa: E501


def test_every_banner_is_kept_in_scripts(tmp_path: Path, dtd: Any) -> None:
    path = tmp_path / "banners.ndjson"
    path.write_text(BANNERS)
    res = pn.read_masscan(path)
    scripts = res.tables["scripts"].select(["port", "phase", "id", "output"]).to_pylist()
    assert scripts == [
        {"port": 80, "phase": "port", "id": "http.server", "output": "nginx/1.22.1"},
        {"port": 80, "phase": "port", "id": "title", "output": "Welcome"},
        {"port": 443, "phase": "port", "id": "X509", "output": "MIIBszCCAVmgAwIBAgIU"},
        {"port": 443, "phase": "port", "id": "title", "output": "Admin"},
    ]
    ports = {r["port"]: r for r in res.tables["ports"].to_pylist()}
    assert (ports[80]["service"], ports[80]["banner"]) == ("http", "nginx/1.22.1")
    assert ports[443]["service"] is None  # X509 names TLS, not the service behind it
    # Written as nmap XML, it says it came from masscan, with no invented command line.
    out = res.to_nmap_xml(tmp_path / "m.xml")
    validate(dtd, out)
    text = out.read_text()
    assert 'version="masscan"' in text and "args=" not in text and "prtip-nb" not in text
    assert "from masscan-json file" in text and str(path) in text
    back = pn.read_nmap_xml(out)
    assert back.tables["scripts"].select(["id", "output"]).to_pylist() == [
        {k: s[k] for k in ("id", "output")} for s in scripts
    ]
    assert back.tables["ports"]["banner"].to_pylist() == res.tables["ports"]["banner"].to_pylist()


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"ip": "198.51.100.9", "ports": [{"proto": "tcp"}]}\n', "line 1"),  # no port
        ('[\n{"ip": "198.51.100.9", "ports": [{"port": "x"}]}\n]\n', "line 2"),
        ('{"ip": "198.51.100.9", "ports": [{"port": 70000}]}\n', "0-65535"),
        ('{"ip": "198.51.100.9", "ports": [5]}\n', "line 1"),  # a port that is a number
        ('{"ip": "198.51.100.9", "ports": 5}\n', "line 1"),
        ("[7]\n", "line 1"),  # a record that is not an object
        ('{"ip": "198.51.100.9", "timestamp": 1e400, "ports": [{"port": 1}]}\n', None),
        ("[" * 100000 + "]" * 100000 + "\n", "deep"),
        ("open tcp 99999 198.51.100.9 1764325200\n", ":1"),  # -oL port out of range
        ("open tcp\n", ":1"),
    ],
)
def test_malformed_input_is_a_clear_error(text: str, where: str | None, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    if where is None:  # an odd timestamp is no time, not an error
        assert pn.read_masscan(path).tables["ports"].num_rows == 1
        return
    with pytest.raises(pn.FileFormatError) as err:
        pn.read_masscan(path)
    assert str(path) in str(err.value) and where in str(err.value)
