"""The shard and index arithmetic that every engine, the sink, workers and checkpoints share
(targets.space): split/join of an index, sub-shards, positions within a shard."""

from __future__ import annotations

import numpy as np
import pytest

from prtip_nb.targets import TargetSpace, parse_ports, parse_targets
from prtip_nb.targets.space import (
    join_index,
    shard_len,
    shard_position,
    shard_range,
    split_index,
    sub_shard_start,
    sub_shards,
)


@pytest.mark.parametrize("dtype", [np.uint64, np.int64])
def test_split_and_join_are_inverse_and_agree_with_locate(dtype: type) -> None:
    space = TargetSpace(parse_targets(["198.51.100.0/29", "2001:db8::1"]), parse_ports("1-37"))
    js = np.arange(space.size, dtype=dtype)
    host, pidx = split_index(js, space.hosts)
    assert host.dtype == pidx.dtype == np.dtype(dtype)
    assert [space.locate(j) for j in range(space.size)] == list(
        zip(host.tolist(), pidx.tolist(), strict=True))
    assert np.array_equal(join_index(host, pidx, space.hosts), js.astype(np.uint64))


@pytest.mark.parametrize("parts", [1, 2, 3, 4])
@pytest.mark.parametrize("start", [0, 1, 5, 40])
def test_sub_shards_partition_the_rest_of_a_shard(parts: int, start: int) -> None:
    size, shard = 101, (2, 3)
    parent = list(shard_range(size, *shard))[start:]
    got = []
    for w, (k, n) in enumerate(sub_shards(shard, parts)):
        mine = list(shard_range(size, k, n))[sub_shard_start(start, w, parts):]
        assert len(mine) == shard_len(size, (k, n), sub_shard_start(start, w, parts))
        got += mine
    assert sorted(got) == parent


def test_shard_position_numbers_a_shards_indices() -> None:
    idx = np.array(list(shard_range(50, 3, 4)), np.uint64)
    assert shard_position(idx, (3, 4)).tolist() == list(range(len(idx)))
