"""The adaptive rate on networks (issue 13): exact at every template, and on a thin link
it settles near the link's capacity without losing recall.

Targets are a RangeLab (a whole 198.18.0.0/24 behind one veth link, in a namespace this
test creates); every scan is bounded by its probe count and the engines' own timeouts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import prtip_nb as pn
from prtip_nb.lab import RangeLab
from prtip_nb.net.ratectl import POLICIES
from tests.conftest import need_range_lab
from tests.net.nmapxml import nmap_grep_states

PREFIX = "198.18.0.0/24"
PORTS = (22, 80, 443, 8080)


@pytest.fixture(scope="module")
def lab() -> Iterator[RangeLab]:
    """80 and 443 open everywhere, 8 seeded hosts that drop everything."""
    need_range_lab()
    with RangeLab(PREFIX, tcp=(80, 443), drop_count=8, seed=5) as lab:
        yield lab


def _exact(lab: RangeLab, res: pn.ScanResult, ports: tuple[int, ...]) -> None:
    check = lab.truth(ports).check(res.ports)
    assert check["wrong"] == 0 and check["duplicates"] == 0 and check["missing_open"] == 0, check
    assert check["rows"] == 256 * len(ports)


@pytest.mark.parametrize("timing", [3, 4, 5])
def test_every_template_is_exact_and_adapts(lab: RangeLab, timing: int) -> None:
    res = pn.scan(PREFIX, ",".join(map(str, PORTS)), method="syn", timing=timing)
    _exact(lab, res, PORTS)
    tel = res.telemetry
    start = POLICIES[("normal", "aggressive", "insane")[timing - 3]].initial
    assert tel["rate_pps"].max() > 10 * start  # it grew from the template's start
    assert set(tel["rate_reason"].dropna()) <= {"growing", "probing", "backoff", "ceiling",
                                                "holding"}


def test_a_pinned_rate_is_exact_and_says_so(lab: RangeLab) -> None:
    res = pn.scan(PREFIX, ",".join(map(str, PORTS)), method="syn", rate=100_000)
    _exact(lab, res, PORTS)
    assert set(res.telemetry["rate_reason"].dropna()) == {"pinned"}


def test_states_equal_nmap_at_T4(lab: RangeLab, nmap: str) -> None:
    """nmap waits on the silent hosts (seconds); one template is enough for the oracle."""
    hosts = [lab.host(i) for i in range(0, 256, 8)]  # every 8th: some of the dropped too
    ports = "22,80,443"
    res = pn.scan(hosts, ports, method="syn", timing=4)
    ours = {(h, int(p)): s for h, p, s in zip(res.ports["host"], res.ports["port"],
                                              res.ports["state"].astype(str), strict=True)}
    theirs = nmap_grep_states(nmap, hosts, ports, "-T4")
    assert ours == theirs
