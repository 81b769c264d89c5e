"""SYN scans across a veth pair to a target namespace with nftables: drops, ICMP rejects,
duplicated and lost packets. States must equal nmap -sS on the same lab in the same test.

tc netem is not built into this kernel (CONFIG_NET_SCH_NETEM is off), so the target's
nftables does its job: ``numgen random`` drops 5% of the probes (what netem loss on our
egress would do), and a netdev egress ``dup`` duplicates the target's replies.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

import prtip_nb as pn
from prtip_nb.engine.scan import Scan
from tests.conftest import need
from tests.net.nmapxml import nmap_states
from tests.net.vethlab import TARGET4, TARGET6, VethLab

pytestmark = pytest.mark.usefixtures("netns", "root")

OPEN = [22, 80, 443, 1000, 8080]
DROPPED = "100-104"
# ICMP type 3 / ICMPv6 type 1 codes the target answers with, per port, and nmap's reason.
REJECT4 = {110: ("admin-prohibited", "admin-prohibited"), 111: ("host-prohibited",
           "host-prohibited"), 112: ("port-unreachable", "port-unreach"),
           113: ("net-unreachable", "net-unreach"), 114: ("host-unreachable", "host-unreach")}
REJECT6 = {110: ("admin-prohibited", "admin-prohibited"), 111: ("addr-unreachable",
           "host-unreach"), 112: ("port-unreachable", "port-unreach"),
           113: ("no-route", "no-route")}
PORTS = "1-1100,8080"


def _rules() -> str:
    lines = [f"tcp dport {{ {DROPPED} }} drop"]
    lines += [f"meta nfproto ipv4 tcp dport {p} reject with icmp type {t}"
              for p, (t, _) in REJECT4.items()]
    lines += [f"meta nfproto ipv6 tcp dport {p} reject with icmpv6 type {t}"
              for p, (t, _) in REJECT6.items()]
    body = "\n    ".join(lines)
    return (f"table inet prtip {{\n  chain input {{\n    type filter hook input priority 0;\n"
            f"    {body}\n  }}\n}}\n")


@pytest.fixture
def lab() -> Iterator[VethLab]:
    need(shutil.which("nft") is not None and shutil.which("nsenter") is not None,
         "needs nftables and nsenter")
    with VethLab(OPEN) as lab:
        lab.nft(_rules())
        yield lab


@pytest.mark.slow
@pytest.mark.parametrize("host", [TARGET4, TARGET6])
def test_veth_lab_states_equal_nmap(lab: VethLab, host: str, nmap: str) -> None:
    s = Scan(host, PORTS, method="syn", timing=4, max_retries=1)
    df = s.start().wait().ports
    ours = dict(zip(df["port"].astype(int), df["state"].astype(str), strict=True))
    theirs = nmap_states(nmap, host, PORTS, "-T4", "--max-retries", "1", "--send-ip")
    assert ours == theirs
    assert sorted(p for p, st in ours.items() if st == "open") == OPEN
    reasons = dict(zip(df["port"].astype(int), df["reason"].astype(str), strict=True))
    for p, (_, reason) in (REJECT4 if host == TARGET4 else REJECT6).items():
        assert (ours[p], reasons[p]) == ("filtered", reason)
    assert {reasons[p] for p in range(100, 105)} == {"no-response"}
    assert s.engine_stats["capture_drops"] == 0


def test_duplicated_replies_still_give_one_row_per_port(lab: VethLab) -> None:
    lab.nft(f"""
table netdev prtipdup {{
  chain out {{
    type filter hook egress device "{lab.theirs}" priority 0;
    numgen random mod 2 == 0 dup to "{lab.theirs}"
  }}
}}
""")
    for host in (TARGET4, TARGET6):
        s = Scan(host, "1-3000", method="syn", timing=5, max_retries=1)
        df = s.start().wait().ports
        assert len(df) == 3000 and df["port"].nunique() == 3000
        assert sorted(df.loc[df["state"] == "open", "port"].astype(int)) == OPEN[:-1]
        assert s.engine_stats["duplicates"] >= 1000  # at least a third of replies twice


@pytest.mark.slow
def test_five_percent_loss_with_two_retries_keeps_recall(tmp_path: object) -> None:
    need(shutil.which("nft") is not None and shutil.which("nsenter") is not None,
         "needs nftables and nsenter")
    many = list(range(2001, 2501))  # 500 open ports
    with VethLab(many, tag="l") as lab:
        lab.nft("""
table inet prtiploss {
  chain input {
    type filter hook input priority 0;
    tcp flags & (syn | ack) == syn numgen random mod 100 < 5 drop
  }
}
""")
        found = retries = 0
        for run in range(10):
            host = TARGET4 if run % 2 == 0 else TARGET6
            s = Scan(host, "2001-3000", method="syn", timing=5, max_retries=2, seed=run)
            df = s.start().wait().ports
            assert len(df) == 1000 and df["port"].nunique() == 1000
            opened = set(df.loc[df["state"] == "open", "port"].astype(int))
            assert opened <= set(many)  # no false opens
            found += len(opened)
            retries += s.counters.retries
    assert found / (10 * len(many)) >= 0.999
    assert retries > 0  # the loss was real and retries recovered it


def test_default_rate_beyond_loopback_adapts_from_a_tame_start(lab: VethLab) -> None:
    from prtip_nb.config import ScanConfig
    from prtip_nb.net.ratectl import RatePolicy, rate_plan

    cfg = ScanConfig(targets=(TARGET4,), method="syn")
    plan = rate_plan(cfg, loopback=False)
    assert isinstance(plan, RatePolicy) and plan.initial == 1000.0  # T3 starts at 1,000/s
    assert rate_plan(cfg, loopback=True) is None
    assert rate_plan(cfg.replace(timing=2), loopback=False) == pytest.approx(2.5)
    assert rate_plan(cfg.replace(rate=123.0), loopback=True) == 123.0
    assert rate_plan(cfg.replace(max_rate=50.0), loopback=True) == 50.0
    res = pn.scan(TARGET4, "1-3000", method="syn", max_retries=0)
    assert sorted(res.ports.loc[res.ports["state"] == "open", "port"].astype(int)) == OPEN[:-1]
    tel = res.telemetry
    # The rate left its start once replies kept up, and telemetry says why.
    assert tel["rate_pps"].max() > 1000.0
    assert set(tel["rate_reason"].dropna()) <= {"growing", "probing", "backoff", "ceiling",
                                                "holding"}
