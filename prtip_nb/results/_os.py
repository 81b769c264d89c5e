"""OS detection results into a scan's tables: the ``os`` rows and the hosts' OS columns.

``ResultBuilder.add_os`` collects them while the scan runs (the -O stage); ``attach`` puts
them into the final tables: ``os`` (one row per reported match, as nmap's ``<osmatch>``)
and, on the hosts rows of the hosts fingerprinted, ``os_portused``, ``os_fingerprint``,
``distance`` and ``sequences`` (as nmap's ``<portused>``, ``<osfingerprint>``,
``<distance>`` and its sequence elements).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from . import _convert as cv
from . import schema

__all__ = ["HOST_COLUMNS", "attach", "os_table"]

HOST_COLUMNS = ("os_portused", "os_fingerprint", "distance", "sequences")


def os_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """The ``os`` rows as a table of schema.OS without its scan_id column."""
    without = schema.OS.remove(0)
    return cv.table({name: [r.get(name) for r in rows] for name in without.names}, without)


def attach(tables: dict[str, pa.Table], hosts: Mapping[str, Mapping[str, Any]]) -> None:
    """Set the HOST_COLUMNS of the ``hosts`` rows fingerprinted (in place)."""
    h = tables["hosts"]
    if not hosts or not h.num_rows:
        return
    names = h["host"].to_pylist()
    for col in HOST_COLUMNS:
        if col not in h.column_names:
            continue
        values = h[col].to_pylist()
        changed = False
        for i, name in enumerate(names):
            if name in hosts and hosts[name].get(col) is not None:
                values[i] = hosts[name][col]
                changed = True
        if changed:
            idx = h.column_names.index(col)
            h = h.set_column(idx, h.schema.field(idx), cv.column(values, h.schema.field(idx).type))
    tables["hosts"] = h
