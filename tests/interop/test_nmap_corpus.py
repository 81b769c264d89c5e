"""The nmap XML corpus of tests/data/nmap: nothing lost on the way in or out.

The ``*.xml`` files there (except ``odd-*``) are real Debian nmap output from labs of our own
(``generate.py`` says how they were made); ``odd-*`` files are written by hand, one oddity
each. For every file nmap's DTD accepts: the round trip validates, ndiff finds no
difference, re-import gives equal tables, and the XML trees are equal element by element
(only the elements listed in ``NOT_KEPT`` are dropped, by design).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import prtip_nb as pn
from prtip_nb.errors import FileFormatError as NmapXmlError
from prtip_nb.results import schema

from .conftest import DATA, NMAP_DTD

CORPUS = DATA / "nmap"
BAD = ("odd-empty.xml", "odd-no-protocol.xml")  # errors, tested below
VALID = sorted(p.name for p in CORPUS.glob("*.xml") if p.name not in BAD)
#: nmap's progress chatter and previews: what a scan found is elsewhere in the file.
NOT_KEPT = {"taskbegin", "taskend", "taskprogress", "hosthint", "output", "target"}
# Debian's ndiff 7.93 sorts a port's scripts and crashes on two (Python 3 has no __cmp__,
# ndiff.py:1423), even comparing a file with itself; this gives its ScriptResult the order
# its __cmp__ meant, and runs it unchanged otherwise.
NDIFF = """
import sys
sys.path.insert(0, "/usr/lib/python3/dist-packages")
import ndiff
ndiff.ScriptResult.__lt__ = lambda a, b: (a.id, a.output) < (b.id, b.output)
sys.argv = ["ndiff", *sys.argv[1:]]
sys.exit(ndiff.main())
"""


def _dtd_valid(path: Path) -> bool:
    from lxml import etree

    return bool(etree.DTD(str(NMAP_DTD)).validate(etree.parse(str(path))))


def _tree(path: Path) -> list[Any]:
    """Elements as (tag, attributes, text, children), hosts sorted by address, without
    whitespace, comments and NOT_KEPT."""
    from lxml import etree

    def norm(e: Any) -> list[Any]:
        kids = [c for c in e if isinstance(c.tag, str) and c.tag not in NOT_KEPT]
        if e.tag == "nmaprun":
            hosts = sorted((c for c in kids if c.tag == "host"), key=_addr)
            kids = [c for c in kids if c.tag != "host"]
            at = next((i for i, c in enumerate(kids) if c.tag in ("postscript", "runstats")),
                      len(kids))  # fmt: skip
            kids[at:at] = hosts
        return [(c.tag, sorted(c.attrib.items()), (c.text or "").strip(), norm(c)) for c in kids]

    return norm(etree.parse(str(path)).getroot())


def _addr(host: Any) -> str:
    a = host.find("address")
    return "" if a is None else str(a.get("addr"))


def _values(res: pn.ScanResult, name: str, *, fixed: bool = False) -> list[dict[str, Any]]:
    drop = {"scan_id", "source_file", "source_sha256"}
    if fixed:  # what the writer must add to a file the DTD refuses, to make it valid
        drop |= {"elapsed", "addresses"}
    return [{k: v for k, v in row.items() if k not in drop} for row in res.tables[name].to_pylist()]


@pytest.mark.parametrize("name", VALID)
def test_round_trip_keeps_everything(name: str, dtd: Any, tmp_path: Path) -> None:
    original = CORPUS / name
    res = pn.read_nmap_xml(original)
    out = res.to_nmap_xml(tmp_path / name)
    from lxml import etree

    assert dtd.validate(etree.parse(str(out))), dtd.error_log.filter_from_errors()
    back = pn.read_nmap_xml(out)
    valid = _dtd_valid(original)
    for table in schema.TABLES:
        assert _values(back, table, fixed=not valid) == _values(res, table, fixed=not valid)
    if not valid:  # odd-* files nmap would not write: no tree or ndiff to compare with
        return
    assert _tree(out) == _tree(original)
    ndiff = subprocess.run([sys.executable, "-c", NDIFF, str(original), str(out)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ndiff.returncode == 0 and ndiff.stdout == "", ndiff.stdout + ndiff.stderr


def test_scripts_keep_their_structure() -> None:
    res = pn.read_nmap_xml(CORPUS / "scripts.xml")
    scripts = res.scripts
    assert {"ssl-cert", "ssh-hostkey", "http-title", "redis-info"} <= set(scripts["id"])
    assert set(scripts["phase"].astype(str)) == {"port"}
    cert = res.tables["scripts"].filter(pn_is(res.tables["scripts"]["id"], "ssl-cert"))
    elements = {e["key"]: e["value"] for e in cert["elements"][0].as_py()}
    assert elements["subject.commonName"] == "prtip-lab.test"
    assert int(cert["port"][0].as_py()) == 443
    key = res.tables["scripts"].filter(pn_is(res.tables["scripts"]["id"], "ssh-hostkey"))
    keys = [e["key"] for e in key["elements"][0].as_py()]
    assert "1.type" in keys and "1.fingerprint" in keys  # a keyless table is item 1
    # And the TLS columns are still filled from ssl-cert.
    https = res.ports[res.ports["port"] == 443].iloc[0]
    assert https["tls_subject"] == "CN=prtip-lab.test"


def pn_is(col: Any, word: str) -> Any:
    import pyarrow.compute as pc

    return pc.equal(col, word)


def test_os_trace_addresses_and_hostnames() -> None:
    res = pn.read_nmap_xml(CORPUS / "os-trace.xml")
    hosts = res.hosts.set_index("host")
    web = hosts.loc["198.51.100.10"]
    assert [n["type"] for n in web["hostnames"]] == ["user", "PTR"]
    assert web["mac"] is not None and web["distance"] == 1
    assert {a["addrtype"] for a in web["addresses"]} == {"ipv4", "mac"}
    assert hosts.loc["198.51.100.99", "state"] == "down"
    assert len(res.os) > 0 and (res.os["accuracy"] <= 100).all()
    assert web["os_portused"] and web["sequences"]
    hops = res.trace.set_index("host")
    assert hops.loc["203.0.113.5", "probe_port"] == 1
    assert hops.loc["203.0.113.5", "hostname"] == "router.lab.example.test"


def test_extraports_of_any_state_and_reasons() -> None:
    res = pn.read_nmap_xml(CORPUS / "odd-scripts-everywhere.xml")
    host = res.tables["hosts"].to_pylist()[0]
    assert [(e["state"], e["count"]) for e in host["extraports"]] == [
        ("filtered", 990), ("closed", 7)]  # fmt: skip
    assert host["extraports"][0]["reasons"][1]["ports"] == "21,23,80-81"
    phases = res.tables["scripts"].column("phase").to_pylist()
    assert phases == ["pre", "port", "port", "port", "host", "host", "post"]
    ssh = res.ports[res.ports["port"] == 22].iloc[0]
    assert ssh["product"] == "" and list(ssh["cpe"]) == [
        "cpe:/a:openbsd:openssh:9.6p1", "cpe:/o:linux:linux_kernel"]  # fmt: skip
    assert ssh["ostype"] == "Linux" and ssh["method"] == "probed" and ssh["conf"] == 10
    https = res.ports[res.ports["port"] == 443].iloc[0]
    assert (https["service"], https["tunnel"]) == ("http", "ssl")
    assert res.hosts["timedout"].isna().all()
    assert pn.read_nmap_xml(CORPUS / "timedout.xml").hosts["timedout"].iloc[0]


def test_fast_path_and_expat_read_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from prtip_nb.interop import _nmap_parser

    fast = {n: pn.read_nmap_xml(CORPUS / n) for n in VALID}
    monkeypatch.setattr(_nmap_parser, "_declares_utf8", lambda head: False)
    for name, res in fast.items():
        slow = pn.read_nmap_xml(CORPUS / name)
        for table in schema.TABLES:
            assert _values(slow, table) == _values(res, table), (name, table)


def test_nmap4_file_has_no_invented_reason() -> None:
    res = pn.read_nmap_xml(CORPUS / "odd-nmap4-noreason.xml")
    assert res.tables["ports"]["reason"].null_count == 3
    assert res.tables["hosts"]["reason"].to_pylist() == [None]


def test_host_without_address_is_named_by_its_hostname(tmp_path: Path) -> None:
    res = pn.read_nmap_xml(CORPUS / "odd-no-address.xml")
    assert res.ports["host"].tolist() == ["www.example.test"]
    assert res.hosts["host"].tolist() == ["www.example.test"]


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("odd-no-protocol.xml", ["odd-no-protocol.xml", "line 8", "protocol"]),
        ("odd-empty.xml", ["odd-empty.xml", "empty"]),
    ],
)
def test_bad_files_say_file_and_line(name: str, words: list[str]) -> None:
    with pytest.raises(NmapXmlError) as err:
        pn.read_nmap_xml(CORPUS / name)
    for word in words:
        assert word in str(err.value)


HEAD = (
    '<?xml version="1.0"?>\n<nmaprun scanner="nmap" args="nmap x" start="1764325200" '
    'version="7.94" xmloutputversion="1.05">\n<host><status state="up" reason="r"/>\n'
)
PORT = '<port protocol="tcp" portid="{p}"><state state="open" reason="r" reason_ttl="{t}"/></port>'


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('<address addr="198.51.100.5"/><ports>' + PORT.format(p="x", t=1), ["'x'/tcp"]),
        ('<address addr="198.51.100.5"/><ports>' + PORT.format(p=70000, t=1), ["70000"]),
        ('<address addr="198.51.100.5"/><ports><port protocol="tcp" portid="1"/>', ["<state"]),
        ("<ports>" + PORT.format(p=1, t=1), ["line 4", "neither an <address>"]),
        ('<address addr="198.51.100.5"/><ports><port protocol="tcp" portid="1"><state '
         'state="open" reason="r" reason_ttl="1"/><script id="x" output="">'
         + "<table>" * 200, ["nested more than 64"]),  # fmt: skip
        ("<address/>", ["line 4", "addr"]),
        ('<address addr="198.51.100.5"/><ports><extraports state="closed" count="many"/>',
         ["count"]),  # fmt: skip
        ("<ports", ["not well-formed"]),
    ],
)
def test_malformed_nmap_xml_is_a_clear_error(body: str, words: list[str], tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    # Well-formed unless the case is about that: close what the body opened.
    tail = "" if body.endswith("<ports") or "<table>" in body else "</ports></host>"
    path.write_text(HEAD + body + tail + "\n</nmaprun>\n")
    with pytest.raises(NmapXmlError) as err:
        pn.read_nmap_xml(path)
    assert str(path) in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_reason_ttl_out_of_range_is_no_ttl(tmp_path: Path) -> None:
    path = tmp_path / "ttl.xml"
    body = '<address addr="198.51.100.5"/><ports>' + PORT.format(p=1, t=999)
    path.write_text(HEAD + body + "</ports></host>\n</nmaprun>\n")
    assert pn.read_nmap_xml(path).tables["ports"]["ttl"].to_pylist() == [None]


def test_inventory_view_and_html_report(tmp_path: Path) -> None:
    res = pn.read_nmap_xml(CORPUS / "a-localhost.xml")
    inv = res.inventory().set_index("port")
    assert inv.loc[443, "service"] == "ssl/http"  # as nmap prints it
    assert "ssl-cert" in list(inv.loc[443, "scripts"])
    assert inv.loc[22, "os"] == res.os["name"].iloc[0]  # the host's best match
    assert list(inv.loc[80, "cpe"]) == ["cpe:/a:igor_sysoev:nginx:1.22.1"]
    out = pn.report(res, tmp_path / "r.html", with_charts=False).read_text()
    assert "<h2>Scripts (" in out and "Operating systems" in out and "ssh-hostkey" in out


@pytest.mark.parametrize("tail", ["", '<script id="x" output="y"/>'])
def test_large_section_read_in_slices_equals_expat(
    tail: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A <ports> section longer than a slice is read by regex a slice at a time; a decline in
    its last slice (a script) leaves nothing of the earlier slices behind."""
    from prtip_nb.interop import _nmap_parser

    ports = "".join(
        f'<port protocol="tcp" portid="{p}"><state state="closed" reason="reset" '
        f'reason_ttl="64"/><service name="s{p % 7}" method="table" conf="3"/></port>\n'
        for p in range(1, 400)
    )
    last = ('<port protocol="udp" portid="53"><state state="open" reason="udp-response" '
            f'reason_ttl="64"/>{tail}</port>\n')  # fmt: skip
    path = tmp_path / "big.xml"
    path.write_text(HEAD + '<address addr="198.51.100.4"/><ports><extraports state="filtered" '
                    'count="5"/>' + ports + last + "</ports></host>\n</nmaprun>\n")  # fmt: skip
    monkeypatch.setattr(_nmap_parser, "_SLICE_CHARS", 2000)  # ~40 slices
    sliced = pn.read_nmap_xml(path)
    monkeypatch.setattr(_nmap_parser, "_declares_utf8", lambda head: False)
    slow = pn.read_nmap_xml(path)
    assert sliced.tables["ports"].num_rows == 400
    for table in schema.TABLES:
        assert _values(sliced, table) == _values(slow, table), table
    assert sliced.tables["hosts"]["extraports"].to_pylist() == [
        [{"state": "filtered", "count": 5, "reasons": []}]]  # fmt: skip
