"""The adaptive rate on a thin link (issue 13): it settles near the link's capacity and
keeps recall. A RangeLab of its own (one per namespace at a time), in a namespace this test
creates; the scan is bounded by its probe count and the engine's timeouts.
"""

from __future__ import annotations

import time

import prtip_nb as pn
from prtip_nb.lab import RangeLab
from tests.net.test_adaptive_lab import PREFIX, _need_lab


def test_a_thin_link_settles_near_its_capacity_and_keeps_recall() -> None:
    """A link that carries 20,000 probes/s (an nftables policer: the excess is dropped):
    T4 would grow far past it; the rate must settle within 20% of the link and every open
    port must still be found (retries recover what the overshoot lost)."""
    _need_lab()
    capacity = 20_000.0
    ports = tuple(range(1, 201))  # 51,200 probes: about 2.5 s at the link's rate
    with RangeLab(PREFIX, tcp=(80, 443), bottleneck_pps=capacity, shaper="police") as lab:
        t0 = time.monotonic()
        res = pn.scan(PREFIX, "1-200", method="syn", timing=4, telemetry_interval=0.05)
        took = time.monotonic() - t0
        check = lab.truth(ports).check(res.ports)
        dropped = lab.link_stats()
    assert check["missing_open"] / check["open_expected"] <= 0.001, check  # recall >= 99.9%
    assert check["wrong"] <= 0.001 * check["rows"] and check["duplicates"] == 0, check
    tel = res.telemetry
    late = tel[(tel["t"] >= 0.5) & (tel["t"] <= tel["t"].max() - 0.2)]
    rate = late["rate_pps"].dropna()
    assert len(rate) >= 5, tel
    assert 0.8 * capacity <= rate.median() <= 1.2 * capacity, (rate.describe(), dropped)
    assert "backoff" in set(tel["rate_reason"].dropna())
    # Sent at about the link's rate, not at T4's ceiling nor far below the link.
    assert took < 51_200 / capacity * 2.5, took
