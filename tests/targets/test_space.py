"""The index space: host-major order, shards that partition, batches that resume."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prtip_nb.errors import ConfigError
from prtip_nb.targets import (
    Permutation,
    TargetSet,
    TargetSpace,
    iter_batches,
    parse_ports,
    parse_shard,
    parse_targets,
    shard_range,
)


@pytest.fixture
def small() -> TargetSpace:
    return TargetSpace(parse_targets("127.0.0.1-3"), parse_ports("T:22,80,U:53"))


def test_locate_visits_hosts_first(small: TargetSpace) -> None:
    assert small.size == len(small) == 9 and small.hosts == 3
    assert [small.locate(j) for j in range(9)] == [(j % 3, j // 3) for j in range(9)]
    assert small.probe(0) == ("127.0.0.1", 4, "tcp", 22)
    assert small.probe(1) == ("127.0.0.2", 4, "tcp", 22)
    assert small.probe(3) == ("127.0.0.1", 4, "tcp", 80)
    assert small.probe(8) == ("127.0.0.3", 4, "udp", 53)
    for bad in (-1, 9):
        with pytest.raises(IndexError):
            small.locate(bad)


def test_probe_families() -> None:
    space = TargetSpace(parse_targets("127.0.0.1 ::1"), parse_ports("443"))
    assert [space.probe(j) for j in range(2)] == [
        ("127.0.0.1", 4, "tcp", 443), ("::1", 6, "tcp", 443),
    ]  # fmt: skip


def test_whole_scan_visits_every_probe_once(small: TargetSpace) -> None:
    perm = Permutation(small.size, 5)
    js = np.concatenate(list(iter_batches(small, perm, batch=4)))
    assert sorted(js.tolist()) == list(range(9))
    probes = {small.probe(int(j)) for j in js}
    assert len(probes) == 9


@settings(max_examples=80, deadline=None)
@given(size=st.integers(0, 3000), n=st.integers(1, 12), data=st.data())
def test_shards_partition_the_space(size: int, n: int, data: st.DataObject) -> None:
    shards = [shard_range(size, k, n) for k in range(1, n + 1)]
    seen = [i for s in shards for i in s]
    assert sorted(seen) == list(range(size))  # disjoint and complete
    # The permuted batches of the shards partition it too.
    space = TargetSpace(
        TargetSet([(4, 0x7F000000, 0x7F000000 + max(size, 1) - 1)]), parse_ports("1")
    )
    perm = Permutation(space.size, data.draw(st.integers(0, 2**64)))
    parts = [
        np.concatenate([np.array([], np.uint64), *iter_batches(space, perm, shard=(k, n), batch=7)])
        for k in range(1, n + 1)
    ]
    assert sorted(np.concatenate(parts).tolist()) == list(range(space.size))
    k = data.draw(st.integers(1, n))
    assert parts[k - 1].tolist() == [perm.shuffle(i) for i in shard_range(space.size, k, n)]


@settings(max_examples=50, deadline=None)
@given(size=st.integers(1, 2000), n=st.integers(1, 5), start=st.integers(0, 2100))
def test_start_resumes_within_the_shard(size: int, n: int, start: int) -> None:
    space = TargetSpace(TargetSet([(6, 1, size)]), parse_ports("1"))
    perm = Permutation(size, 77)
    full = np.concatenate([np.array([], np.uint64), *iter_batches(space, perm, shard=(1, n))])
    tail = list(iter_batches(space, perm, shard=(1, n), start=start, batch=64))
    assert all(0 < len(b) <= 64 for b in tail)
    rest = np.concatenate([np.array([], np.uint64), *tail])
    assert rest.tolist() == full[start:].tolist()


def test_iter_batches_checks_arguments_eagerly(small: TargetSpace) -> None:
    perm = Permutation(small.size, 1)
    with pytest.raises(ConfigError, match="Permutation"):
        iter_batches(small, Permutation(8, 1))
    for kwargs in ({"shard": (0, 2)}, {"shard": (3, 2)}, {"start": -1}, {"batch": 0}):
        with pytest.raises(ConfigError):
            iter_batches(small, perm, **kwargs)
    assert list(iter_batches(small, perm, start=100)) == []
    empty = TargetSpace(TargetSet(), parse_ports("1"))
    assert empty.size == 0 and list(iter_batches(empty, Permutation(0, 1))) == []


def test_shard_validation() -> None:
    assert shard_range(10, 2, 4) == range(1, 10, 4)
    for k, n in ((0, 4), (5, 4), (1, 0), (True, 2), (1.0, 2)):
        with pytest.raises(ConfigError) as err:
            shard_range(10, k, n)  # type: ignore[arg-type]
        assert f"{k}/{n}" in str(err.value)
    with pytest.raises(ConfigError):
        shard_range(-1, 1, 1)


@pytest.mark.parametrize(("text", "expected"), [("2/4", (2, 4)), (" 1 / 1 ", (1, 1))])
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/4", "5/4", "2/0", "a/b", "2", "2/4/1", "", "-1/2", "1/2x"])
def test_parse_shard_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_shard(text)
    assert "valid form" in str(err.value)


def test_setup_is_constant_memory() -> None:
    """A /8 x every port: parse, space and permutation allocate nothing per probe."""
    parse_ports("-")  # warm module-level caches, so only per-call allocation is measured
    tracemalloc.start()
    try:
        targets = parse_targets("10.0.0.0/8")  # parse-only
        ports = parse_ports("-")
        space = TargetSpace(targets, ports)
        perm = Permutation(space.size, 123456789)
        first = next(iter_batches(space, perm, shard=(3, 8), start=10**9))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert space.size == 2**24 * 65535
    assert len(first) == 4096 and int(first.max()) < space.size
    assert peak < 1 << 20, f"peak {peak} bytes"


def test_ipv6_space_beyond_uint64() -> None:
    tracemalloc.start()
    try:
        space = TargetSpace(parse_targets("2001:db8::/64"), parse_ports("-"))
        perm = Permutation(space.size, 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert space.size == 2**64 * 65535
    j = perm.shuffle(space.size - 1)
    addr, fam, proto, port = space.probe(j)
    assert fam == 6 and addr.startswith("2001:db8::") and proto == "tcp" and 1 <= port <= 65535
    with pytest.raises(ConfigError, match="uint64"):
        iter_batches(space, perm)


def test_import_stays_light() -> None:
    """Scan workers import prtip_nb.targets: no pandas, pyarrow or scapy on that path."""
    code = (
        "import sys, prtip_nb.targets; print(','.join(m for m in ('pandas', 'pyarrow', "
        "'scapy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
