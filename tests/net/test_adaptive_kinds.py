"""The adaptive rate beyond SYN (issue 13): on a thin link it settles near the link's
capacity and keeps recall; UDP and discovery run on it exactly. Each test has a RangeLab of
its own (one per namespace at a time), in a namespace the test creates; every scan is
bounded by its probe count and the engines' timeouts.
"""

from __future__ import annotations

import json
import time

import pytest

import prtip_nb as pn
from prtip_nb.lab import RangeLab
from tests.conftest import need_range_lab
from tests.net.test_adaptive_lab import PREFIX


@pytest.mark.serial
def test_a_thin_link_settles_near_its_capacity_and_keeps_recall() -> None:
    """A link that carries 20,000 probes/s (an nftables policer: the excess is dropped):
    T4 would grow far past it; the rate must settle within 20% of the link and every open
    port must still be found (retries recover what the overshoot lost)."""
    need_range_lab()
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
    # The controller cut the rate at least once: "probing" follows only a loss ("backoff"
    # itself lasts one window, often between two 50 ms telemetry samples).
    assert {"backoff", "probing"} & set(tel["rate_reason"].dropna())
    # ... and told its subscribers so: RateLimited, each with the rate it went down to.
    limited = res.events[res.events["kind"] == "RateLimited"]["payload"].map(json.loads)
    assert len(limited) >= 1 and all(0 < p["rate"] < 200_000 for p in limited), limited
    # Sent at about the link's rate, not at T4's ceiling nor far below the link.
    assert took < 51_200 / capacity * 2.5, took


def test_udp_on_the_adaptive_rate_is_exact() -> None:
    """Echo responders on 53 and 123 of every host, closed ports answered at once (the
    responder's ICMP limit off), four hosts dropping everything."""
    need_range_lab()
    prefix = "198.18.0.0/26"
    with RangeLab(prefix, tcp=(), udp=(53, 123), drop_count=4, seed=9, icmp_ratelimit_ms=0,
                  icmp_msgs_per_sec=1_000_000) as lab:
        res = pn.scan(prefix, "U:50-60,123", method="udp", timing=4, telemetry_interval=0.02)
        truth = lab.truth([*range(50, 61), 123], proto="udp")
    df = res.ports
    assert len(df) == 64 * 12 and not df.duplicated(["host", "port"]).any()
    for host, port, state in zip(df["host"], df["port"].astype(int), df["state"].astype(str),
                                 strict=True):
        want = truth.state(host, port)
        assert state == ("open|filtered" if want == "filtered" else want), (host, port)
    reasons = set(res.telemetry["rate_reason"].dropna())
    assert reasons <= {"growing", "probing", "backoff", "floor", "ceiling", "holding", "measuring",
                       "icmp-paced"}


def test_discovery_on_the_adaptive_rate_is_exact() -> None:
    need_range_lab()
    prefix = "198.18.0.0/24"
    with RangeLab(prefix, tcp=(80, 443), drop_count=12, seed=4) as lab:
        res = pn.discover(prefix, timing=4)
        dropped = set(lab.truth([80]).dropped_hosts())
    hosts = res.hosts
    assert len(hosts) == 256
    down = set(hosts.loc[hosts["state"] == "down", "host"])
    assert down == dropped
