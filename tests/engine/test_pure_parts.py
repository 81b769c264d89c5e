"""The engine's pure parts, alone (issue 14): the RTT estimator that sets every quiet
period, the shard tracker that turns flushed verdicts into a resume point, and the ICMP
pacing policy's rate estimates and per-host plan. The scans that use them are tested
against nmap in tests/net and tests/engine; these pin down the rules themselves."""

from __future__ import annotations

import time

import numpy as np
import pytest

from prtip_nb.engine.checkpoint import ShardTracker
from prtip_nb.engine.udppace import BURST, PACE, HostPlan, host_rates, icmp_rates
from prtip_nb.net.counters import RttEstimator
from prtip_nb.targets import Permutation, shard_len


# -- RttEstimator: nmap's srtt + 4·rttvar (RFC 6298), clamped ------------------------------
def test_timeout_is_the_initial_value_until_a_sample() -> None:
    rtt = RttEstimator(initial=1.0, lo=0.1, hi=10.0)
    assert rtt.timeout == 1.0 and rtt.samples == 0


def test_first_sample_sets_srtt_and_half_of_it_as_variance() -> None:
    rtt = RttEstimator(initial=1.0, lo=0.01, hi=10.0)
    rtt.update(0.2)
    assert rtt.srtt == pytest.approx(0.2) and rtt.rttvar == pytest.approx(0.1)
    assert rtt.timeout == pytest.approx(0.2 + 4 * 0.1)


def test_steady_samples_shrink_the_timeout_to_the_floor_and_a_spike_widens_it() -> None:
    rtt = RttEstimator(initial=1.0, lo=0.05, hi=2.0)
    for _ in range(200):
        rtt.update(0.01)
    assert rtt.srtt == pytest.approx(0.01, rel=1e-3)
    assert rtt.timeout == 0.05  # srtt + 4·rttvar is below the floor
    before = rtt.timeout
    rtt.update(0.5)  # one slow reply: srtt += 1/8 of it, rttvar += 1/4 of |delta|
    assert rtt.srtt == pytest.approx(0.01 + 0.49 / 8, rel=1e-3)
    assert rtt.timeout > before
    for _ in range(50):
        rtt.update(30.0)
    assert rtt.timeout == 2.0  # the ceiling holds


def test_a_ceiling_below_the_floor_is_lifted_to_it() -> None:
    rtt = RttEstimator(initial=0.5, lo=0.3, hi=0.1)
    rtt.update(5.0)
    assert rtt.timeout == 0.3


# -- ShardTracker: flushed indices -> the shard's low-water position -----------------------
def _indices(perm: Permutation, shard: tuple[int, int], positions: list[int],
             offset: int = 0) -> np.ndarray:
    """The scan indices at ``positions`` of shard k/n (position p is i = k-1 + n·p)."""
    k, n = shard
    i = np.array([k - 1 + n * p for p in positions], dtype=np.uint64)
    return perm.shuffle_array(i) + np.uint64(offset)


@pytest.mark.parametrize("shard", [(1, 1), (1, 3), (3, 3)])
def test_low_water_counts_leading_positions_in_any_flush_order(shard: tuple[int, int]) -> None:
    size, seed = 1000, 11
    perm = Permutation(size, seed)
    t = ShardTracker(size, seed, shard)
    assert t.total == shard_len(size, shard) and t.low_water == 0
    t.flushed(_indices(perm, shard, [5, 3, 0]))
    assert t.low_water == 1  # 0 is done; 1 is not
    t.flushed(_indices(perm, shard, [2, 1, 4]))
    assert t.low_water == 6
    t.flushed(_indices(perm, shard, [1, 2]))  # duplicates (a retried probe): no change
    assert t.low_water == 6
    t.flushed(_indices(perm, shard, list(range(t.total))[::-1]))
    assert t.low_water == t.total


def test_two_segments_are_walked_one_after_the_other() -> None:
    """-sS -sU: the TCP part's positions first, then the UDP part's (each permuted alone)."""
    seed, shard = 5, (2, 2)
    segs = ((0, 600), (600, 400))
    t = ShardTracker(1000, seed, shard, segments=segs)
    first = shard_len(600, shard)
    assert t.total == first + shard_len(400, shard)
    udp = Permutation(400, seed)
    t.flushed(_indices(udp, shard, list(range(5)), offset=600))
    assert t.low_water == 0  # the UDP part's positions come after all of TCP's
    t.flushed(_indices(Permutation(600, seed), shard, list(range(first))))
    assert t.low_water == first + 5


def test_a_resumed_tracker_starts_at_its_mark_and_ignores_what_is_below() -> None:
    size, seed, shard = 500, 3, (1, 1)
    perm = Permutation(size, seed)
    t = ShardTracker(size, seed, shard, start=100)
    t.flushed(_indices(perm, shard, [10, 50, 99]))  # done before the resume
    assert t.low_water == 100
    t.flushed(_indices(perm, shard, [100, 101]))
    assert t.low_water == 102


# -- ICMP pacing: the arrival rate, the per-host split and plan ------------------------------
def test_icmp_rate_leaves_out_the_targets_initial_burst() -> None:
    now = time.monotonic()
    burst = np.full(BURST, now - 2.0)  # a full bucket, emptied at once
    steady = now - 2.0 + np.arange(1, 21) * 0.1  # then 10 a second for 2 s
    est = icmp_rates([burst, steady], now - 2.0)
    assert est is not None
    rate, low = est
    assert rate == pytest.approx(10.0, rel=0.1)
    assert low <= rate


def test_no_icmp_error_is_no_estimate() -> None:
    assert icmp_rates([np.array([])], time.monotonic()) is None


def test_host_rates_split_the_rate_by_the_errors_each_host_drew() -> None:
    rates = host_rates([np.array([0, 0, 0, 1]), np.array([0, 1, 1, 1])], (8.0, 4.0))
    assert rates == {0: (4.0, 2.0), 1: (4.0, 2.0)}
    rates = host_rates([np.array([2, 2, 2, 7])], (8.0, 4.0))
    assert rates[2] == (6.0, 3.0) and rates[7] == (2.0, 1.0)


class _Errors:
    """What HostPlan reads of the UDP receiver: the hosts of each block of ICMP errors."""

    def __init__(self) -> None:
        self.icmp_hosts: list[np.ndarray] = []


def test_a_paced_round_goes_as_fast_as_its_most_limited_host_allows() -> None:
    """Host 0 (limit 10/s) holds 90 of the 100 silent ports, host 1 (limit 100/s) 10: the
    pace at which host 0 gets PACE x its limit is 1.25 x 10 / 0.9. Once host 0's ports
    have all answered, host 1's limit alone sets it."""
    rx = _Errors()
    plan = HostPlan(base=1000.0, limit=110.0, limits=np.array([10.0, 100.0]),
                    left=np.array([90, 10]), rx=rx)  # type: ignore[arg-type]
    assert plan.base == pytest.approx(PACE * 10 / 0.9)
    assert plan.expected(1000.0) == pytest.approx(10.0 + 100.0)  # each host at its limit
    assert plan.expected(10.0) == pytest.approx(9.0 + 1.0)  # below: each its share
    rx.icmp_hosts.append(np.zeros(90, dtype=np.int64))  # host 0's closed ports answered
    plan.update()
    assert plan.base == pytest.approx(PACE * 100 / 1.0)
    rx.icmp_hosts.append(np.ones(10, dtype=np.int64))
    plan.update()
    assert plan.expected(50.0) == 110.0  # nothing measured is left: the round's limit


def test_without_a_per_host_view_the_round_limit_holds() -> None:
    plan = HostPlan(base=100.0, limit=40.0)
    assert plan.base == 100.0 and plan.expected(1e6) == 40.0
