"""merge_shard_hosts: the counts from every shard's ports, the rest from the shards' hosts."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from prtip_nb.results import _convert as cv
from prtip_nb.results import _hosts, schema


def _hosts_table(rows: list[dict[str, Any]]) -> pa.Table:
    names = schema.HOSTS.names
    return cv.table({n: [r.get(n) for r in rows] for n in names}, schema.HOSTS)


def _row(host: str, **cols: Any) -> dict[str, Any]:
    base = {"scan_id": "s", "host": host, "family": 4, "state": "unknown",
            "reason": "no-response", "open": 0, "closed": 0, "filtered": 0, "other": 0}
    return base | cols


def test_shard_columns_fill_the_derived_row_and_counts_stay_derived() -> None:
    derived = _hosts_table([_row("198.51.100.1", state="up", reason="syn-ack", open=40),
                            _row("198.51.100.2")])
    name = [{"name": "a.example", "type": "PTR", "confirmed": True}]
    one = _hosts_table([
        _row("198.51.100.1", state="up", reason="syn-ack", open=20, pseudo_services=False,
             hostnames=name, hostname="a.example", distance=2, os_fingerprint=["OS:x"]),
        _row("198.51.100.2", state="up", reason="echo-reply"),
    ])
    two = _hosts_table([
        _row("198.51.100.1", state="up", reason="syn-ack", open=20, pseudo_services=True,
             pseudo_reason="20/20 open", distance=3),
        _row("198.51.100.9", state="up", reason="echo-reply"),  # no port row anywhere
    ])
    out = {r["host"]: r for r in _hosts.merge_shard_hosts(derived, [one, two]).to_pylist()}
    a = out["198.51.100.1"]
    assert a["open"] == 40  # derived from all ports, not one shard's 20
    assert a["pseudo_services"] is True and a["pseudo_reason"] == "20/20 open"  # any shard
    assert a["hostnames"] == name and a["hostname"] == "a.example"
    assert a["distance"] == 2 and a["os_fingerprint"] == ["OS:x"]  # the first shard's
    assert (out["198.51.100.2"]["state"], out["198.51.100.2"]["reason"]) == ("up", "echo-reply")
    assert out["198.51.100.9"]["state"] == "up"
    assert list(out) == ["198.51.100.1", "198.51.100.2", "198.51.100.9"]


def test_no_shard_tables_leave_the_derived_table() -> None:
    derived = _hosts_table([_row("198.51.100.1")])
    assert _hosts.merge_shard_hosts(derived, []).equals(derived)
