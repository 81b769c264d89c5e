"""Reverse DNS against nmap on a dnsmasq lab (prtip_nb.lab.dnslab), and the DNS codec.

The lab serves 198.51.100.0/24 from 198.51.100.2: host records (PTR + A), PTR-only names,
PTR names whose A is another address, NXDOMAIN, and queries dropped on the way (timeouts).
nmap's names for the same addresses, in the same run, are the reference.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prtip_nb.probes import dns
from tests.conftest import need, need_range_lab


# -- the codec (pure: no sockets) ------------------------------------------------------------
def _reply(qid: int, qname: str, qtype: int, answers: bytes, count: int, rcode: int = 0) -> bytes:
    query = dns.build_query(qid, qname, qtype)
    head = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, count, 0, 0)
    return head + query[12:] + answers


def test_codec_ptr_reply_with_compression_and_cname() -> None:
    qname = dns.reverse_name("198.51.100.7")
    assert qname == "7.100.51.198.in-addr.arpa"  # parse-only
    assert dns.address_of_reverse(qname) == "198.51.100.7"
    assert dns.address_of_reverse(dns.reverse_name("2001:db8::10")) == "2001:db8::10"
    # CNAME 7.100.51.198.in-addr.arpa -> 7.0-25.100.51.198.in-addr.arpa (RFC 2317  # parse-only
    # delegation), then the PTR of that; both names compressed with pointers.
    qlen = len(dns.build_query(1, qname, dns.PTR))  # header + question: answers start here
    target = b"\x017\x040-25\xc0\x0e"  # "7.0-25." + pointer to "100.51.198.in-addr.arpa"
    cname = b"\xc0\x0c" + struct.pack("!HHIH", dns.CNAME, 1, 60, len(target)) + target
    ptr_name = b"\x02h7\x03lab\x04test\x00"
    ptr = struct.pack("!H", 0xC000 | (qlen + 12)) + struct.pack(
        "!HHIH", dns.PTR, 1, 300, len(ptr_name)) + ptr_name
    data = _reply(0x1234, qname, dns.PTR, cname + ptr, 2)
    reply = dns.parse_reply(data)
    assert reply is not None and reply.qid == 0x1234 and reply.rcode == dns.NOERROR
    assert reply.answers[0][1] == dns.CNAME
    assert reply.ptr_name() == "h7.lab.test"
    assert reply.min_ttl() == 60


def test_codec_rejects_loops_and_garbage() -> None:
    qname = dns.reverse_name("198.51.100.9")
    qlen = len(dns.build_query(7, qname, dns.PTR))
    self_ptr = struct.pack("!H", 0xC000 | qlen)  # the answer's name points at itself
    data = _reply(7, qname, dns.PTR, self_ptr + struct.pack("!HHIH", dns.PTR, 1, 1, 2)
                  + self_ptr, 1)
    assert dns.parse_reply(data) is None
    assert dns.parse_reply(b"") is None
    assert dns.parse_reply(dns.build_query(1, qname, dns.PTR)) is None  # a query, not a reply
    nx = dns.parse_reply(_reply(9, qname, dns.PTR, b"", 0, rcode=dns.NXDOMAIN))
    assert nx is not None and nx.rcode == dns.NXDOMAIN and nx.ptr_name() is None
    with pytest.raises(ValueError):
        dns.build_query(1, "a" * 64 + ".test", dns.A)


def test_resolv_conf_and_server_checks(tmp_path: Path) -> None:
    from prtip_nb.errors import ConfigError
    from prtip_nb.net.rdns import check_servers, read_resolv_conf

    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch lab.test\nnameserver 198.51.100.53\n"
                    "  nameserver 2001:db8::53 # v6\nnameserver bogus\nnameserver 198.51.100.53\n")
    assert read_resolv_conf(str(conf)) == ["198.51.100.53", "2001:db8::53"]
    assert read_resolv_conf(str(tmp_path / "none")) == []
    assert check_servers(["198.51.100.2, 198.51.100.3"]) == ("198.51.100.2", "198.51.100.3")
    with pytest.raises(ConfigError, match="not an IP address"):
        check_servers(["dns.example"])
    import prtip_nb as pn

    with pytest.raises(pn.ConfigError, match="resolve must be one of"):
        pn.ScanConfig(targets=("198.51.100.1",), resolve="sometimes")
    assert pn.ScanConfig(targets=("198.51.100.1",), resolve=False).resolve == "never"


# -- the lab ---------------------------------------------------------------------------------
def _need_lab() -> None:
    need_range_lab()
    need(shutil.which("dnsmasq") is not None, "needs dnsmasq (apt-get install dnsmasq)")
    need(shutil.which("nmap") is not None, "needs nmap")


def _xml_names(text: str) -> dict[str, str]:
    """address -> PTR name of an nmap XML file (ours or nmap's)."""
    out = {}
    for block in re.findall(r"<host\b.*?</host>", text, re.S):
        addr = re.search(r'<address addr="([^"]+)" addrtype="ipv[46]"', block)
        name = re.search(r'<hostname name="([^"]+)" type="PTR"', block)
        if addr and name:
            out[addr.group(1)] = name.group(1)
    return out


def _nmap(args: list[str], out: dict[str, str]) -> None:
    done = subprocess.run(["nmap", *args, "-oX", "-"], capture_output=True, text=True,
                          timeout=120)
    out["xml"] = done.stdout


@pytest.fixture(scope="module")
def dnslab() -> Iterator[object]:
    _need_lab()
    from prtip_nb.lab.dnslab import DnsLab

    with DnsLab(up=["198.51.100.10", "198.51.100.33", "198.51.100.55", "198.51.100.4"],
                tcp=[80]) as lab:
        yield lab


def test_list_scan_names_equal_nmaps(dnslab: object, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """-sL over the /24 (every kind of answer, timeouts included): our names, nmap's names
    and the lab's truth agree address by address; forward confirmation is flagged."""
    from prtip_nb.cli import main
    from prtip_nb.lab.dnslab import DnsLab
    from prtip_nb.net.rdns import clear_cache

    lab = dnslab
    assert isinstance(lab, DnsLab)
    clear_cache()
    theirs: dict[str, str] = {}
    # Side by side: each waits out the dropped queries (nmap's 4 + 4 + 5 s) once.
    t = threading.Thread(target=_nmap, args=(["-sL", "-R", "--dns-servers", lab.server,
                                              "198.51.100.0/24"], theirs))
    t.start()
    xml = tmp_path / "ours.xml"
    rc = main(["scan", "-sL", "--dns-servers", lab.server, "-oX", str(xml), "-o",
               str(tmp_path / "ds"), "198.51.100.0/24"])
    t.join(150)
    assert rc == 0
    text = capsys.readouterr().out
    ours, nmaps = _xml_names(xml.read_text()), _xml_names(theirs["xml"])
    truth = {a: v[0] for a, v in lab.expected().items() if v[0] is not None and "." in a}
    assert nmaps == truth, "the lab is not what nmap sees"
    assert ours == nmaps
    assert "Scan report for h7.lab.test (198.51.100.7)" in text
    assert "Scan report for 198.51.100.5\n" in text  # NXDOMAIN: the address alone
    import prtip_nb as pn

    res = pn.read_scans(str(tmp_path / "ds"))
    hosts = res.tables["hosts"].to_pylist()
    assert len(hosts) == 256
    flags = {h["host"]: h["hostnames"][0]["confirmed"] for h in hosts if h["hostnames"]}
    for addr, (name, confirmed) in lab.expected().items():
        if name is not None and "." in addr:
            assert flags[addr] is confirmed, addr
    ev = [e for e in res.tables["events"].to_pylist() if e["kind"] == "ReverseDns"]
    assert len(ev) == 1 and '"timeout": 3' in ev[0]["payload"]


def test_lean_list_scan_skips_confirmation_without_spoiling_the_cache(
        dnslab: object, capsys: pytest.CaptureFixture[str]) -> None:
    """-sL with no output file prints the same names without the forward lookups (nothing
    shows ``confirmed``); a confirming lookup after it is not served those entries."""
    from prtip_nb.cli import main
    from prtip_nb.lab.dnslab import DnsLab
    from prtip_nb.net.rdns import clear_cache, resolve_names

    lab = dnslab
    assert isinstance(lab, DnsLab)
    clear_cache()
    spec = "198.51.100.0/28"
    assert main(["scan", "-sL", "--dns-servers", lab.server, spec]) == 0
    text = capsys.readouterr().out
    assert "Scan report for h7.lab.test (198.51.100.7)" in text
    assert "Scan report for 198.51.100.5\n" in text
    found = resolve_names([f"198.51.100.{n}" for n in range(16)], [lab.server])
    truth = lab.expected()
    for addr, h in found.items():
        name, confirmed = truth[addr]
        if name is not None:
            assert (h.name, h.confirmed) == (name, confirmed), addr
            assert f"Scan report for {name} ({addr})" in text


def test_scan_names_hosts_up_like_nmap(dnslab: object) -> None:
    """A scan names the hosts that are up (nmap -sn's names); -n names none; -R names all;
    IPv6 reverse names come from ip6.arpa."""
    import prtip_nb as pn
    from prtip_nb.lab.dnslab import DnsLab
    from prtip_nb.net.rdns import clear_cache

    lab = dnslab
    assert isinstance(lab, DnsLab)
    clear_cache()
    targets = "198.51.100.8-12,198.51.100.33,198.51.100.4,198.51.100.55"
    theirs: dict[str, str] = {}
    _nmap(["-sn", "--dns-servers", lab.server,
           *targets.split(",")], theirs)
    res = pn.scan(targets.split(","), ports="80", method="syn", dns_servers=[lab.server],
                  discover=True)
    hosts = {h["host"]: h for h in res.tables["hosts"].to_pylist()}
    ours = {a: h["hostname"] for a, h in hosts.items() if h["hostname"]}
    assert ours == _xml_names(theirs["xml"]) == {"198.51.100.10": "h10.lab.test",
                                                 "198.51.100.33": "h33.lab.test",
                                                 "198.51.100.4": "h4.lab.test"}
    assert hosts["198.51.100.10"]["hostnames"] == [
        {"name": "h10.lab.test", "type": "PTR", "confirmed": True}]
    assert hosts["198.51.100.33"]["hostnames"][0]["confirmed"] is False  # PTR, no A
    assert hosts["198.51.100.4"]["hostnames"][0]["confirmed"] is False  # A is .5
    none = pn.scan(["198.51.100.10"], ports="80", method="syn", resolve="never",
                   dns_servers=[lab.server])
    assert none.tables["hosts"]["hostname"].to_pylist() == [None]
    every = pn.discover("198.51.100.8-9", resolve="all", dns_servers=[lab.server])
    assert sorted(every.tables["hosts"]["hostname"].to_pylist()) == ["h8.lab.test",
                                                                      "h9.lab.test"]
    from prtip_nb.net.rdns import resolve_names

    again = resolve_names(["198.51.100.10", "198.51.100.55"], [lab.server])
    assert again["198.51.100.10"].cached and again["198.51.100.10"].name == "h10.lab.test"
    assert again["198.51.100.55"].cached and again["198.51.100.55"].status == "nxdomain"
    # No route to the server (198.18/15 is not wired here): at once, and not cached.
    lost = resolve_names(["198.51.100.10"], ["198.18.255.53"])["198.51.100.10"]
    assert (lost.status, lost.cached) == ("unreachable", False)
    six = pn.discover("2001:db8::2", dns_servers=[lab.server])  # the gateway: up
    assert six.tables["hosts"]["hostname"].to_pylist() == ["gw6.lab.test"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_codec_never_raises_on_hostile_bytes(data: bytes) -> None:
    """Whatever arrives on the DNS socket: a Reply or None, never an exception."""
    reply = dns.parse_reply(data)
    if reply is not None:
        reply.ptr_name()
        reply.addresses()
    # The same bytes behind a valid header and question (so the answer parser runs).
    q = dns.build_query(1, "9.100.51.198.in-addr.arpa", dns.PTR)  # parse-only
    head = struct.pack("!HHHHHH", 1, 0x8180, 1, 3, 0, 0)
    framed = dns.parse_reply(head + q[12:] + data)
    if framed is not None:
        framed.ptr_name()
