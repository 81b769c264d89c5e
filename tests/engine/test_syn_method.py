"""Method selection (syn / auto) and the verdict records' ttl field: no packets sent."""

from __future__ import annotations

import math
import warnings

import pytest

import prtip_nb.engine.scan as scan_mod
from prtip_nb.engine.scan import Scan
from prtip_nb.engine.sink import RecordSink
from prtip_nb.engine.syn import verdict
from prtip_nb.errors import PrivilegeError
from prtip_nb.net.counters import Counters
from prtip_nb.probes.records import RECORD, RecordBuffer
from prtip_nb.targets import parse_ports, parse_targets


@pytest.mark.parametrize("privileged, picked", [(True, "syn"), (False, "connect")])
def test_auto_picks_by_privilege_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, privileged: bool, picked: str
) -> None:
    monkeypatch.setattr(scan_mod, "is_privileged", lambda: privileged)
    monkeypatch.setattr(scan_mod, "_AUTO_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = Scan("127.0.0.1", "80", method="auto")
        second = Scan("127.0.0.1", "80", method="auto")
    assert first.config.method == second.config.method == picked
    assert [str(w.message).split(":")[0] for w in caught] == [
        f"method='auto' picked {picked!r}"
    ]


def test_syn_without_privileges_raises_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan_mod, "is_privileged", lambda: False)
    with pytest.raises(PrivilegeError) as info:
        Scan("127.0.0.1", "80", method="syn")
    text = str(info.value)
    assert "root" in text and "setcap cap_net_raw+ep" in text and "method='connect'" in text


def test_syn_with_udp_ports_is_syn_plus_udp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 4: U: ports in a SYN scan are scanned by UDP too (nmap -sS -sU); a connect
    scan still refuses them."""
    monkeypatch.setattr(scan_mod, "is_privileged", lambda: True)
    s = Scan("127.0.0.1", "U:53,T:80", method="syn")
    assert (s.ports.count("tcp"), s.ports.count("udp")) == (1, 1)
    with pytest.raises(ValueError, match="TCP only"):
        Scan("127.0.0.1", "U:53,T:80", method="connect")


def test_records_carry_the_ttl_into_the_ports_table() -> None:
    targets, ports = parse_targets(["127.0.0.1"]), parse_ports("1-3")
    batches = []
    sink = RecordSink(targets=targets, ports=ports, scan_id="t", decode=verdict,
                      on_batch=batches.append, counters=Counters())
    out = RecordBuffer(sink.feed)
    out.emit(0, 0, 0.001, 64)  # open, ttl 64
    out.emit(1, 1, 0.002, 255)  # closed
    out.emit(2, -1, None)  # silent: no ttl
    out.flush()
    sink.flush()
    assert RECORD.size == 25
    (batch,) = batches
    rows = sorted(batch.select(["port", "state", "reason", "ttl", "rtt_ms"]).to_pylist(),
                  key=lambda r: r["port"])
    assert [(r["port"], r["state"], r["reason"], r["ttl"]) for r in rows] == [
        (1, "open", "syn-ack", 64), (2, "closed", "reset", 255), (3, "filtered",
                                                                  "no-response", None)]
    assert math.isclose(rows[0]["rtt_ms"], 1.0, rel_tol=1e-6) and rows[2]["rtt_ms"] is None
