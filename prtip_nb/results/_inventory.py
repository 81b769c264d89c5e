"""The inventory view: one row per open port, with its host's best OS match and the ids of
the scripts that ran on it (``ScanResult.inventory()``).

Scripts and OS matches are few next to ports, so they are looked up per key in Python; the
ports side stays Arrow until the final table.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from prtip_nb.results import _arrow
from prtip_nb.results import _convert as cv

COLUMNS = ("scan_id", "host", "hostname", "proto", "port", "service", "product", "version",
           "cpe", "os", "os_accuracy", "scripts")  # fmt: skip


def inventory_table(tables: dict[str, pa.Table]) -> pa.Table:
    ports = tables["ports"]
    ports = ports.filter(pc.is_in(ports["state"], value_set=_arrow.OPEN))
    keys = zip(
        pc.cast(ports["scan_id"], pa.string()).to_pylist(), ports["host"].to_pylist(),
        pc.cast(ports["proto"], pa.string()).to_pylist(), ports["port"].to_pylist(),
        strict=True,
    )  # fmt: skip
    best: dict[tuple[str, str], tuple[str, Any]] = {}
    for m in tables["os"].select(["scan_id", "host", "name", "accuracy"]).to_pylist():
        best.setdefault((str(m["scan_id"]), m["host"]), (m["name"], m["accuracy"]))
    ran: dict[tuple[Any, ...], list[str]] = {}
    for s in tables["scripts"].select(["scan_id", "host", "proto", "port", "id"]).to_pylist():
        if s["port"] is not None:
            key = (str(s["scan_id"]), s["host"], str(s["proto"]), s["port"])
            ran.setdefault(key, []).append(s["id"])
    os_name, os_acc, scripts = [], [], []
    for sid, host, proto, port in keys:
        name, acc = best.get((sid, host), (None, None))
        os_name.append(name)
        os_acc.append(acc)
        scripts.append(ran.get((sid, host, proto, port)))
    # ssl/http, as nmap prints a service in a TLS tunnel
    tunnel = pc.fill_null(pc.cast(ports["tunnel"], pa.string()), cv.scalar_str(""))
    named = pc.binary_join_element_wise(tunnel, ports["service"], cv.scalar_str("/"))
    service = pc.if_else(pc.equal(tunnel, cv.scalar_str("")), ports["service"], named)
    return pa.table({
        "scan_id": ports["scan_id"], "host": ports["host"], "hostname": ports["hostname"],
        "proto": ports["proto"], "port": ports["port"], "service": service,
        "product": ports["product"], "version": ports["version"], "cpe": ports["cpe"],
        "os": cv.strings(os_name), "os_accuracy": cv.numbers(os_acc, pa.uint8()),
        "scripts": cv.string_lists(scripts),
    })  # fmt: skip
