"""Reverse-DNS names into a hosts table: ``hostnames`` (nmap's list) and ``hostname``.

A host keeps the name it was given as a target (type "user", first, as nmap writes it);
the PTR name follows with its forward confirmation, and becomes ``hostname`` when the
host had none. Hosts without a PTR name are left as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from prtip_nb.results import _convert as cv
from prtip_nb.results import schema


def merge_names(hosts: pa.Table, names: Mapping[str, tuple[str, bool | None]]) -> pa.Table:
    """``hosts`` with the PTR ``names`` (address -> (name, confirmed)) merged in."""
    if not names or hosts.num_rows == 0:
        return hosts
    addrs = hosts["host"].to_pylist()
    if not any(a in names for a in addrs):
        return hosts
    given = hosts["hostname"].to_pylist()
    lists = hosts["hostnames"].to_pylist()
    new_lists: list[Any] = []
    new_given: list[str | None] = []
    for addr, user, old in zip(addrs, given, lists, strict=True):
        hit = names.get(addr)
        if hit is None:
            new_lists.append(old)
            new_given.append(user)
            continue
        entries = list(old) if old else ([{"name": user, "type": "user"}] if user else [])
        entries.append({"name": hit[0], "type": "PTR", "confirmed": hit[1]})
        new_lists.append(entries)
        new_given.append(user if user else hit[0])
    field = schema.HOSTS.field("hostnames")
    out = hosts.set_column(hosts.schema.get_field_index("hostnames"), field,
                           cv.column(new_lists, field.type))
    return out.set_column(out.schema.get_field_index("hostname"), "hostname",
                          cv.strings(new_given))
