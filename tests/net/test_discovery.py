"""Host discovery (``pn.discover``, ``prtip-nb scan -sn``) on a veth lab of several hosts,
IPv4 and IPv6, against ``nmap -sn`` on the same lab in the same test, host by host.

The lab (prtip_nb.lab.veth): on-link hosts up, one of them firewalled against every IP
packet (ARP / NDP still answer: up, as nmap says); routed hosts that answer every probe,
only SYN to 443, only ACK to 80, only the ICMP timestamp, or nothing at all (down); the
rest of each prefix does not exist (down).
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

import prtip_nb as pn
from prtip_nb.lab.veth import VethLab, host
from tests.conftest import need

pytestmark = pytest.mark.usefixtures("netns", "root")

ON4 = [host("onlink", n) for n in (10, 11, 12, 13)]
ON6 = [host("onlink", n, 6) for n in (10, 11, 12)]
R4 = {n: host("routed", n) for n in (5, 6, 7, 8, 9)}
R6 = {n: host("routed", n, 6) for n in (5, 6, 7, 9)}
TARGETS4 = ["198.51.100.0/28", "203.0.113.0/28"]
TARGETS6 = ["2001:db8::/124", "2001:db8:1::/124"]
# Hosts whose answer can only come from one probe: nmap's reason and ours must agree
# exactly. The others (every probe answered) agree on "up", and the reason is one of them.
ANY_REASON = {R4[5], R6[5]}


def _rules() -> str:
    r4, r6 = R4, R6
    lines = [
        f"ip daddr {ON4[3]} drop",  # every IP packet; ARP still answers
        f"ip6 daddr {ON6[2]} meta l4proto tcp drop",  # NDP must still answer
        f"ip6 daddr {ON6[2]} icmpv6 type echo-request drop",
        f"ip daddr {r4[6]} tcp dport != 443 drop", f"ip daddr {r4[6]} meta l4proto icmp drop",
        f"ip daddr {r4[7]} drop",
        f"ip daddr {r4[8]} icmp type != timestamp-request drop",
        f"ip daddr {r4[8]} meta l4proto tcp drop",
        f"ip daddr {r4[9]} tcp dport != 80 drop", f"ip daddr {r4[9]} meta l4proto icmp drop",
        f"ip6 daddr {r6[6]} tcp dport != 443 drop",
        f"ip6 daddr {r6[6]} icmpv6 type echo-request drop",
        f"ip6 daddr {r6[7]} meta l4proto {{ icmpv6, tcp }} drop",
        f"ip6 daddr {r6[9]} tcp dport != 80 drop",
        f"ip6 daddr {r6[9]} icmpv6 type echo-request drop",
    ]
    body = "\n    ".join(lines)
    return (f"table inet disc {{\n  chain input {{\n    type filter hook input priority 0;\n"
            f"    {body}\n  }}\n}}\n")


@pytest.fixture(scope="module")
def lab() -> Iterator[VethLab]:
    need(shutil.which("nft") is not None and shutil.which("nsenter") is not None,
         "needs nftables and nsenter")
    with VethLab(up=ON4 + ON6, routed_up=list(R4.values()) + list(R6.values()),
                 tcp=[443]) as lab:
        lab.nft(_rules())
        yield lab


def nmap_hosts(nmap: str, targets: list[str]) -> dict[str, tuple[str, str]]:
    """{address: (state, reason)} for every target, from ``nmap -sn -v -oX -``."""
    six = ["-6"] if ":" in targets[0] else []
    done = subprocess.run([nmap, "-sn", "-n", "-v", "-oX", "-", *six, *targets],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = {}
    for h in ET.fromstring(done.stdout).iter("host"):
        status = h.find("status")
        assert status is not None
        for a in h.iter("address"):
            if a.get("addrtype") in ("ipv4", "ipv6"):
                out[a.get("addr", "")] = (status.get("state", ""), status.get("reason", ""))
    return out


def ours(targets: list[str]) -> dict[str, tuple[str, str]]:
    df = pn.discover(targets).hosts
    return {h: (s, r) for h, s, r in zip(df["host"], df["state"], df["reason"], strict=True)}


@pytest.mark.parametrize("targets", [TARGETS4, TARGETS6], ids=["ipv4", "ipv6"])
def test_discover_equals_nmap_host_by_host(lab: VethLab, nmap: str,
                                           targets: list[str]) -> None:
    mine = ours(targets)
    theirs = nmap_hosts(nmap, targets)
    assert set(mine) == set(theirs), "both must report every target"
    for addr, (state, reason) in theirs.items():
        assert mine[addr][0] == state, f"{addr}: ours {mine[addr]}, nmap {(state, reason)}"
        if state == "up" and addr not in ANY_REASON:
            assert mine[addr][1] == reason, f"{addr}: ours {mine[addr]}, nmap {reason}"
    up = {a for a, (s, _r) in mine.items() if s == "up"}
    fam = 6 if ":" in targets[0] else 4
    want = {a for a in lab.up_hosts if (":" in a) == (fam == 6)} - {R4[7], R6[7]}
    want.add("2001:db8::1" if fam == 6 else "198.51.100.1")  # the scanner itself
    assert up == want


def test_discover_reasons_and_rtt(lab: VethLab) -> None:
    # .255 is the subnet's broadcast address: bind() would take it, yet it is no host.
    res = pn.discover([ON4[0], R4[6], R4[8], R4[9], R4[7], "198.51.100.200", R6[9],
                       "198.51.100.255"])
    df = res.hosts.set_index("host")
    assert df.loc[ON4[0], "reason"] == "arp-response"
    assert df.loc[R4[6], "reason"] == "syn-ack"
    assert df.loc[R4[8], "reason"] == "timestamp-reply"
    assert df.loc[R4[9], "reason"] == "reset"
    assert df.loc[R6[9], "reason"] == "reset"
    down = [R4[7], "198.51.100.200", "198.51.100.255"]
    assert (df.loc[down, "state"] == "down").all()
    assert (df.loc[down, "reason"] == "no-response").all()
    up = df[df["state"] == "up"]
    assert (up["rtt_ms"] > 0).all() and (up["rtt_ms"] < 1000).all()
    assert str(df["state"].dtype).startswith("dictionary")
    assert str(df["rtt_ms"].dtype) == "float[pyarrow]"


def test_discover_writes_a_dataset(lab: VethLab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = pn.discover(TARGETS4[0], output=str(tmp_path))
    back = pn.read_scans(tmp_path, scan_id=res.scan_id)
    assert back.hosts["host"].tolist() == res.hosts["host"].tolist()
    assert back.hosts["state"].astype(str).tolist() == res.hosts["state"].astype(str).tolist()
    assert back.ports.empty


def test_stale_neighbour_entry_does_not_make_a_host_up(lab: VethLab) -> None:
    """A host that answered ARP once and then left must be down (nmap asks afresh)."""
    gone = "198.51.100.77"
    lab.target("ip", "addr", "add", f"{gone}/32", "dev", lab.theirs)
    try:
        assert pn.discover(gone).hosts["state"].tolist() == ["up"]
    finally:
        lab.target("ip", "addr", "del", f"{gone}/32", "dev", lab.theirs)
    res = pn.discover(gone).hosts
    assert res["state"].tolist() == ["down"], res


def test_cli_ping_sweep_prints_up_hosts(lab: VethLab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import contextlib
    import io

    from prtip_nb.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["scan", "-sn", "198.51.100.8-15", R4[6], "-o", str(tmp_path)])
    out = buf.getvalue()
    assert code == 0, out
    for a in (*ON4, R4[6]):
        assert f"Scan report for {a}\n" in out
    assert "198.51.100.9\n" not in out
    assert "9 IP addresses (5 hosts up)" in out
    stored = pn.read_scans(tmp_path).hosts
    assert len(stored) == 9 and (stored["state"] == "up").sum() == 5


def test_cli_port_scan_discovers_first_unless_pn(lab: VethLab) -> None:
    """nmap's default: ports are scanned on the hosts found up; -Pn scans every target."""
    import contextlib
    import io

    from prtip_nb.cli import main

    def run(*extra: str) -> str:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["scan", "-sS", "-p", "443", "-T4", "--max-retries", "0",
                         "--no-progress", *extra, "203.0.113.4-7"]) == 0
        return buf.getvalue()

    found = run()
    assert f"Scan report for {R4[5]}\n" in found and f"Scan report for {R4[6]}\n" in found
    assert "Scan report for 203.0.113.4\n" not in found  # down: not port-scanned
    assert "Done: 2 host(s)" in found
    every = run("-Pn")
    assert "Done: 4 host(s)" in every


def test_without_privileges_discovery_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    from prtip_nb.engine import discovery

    monkeypatch.setattr(discovery, "is_privileged", lambda: False)
    with pytest.raises(pn.PrivilegeError, match="cap_net_raw.*-Pn"):
        discovery.discover("198.51.100.0/28")
    # Own addresses need no probe, hence no privilege.
    assert discovery.discover("127.0.0.1").hosts["reason"].tolist() == ["localhost-response"]


def test_scan_with_discover_scans_only_the_hosts_up(lab: VethLab) -> None:
    res = pn.scan("203.0.113.4-7", ports="443", method="syn", timing=4, max_retries=0,
                  discover=True)
    assert sorted(res.ports["host"].unique().tolist()) == [R4[5], R4[6]]
    assert set(res.ports["state"].astype(str)) == {"open"}
    none_up = pn.scan(R4[7], ports="443", method="syn", discover=True)
    assert none_up.ports.empty
    assert none_up.hosts[["state", "reason"]].astype(str).values.tolist() == [
        ["down", "no-response"]]
    # Default: no discovery, every target scanned (today's behaviour).
    every = pn.scan("203.0.113.4-7", ports="443", method="syn", timing=4, max_retries=0)
    assert every.ports["host"].nunique() == 4


def test_discover_then_is_the_one_rule_for_python_and_the_cli(lab: VethLab) -> None:
    """pn.scan(discover=True) and the CLI without -Pn both go through discover_then: the
    hosts up become the targets, named; a shard or a split scan, loopback, or
    discover=False scan every target as given (nothing is sent for them)."""
    from prtip_nb.engine.discovery import DISCOVER_BY_DEFAULT, discover_then

    opts = {"timing": 4, "max_retries": 0, "resolve": "up", "exclude": ("203.0.113.9",)}
    todo = discover_then("203.0.113.4-7", opts, discover=True)
    assert list(todo.targets) == [R4[5], R4[6]] and not todo.nothing_up
    assert todo.found is not None and todo.found.hosts["host"].nunique() == 4
    assert todo.options["resolve"] == "all" and todo.options["exclude"] == ()
    assert opts["resolve"] == "up"  # the caller's options are not changed under it
    assert discover_then(R4[7], opts, discover=True).nothing_up
    for skipped in (discover_then("203.0.113.4-7", opts, discover=False),
                    discover_then("203.0.113.4-7", opts, discover=True, distributed=True),
                    discover_then("203.0.113.4-7", {**opts, "shard": (1, 2)}, discover=True),
                    discover_then("127.0.0.1", opts, discover=True)):
        assert skipped.found is None and skipped.options["resolve"] == "up"
        assert skipped.targets in ("203.0.113.4-7", "127.0.0.1")  # as given
    assert DISCOVER_BY_DEFAULT == {"cli": True, "python": False}  # why: the constant's note


def test_discovery_runs_on_the_scan_lifecycle(lab: VethLab) -> None:
    """A ping sweep is a run like any scan (engine.lifecycle): events from ScanStarted to
    its terminal event, Progress and telemetry from the poller, and cancel keeps what it
    found so far."""
    from prtip_nb.config import ScanConfig
    from prtip_nb.engine.discovery import Discovery

    cfg = ScanConfig(targets=tuple(TARGETS4), ping_only=True, timing=4, max_retries=0,
                     resolve="never", telemetry_interval=0.05)
    sweep = Discovery(config=cfg)
    seen = sweep.events()
    res = sweep.start().wait(60)
    kinds = [e.kind for e in seen]
    assert kinds[0] == "ScanStarted" and kinds[-1] == "ScanCompleted" and "Progress" in kinds
    assert sweep.status == "completed" and sweep.progress.done == 32 == len(res.hosts)
    assert {"ScanStarted", "StageChanged", "DiscoveryCompleted", "ScanCompleted"} <= set(
        res.events["kind"])
    assert len(res.telemetry) >= 1 and int(res.telemetry["sent"].iloc[-1]) > 0
    assert sorted(res.hosts.query("state == 'up'")["host"]) == sorted(
        pn.discover(TARGETS4, timing=4, max_retries=0, resolve="never").hosts.query(
            "state == 'up'")["host"])

    stopped = Discovery(config=cfg).start()
    stopped.cancel()
    part = stopped.wait(10)
    assert stopped.status == "cancelled" and len(part.hosts) <= 32
