"""Targets, ports and the scan's index space.

Parse-only: nothing in this package sends a packet. Hostnames are resolved once, when
targets are parsed. Scan workers import this package, so it uses only the standard
library and numpy.
"""

from __future__ import annotations

from prtip_nb.targets.hosts import TargetSet, parse_targets
from prtip_nb.targets.ports import PortSet, parse_ports, top_ports
from prtip_nb.targets.space import (
    Permutation,
    TargetSpace,
    iter_batches,
    parse_shard,
    shard_len,
    shard_range,
)

__all__ = [
    "Permutation",
    "PortSet",
    "TargetSet",
    "TargetSpace",
    "iter_batches",
    "parse_ports",
    "parse_shard",
    "parse_targets",
    "shard_len",
    "shard_range",
    "top_ports",
]
