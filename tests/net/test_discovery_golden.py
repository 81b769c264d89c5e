"""Golden verdicts of host discovery (issue 14: discovery moved onto the one round engine).

``golden/discovery.json`` holds the (host, state, reason) rows that the old window loop
(engine/pingsweep.py before the move) decided on this lab, recorded by this test with
``PRTIP_RECORD_GOLDEN=1``. The round engine must decide the same, host by host: on-link
hosts up and down (ARP / NDP), one dropping every IP packet, routed hosts answering one
probe kind each or nothing (nftables), IPv4 and IPv6, one family at a time and both in one
sweep, and the discovery phase a port scan runs first (``discover_first``).

Hosts that answer every probe (``ANY_REASON``) are up with whichever answer came first:
only their state is compared (the nmap-oracle tests in test_discovery treat them alike).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import prtip_nb as pn
from prtip_nb.engine.discovery import discover_first
from prtip_nb.lab.veth import VethLab

from . import test_discovery as _disc
from .test_discovery import ANY_REASON, ON4, ON6, R4, R6, TARGETS4, TARGETS6

pytestmark = pytest.mark.usefixtures("netns", "root")

GOLDEN = Path(__file__).parent / "golden" / "discovery.json"
RECORD = os.environ.get("PRTIP_RECORD_GOLDEN") == "1"

SWEEPS: dict[str, list[str]] = {
    "ipv4": TARGETS4,
    "ipv6": TARGETS6,
    "both": [*TARGETS4, *TARGETS6],
    # one of each probe's answers, a dropping host, an absent one and a broadcast address
    "reasons": [ON4[0], ON4[3], R4[6], R4[8], R4[9], R4[7], "198.51.100.200", R6[9],
                "198.51.100.255", ON6[2], R6[7]],
}


#: The nftables veth lab of test_discovery (the module-scoped fixture, one lab per module).
lab = _disc.lab


def _rows(hosts) -> list[list[str]]:  # type: ignore[no-untyped-def]
    return [[h, str(s), str(r)] for h, s, r in zip(hosts["host"], hosts["state"],
                                                   hosts["reason"], strict=True)]


def _decided(name: str) -> list[list[str]]:
    if name == "first":  # the discovery phase of a port scan (cli, pn.scan(discover=True))
        res = discover_first(["203.0.113.0/29", "2001:db8:1::/125"], {"timing": 4})
        assert res is not None
        return _rows(res.hosts)
    return _rows(pn.discover(SWEEPS[name]).hosts)


def _check(name: str, got: list[list[str]], want: list[list[str]]) -> None:
    assert [r[0] for r in got] == [r[0] for r in want], f"{name}: hosts or their order"
    for (host, state, reason), (_h, w_state, w_reason) in zip(got, want, strict=True):
        assert state == w_state, f"{name} {host}: {state}/{reason}, golden {w_state}/{w_reason}"
        if host not in ANY_REASON:
            assert reason == w_reason, f"{name} {host}: {reason}, golden {w_reason}"


@pytest.mark.parametrize("name", [*SWEEPS, "first"])
def test_discovery_decides_as_recorded(lab: VethLab, name: str) -> None:
    got = _decided(name)
    if RECORD:
        table = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        table[name] = got
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())[name]
    _check(name, got, want)
    again = _decided(name)  # a second sweep decides the same (neighbour entries forgotten)
    _check(name, again, want)


def test_windows_of_a_few_hosts_decide_the_same(lab: VethLab) -> None:
    """The round engine's parts: the IPv4 + IPv6 sweep in windows of 5 hosts (13 windows,
    each with its own rounds, neighbour deletions and silent records) decides as the
    golden rows say, and the counters add up."""
    from prtip_nb.config import ScanConfig
    from prtip_nb.engine.pingsweep import DiscoverEngine, host_verdicts
    from prtip_nb.net.counters import Counters, RttEstimator
    from prtip_nb.net.ratectl import rate_plan
    from prtip_nb.probes.records import RecordBuffer
    from prtip_nb.targets import parse_targets

    cfg = ScanConfig(targets=tuple(SWEEPS["both"]), ping_only=True)
    tmpl, tset = cfg.template, parse_targets(SWEEPS["both"])
    records: list[bytes] = []
    out = RecordBuffer(records.append)
    counters = Counters()
    engine = DiscoverEngine(
        tset, out=out, window=5, counters=counters,
        rtt=RttEstimator(cfg.probe_timeout, tmpl.min_rtt_timeout, tmpl.max_rtt_timeout),
        rate=rate_plan(cfg, loopback=False, kind="discovery"))
    engine.run()
    out.flush()
    rows = host_verdicts(tset, b"".join(records))
    got = [[r.host, r.state, r.reason] for r in rows]
    _check("both, windows of 5", got, json.loads(GOLDEN.read_text())["both"])
    assert counters.done == tset.size == len(rows)
    assert counters.open == sum(1 for r in rows if r.state == "up"
                                and r.reason != "localhost-response")
    assert engine.stats["sent"] == counters.sent > 0 and engine.stats["rounds"] == 2
