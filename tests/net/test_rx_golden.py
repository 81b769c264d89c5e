"""The receive paths classify stored ring blocks exactly as when the blocks were recorded.

``data/rx_golden.npz`` (written by ``python -m tests.net.golden_rx``) holds TPACKET_V3
blocks for SYN and UDP scans, IPv4 and IPv6, on both block walks (the strided fast path and
the gather path): SYN-ACKs, resets, UDP answers, ICMP errors from the target and from a
router with every code nmap names, duplicates, forged cookies and markers, and the
malformed frames of tests/net/hostile.py. Each block's records (index, code, ttl, times)
and counters must come out byte for byte as stored: a rewrite of the receive path (probe
modules, one round engine) keeps every verdict. Regenerate the file only for an intended
change of verdicts, and say so in the commit.
"""

from __future__ import annotations

import numpy as np
import pytest

from prtip_nb.probes.records import DTYPE as RECORD_DTYPE
from prtip_nb.probes.verdicts import verdict
from tests.net.golden_rx import CASES, PATH, run


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(PATH) as d:
        return {k: d[k] for k in d.files}


@pytest.mark.parametrize(("kind", "family", "uniform"), CASES,
                         ids=[f"{k}{f}{'-strided' if u else '-gather'}" for k, f, u in CASES])
def test_records_are_byte_identical(golden: dict[str, np.ndarray], kind: str, family: int,
                                    uniform: bool) -> None:
    name = f"{kind}{family}{'u' if uniform else 'g'}"
    first, n = (int(x) for x in golden[f"{name}_meta"])
    block = golden[f"{name}_block"].copy()
    recs, stats = run(kind, family, block, first, n)
    want = golden[f"{name}_records"].tobytes()
    assert len(want) >= 20 * RECORD_DTYPE.itemsize  # the file holds real verdicts
    if recs != want:
        got, exp = np.frombuffer(recs, RECORD_DTYPE), np.frombuffer(want, RECORD_DTYPE)
        pytest.fail(f"{name}: records differ\n got {got[['index', 'code', 'ttl']]}\n"
                    f"want {exp[['index', 'code', 'ttl']]}")
    assert sorted((k, str(v)) for k, v in stats.items()) == [
        tuple(row) for row in golden[f"{name}_stats"].tolist()]


def test_the_blocks_hold_every_kind_of_verdict(golden: dict[str, np.ndarray]) -> None:
    """What the golden file covers, in nmap's words (so a thin file cannot pass)."""
    words: dict[str, set[tuple[str, str]]] = {"syn": set(), "udp": set()}
    for kind, family, uniform in CASES:
        recs = golden[f"{kind}{family}{'u' if uniform else 'g'}_records"].view(RECORD_DTYPE)
        words[kind] |= {verdict(kind, int(c)) for c in recs["code"].tolist()}
    assert {("open", "syn-ack"), ("closed", "reset"), ("filtered", "host-unreach"),
            ("filtered", "admin-prohibited"), ("filtered", "no-route")} <= words["syn"]
    assert {("open", "udp-response"), ("closed", "port-unreach"),
            ("filtered", "port-unreach"), ("filtered", "net-unreach")} <= words["udp"]
