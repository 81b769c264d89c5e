"""The one verdict table (probes.verdicts): every scan kind's codes in nmap's words, and the
shard arithmetic (targets.shard_len) that every engine and the progress total share."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from prtip_nb.engine import syn, synrx, udprx
from prtip_nb.engine.sink import RecordSink
from prtip_nb.net import connect
from prtip_nb.net.counters import Counters
from prtip_nb.probes import records, verdicts
from prtip_nb.probes.verdicts import (
    CLOSED,
    ICMP4,
    ICMP6,
    NO_RESPONSE,
    OPEN,
    connect_verdict,
    syn_verdict,
    udp_verdict,
    verdict,
)
from prtip_nb.targets import (
    Permutation,
    TargetSpace,
    iter_batches,
    parse_ports,
    parse_targets,
    shard_len,
)


def test_each_kind_in_nmaps_words() -> None:
    assert syn_verdict(OPEN) == ("open", "syn-ack")
    assert syn_verdict(CLOSED) == ("closed", "reset")
    assert syn_verdict(NO_RESPONSE) == ("filtered", "no-response")
    assert syn_verdict(ICMP4 + 13) == ("filtered", "admin-prohibited")
    assert syn_verdict(ICMP4 + 7) == ("filtered", "icmp-unreach-7")  # named, never lost
    assert syn_verdict(ICMP6 + 4) == ("filtered", "port-unreach")
    assert udp_verdict(OPEN) == ("open", "udp-response")
    assert udp_verdict(CLOSED) == ("closed", "port-unreach")
    assert udp_verdict(NO_RESPONSE) == ("open|filtered", "no-response")
    assert udp_verdict(ICMP4 + 3) == ("filtered", "port-unreach")  # from another address
    assert connect_verdict(0) == ("open", "syn-ack")
    assert connect_verdict(errno.ECONNREFUSED) == ("closed", "conn-refused")
    assert connect_verdict(errno.EHOSTUNREACH) == ("filtered", "host-unreach")
    assert connect_verdict(errno.ETIMEDOUT) == ("filtered", "no-response")
    assert connect_verdict(NO_RESPONSE) == ("filtered", "no-response")
    assert connect_verdict(errno.EPROTO) == ("filtered", "eproto")
    assert verdict("udp", NO_RESPONSE) == udp_verdict(NO_RESPONSE)
    with pytest.raises(KeyError):
        verdict("sctp", 0)


def test_one_table_behind_every_engine() -> None:
    # The receive paths and engines use the table's objects, not copies of them.
    assert synrx.verdict is syn.verdict is syn_verdict
    assert udprx.udp_verdict is udp_verdict
    assert synrx.NO_RESPONSE is udprx.NO_RESPONSE is connect.NO_RESPONSE is records.NO_RESPONSE
    assert synrx.ICMP4_CODES is udprx.ICMP4_CODES is verdicts.ICMP4_CODES
    assert records.DTYPE.itemsize == records.RECORD.size
    assert records.DTYPE.names == ("index", "code", "rtt_ms", "t_us", "ttl")


def test_sink_reads_a_mixed_scan_through_the_table() -> None:
    targets, ports = parse_targets(["198.51.100.1"]), parse_ports("T:80-81,U:53")
    batches = []
    sink = RecordSink(targets=targets, ports=ports, scan_id="t", decode=syn_verdict,
                      decode_udp=udp_verdict, on_batch=batches.append, counters=Counters(),
                      max_age=None)
    rec = np.zeros(3, records.DTYPE)
    rec["index"], rec["code"] = [0, 1, 2], [OPEN, ICMP4 + 10, NO_RESPONSE]
    sink.feed(rec.tobytes())
    sink.flush()
    rows = {(r["port"], r["proto"]): (r["state"], r["reason"])
            for b in batches for r in b.to_pylist()}
    assert rows == {
        (80, "tcp"): ("open", "syn-ack"),
        (81, "tcp"): ("filtered", "host-prohibited"),
        (53, "udp"): ("open|filtered", "no-response"),
    }


@pytest.mark.parametrize("size", [0, 1, 2, 7, 10, 1000, 65535])
@pytest.mark.parametrize("shard", [(1, 1), (1, 3), (2, 3), (3, 3), (4, 4)])
@pytest.mark.parametrize("start", [0, 1, 5])
def test_shard_len_counts_what_iter_batches_yields(size: int, shard: tuple[int, int],
                                                   start: int) -> None:
    expected = len(range(shard[0] - 1, size, shard[1])[start:])
    assert shard_len(size, shard, start) == expected


@pytest.mark.parametrize("n_ports", [1, 3, 125])
@pytest.mark.parametrize("shard", [(1, 1), (2, 3), (4, 4)])
@pytest.mark.parametrize("start", [0, 2])
def test_shard_len_is_what_a_scan_sends(n_ports: int, shard: tuple[int, int], start: int) -> None:
    space = TargetSpace(parse_targets(["198.51.100.0/29"]), parse_ports(f"1-{n_ports}"))
    perm = Permutation(space.size, 7)
    sent = sum(len(b) for b in iter_batches(space, perm, shard=shard, start=start, batch=64))
    assert sent == shard_len(space.size, shard, start)
