"""Targets, ports and the scan's index space.

Parse-only: nothing in this package sends a packet. Hostnames are resolved once, when
targets are parsed. Scan workers import this package, so it uses only the standard
library and numpy.

The index space (``targets.space``, numpy) loads on first use of its names: parsing
targets and ports (``prtip-nb scan -sL``) needs no numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prtip_nb.targets.hosts import TargetSet, parse_targets
from prtip_nb.targets.ports import PortSet, parse_ports, top_ports

if TYPE_CHECKING:
    from prtip_nb.targets.space import (
        Permutation,
        TargetSpace,
        iter_batches,
        parse_shard,
        shard_len,
        shard_range,
    )

_SPACE = frozenset({"Permutation", "TargetSpace", "iter_batches", "parse_shard", "shard_len",
                    "shard_range"})

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


def __getattr__(name: str) -> Any:
    if name in _SPACE:
        value = getattr(importlib.import_module("prtip_nb.targets.space"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
