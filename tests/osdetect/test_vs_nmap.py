"""-O against nmap -O on the same lab, in the same test: hosts with different stacks.

Each StackLab host is its own Linux stack (its own namespace and sysctls; two drop ICMP
echoes or UDP). Both tools fingerprint all of them; the lines that do not depend on timing
(OPS, WIN, ECN, T1-T7, U1, IE) must be equal, and so must the matches: our best match is
nmap's (or ties with it within 2 points), its accuracy within 2 points, and every OS both
list has the same classes (vendor, family, generation, type, CPEs).
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from prtip_nb.osdetect.fingerprint import parse_fingerprint
from tests.conftest import in_netns, need

STABLE = ("OPS", "WIN", "ECN", "T1", "T2", "T3", "T4", "T5", "T6", "T7", "U1", "IE")


def _lab_hosts():
    from prtip_nb.lab.stacks import DROP_ICMP, DROP_UDP, StackHost

    return [
        StackHost(label="default"),
        StackHost({"net.ipv4.tcp_timestamps": "0", "net.ipv4.ip_default_ttl": "128"},
                  label="no timestamps, ttl 128"),
        StackHost(nft=DROP_ICMP, label="drops ICMP echo"),
        StackHost({"net.ipv4.tcp_window_scaling": "0", "net.ipv4.tcp_sack": "0"},
                  label="no window scaling, no SACK"),
        StackHost({"net.ipv4.tcp_ecn": "0"}, nft=DROP_UDP, label="no ECN, drops UDP"),
        StackHost({"net.ipv4.tcp_rmem": "4096 8192 16384", "net.ipv4.ip_default_ttl": "255"},
                  label="small receive buffer, ttl 255"),
    ]


def _classes(classes):
    return sorted((c.get("type"), c.get("vendor"), c.get("family"), c.get("generation"),
                   tuple(c.get("cpe") or ())) for c in classes)


def _nmap_os(path):
    out = {}
    for h in ET.parse(path).getroot().iter("host"):
        addr = h.find("address").get("addr")
        os_ = h.find("os")
        fp = os_.find("osfingerprint")
        matches = [{"name": m.get("name"), "accuracy": int(m.get("accuracy")),
                    "classes": [{"type": c.get("type"), "vendor": c.get("vendor"),
                                 "family": c.get("osfamily"), "generation": c.get("osgen"),
                                 "cpe": [x.text for x in c.iter("cpe")]}
                                for c in m.iter("osclass")]}
                   for m in os_.iter("osmatch")]
        out[addr] = (parse_fingerprint(fp.get("fingerprint")) if fp is not None else {},
                     matches)
    return out


def test_os_detection_equals_nmap(tmp_path):
    need(in_netns(), "needs a private network namespace: run under scripts/in-netns")
    import os

    need(os.geteuid() == 0, "needs root (raw sockets)")
    need(shutil.which("nmap") is not None, "needs nmap (the reference, and its nmap-os-db)")
    need(all(shutil.which(t) for t in ("nsenter", "unshare", "nft")),
         "needs nsenter, unshare and nft")
    import prtip_nb as pn
    from prtip_nb.lab.stacks import StackLab

    hosts = _lab_hosts()
    with StackLab(hosts, tcp=[22]) as lab:
        res = pn.scan(lab.addresses, "22,80", method="syn", os=True,
                      output=str(tmp_path / "scans"))
        xml = tmp_path / "nmap.xml"
        # One OS try, as ours: nmap repeats up to 5 when no match is perfect (every modern
        # Linux here), which cost 10 s and changed no line or match in any run (os-10 times it).
        subprocess.run(["nmap", "-n", "-Pn", "-sS", "-p22,80", "-O", "--max-os-tries", "1", "-d",
                        "-oX", str(xml),
                        *lab.addresses], check=True, capture_output=True, timeout=120)
    theirs = _nmap_os(xml)
    ours_hosts = {h["host"]: h for h in res.tables["hosts"].to_pylist()}
    ours_os: dict[str, list] = {}
    for row in res.tables["os"].to_pylist():
        ours_os.setdefault(row["host"], []).append(row)
    for addr, spec in zip(lab.addresses, hosts, strict=True):
        nfp, nmatches = theirs[addr]
        ofp = parse_fingerprint(ours_hosts[addr]["os_fingerprint"][0])
        for line in STABLE:
            assert ofp.get(line) == nfp.get(line), (spec.label, line, ofp.get(line),
                                                    nfp.get(line))
        assert ours_hosts[addr]["distance"] == 1
        omatches = ours_os.get(addr, [])
        assert bool(omatches) == bool(nmatches), spec.label
        if not nmatches:
            continue
        top = nmatches[0]["accuracy"]
        near = {m["name"] for m in nmatches if m["accuracy"] >= top - 2}
        assert omatches[0]["name"] in near, (spec.label, omatches[0]["name"], nmatches[:3])
        assert abs(omatches[0]["accuracy"] - top) <= 2, (spec.label, omatches[0], top)
        by_name = {m["name"]: m for m in nmatches}
        both = [m for m in omatches if m["name"] in by_name]
        assert len(both) >= len(omatches) // 2, (spec.label, omatches, nmatches)
        for m in both:
            assert _classes(m["classes"]) == _classes(by_name[m["name"]]["classes"]), m["name"]
    # Saved and read back, and written as nmap XML: the same os rows, read as nmap's are.
    back = pn.read_scans(tmp_path / "scans", scan_id=res.scan_id)
    assert back.tables["os"].drop(["scan_id"]).to_pylist() == \
        res.tables["os"].drop(["scan_id"]).to_pylist()
    ours_xml = _nmap_os(res.to_nmap_xml(tmp_path / "ours.xml"))
    for addr in lab.addresses:
        assert ours_xml[addr][1] == [
            {"name": m["name"], "accuracy": m["accuracy"],
             "classes": [{k: c[k] for k in ("type", "vendor", "family", "generation", "cpe")}
                         for c in m["classes"]]}
            for m in ours_os.get(addr, [])]
        assert {k: v for k, v in ours_xml[addr][0].items() if k in STABLE} == \
            {k: v for k, v in theirs[addr][0].items() if k in STABLE}
    # The stacks differ, and the fingerprints tell them apart.
    prints = {str({k: v for k, v in parse_fingerprint(ours_hosts[a]["os_fingerprint"][0])
                   .items() if k in STABLE}) for a in lab.addresses}
    assert len(prints) == len(hosts)


@pytest.mark.parametrize("limit", [True, False])
def test_osscan_limit_skips_hosts_without_closed_port(limit):
    need(in_netns(), "needs a private network namespace: run under scripts/in-netns")
    import os

    need(os.geteuid() == 0, "needs root (raw sockets)")
    need(shutil.which("nmap") is not None, "needs nmap's nmap-os-db")
    need(all(shutil.which(t) for t in ("nsenter", "unshare")), "needs nsenter and unshare")
    import prtip_nb as pn
    from prtip_nb.lab.stacks import StackHost, StackLab

    with StackLab([StackHost()], tcp=[22]) as lab:
        # Only the open port is scanned: no closed TCP port is known.
        res = pn.scan(lab.addresses, "22", method="syn", os=True, osscan_limit=limit)
    hosts = res.tables["hosts"].to_pylist()
    if limit:
        assert res.tables["os"].num_rows == 0 and hosts[0]["os_fingerprint"] is None
    else:
        fp = hosts[0]["os_fingerprint"][0].replace("\nOS:", "")
        assert "%G=N%" in fp  # nmap's "not a good fingerprint": no closed port was found
        assert res.tables["os"].num_rows > 0
        warnings = res.events[res.events["kind"] == "ScanWarning"]
        assert warnings["payload"].str.contains("may not be reliable").any()


def test_passive_guess_from_reply_ttls():
    """Without -O: the initial TTL each lab stack uses, read off the scan's own replies."""
    need(in_netns(), "needs a private network namespace: run under scripts/in-netns")
    import os

    need(os.geteuid() == 0, "needs root (raw sockets)")
    need(all(shutil.which(t) for t in ("nsenter", "unshare")), "needs nsenter and unshare")
    import prtip_nb as pn
    from prtip_nb.lab.stacks import StackHost, StackLab
    from prtip_nb.osdetect.passive import passive_guess

    ttls = ["64", "128", "255", "32"]
    hosts = [StackHost({"net.ipv4.ip_default_ttl": t}) for t in ttls]
    with StackLab(hosts, tcp=[22]) as lab:
        res = pn.scan(lab.addresses, "22,80", method="syn")
    got = passive_guess(res.tables["ports"]).to_pylist()
    assert [r["host"] for r in got] == lab.addresses
    assert [r["initial_ttl"] for r in got] == [int(t) for t in ttls]
    assert all(r["hops"] == 1 for r in got)
    assert got[1]["guess"] == "Windows" and got[0]["guess"].startswith("Linux")


def test_host_without_open_port_as_nmap():
    """No open port: the open-port probes are not sent, their lines are absent (not R=N),
    and a fingerprint that thin matches too many entries: no match, as nmap says."""
    need(in_netns(), "needs a private network namespace: run under scripts/in-netns")
    import os

    need(os.geteuid() == 0, "needs root (raw sockets)")
    need(shutil.which("nmap") is not None, "needs nmap (the reference, and its nmap-os-db)")
    need(all(shutil.which(t) for t in ("nsenter", "unshare")), "needs nsenter and unshare")
    import tempfile

    import prtip_nb as pn
    from prtip_nb.lab.stacks import StackHost, StackLab

    with tempfile.TemporaryDirectory() as tmp, StackLab([StackHost()], tcp=[]) as lab:
        res = pn.scan(lab.addresses, "22,80", method="syn", os=True)
        xml = f"{tmp}/nmap.xml"
        subprocess.run(["nmap", "-n", "-Pn", "-sS", "-p22,80", "-O", "-d", "-oX", xml,
                        *lab.addresses], check=True, capture_output=True, timeout=120)
        nfp, nmatches = _nmap_os(xml)[lab.addresses[0]]
    ofp = parse_fingerprint(res.tables["hosts"]["os_fingerprint"][0].as_py()[0])
    assert {k: v for k, v in ofp.items() if k != "SEQ"} == \
        {k: v for k, v in nfp.items() if k != "SEQ"}
    assert "T1" not in ofp and "ECN" not in ofp
    assert res.tables["os"].num_rows == len(nmatches) == 0
