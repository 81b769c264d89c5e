"""UDP and -sS -sU scans split into shards, and resumed: always the unsharded, uninterrupted
result. Loopback in the suite's private namespace, real sockets, real Parquet parts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import prtip_nb as pn
from prtip_nb.engine.distributed import DistributedScan
from tests.conftest import tcp_listeners
from tests.net.udplab import udp_service

pytestmark = pytest.mark.usefixtures("netns", "root")

V4 = "127.0.0.1"
TCP_OPEN = [22, 80, 443, 1499]
UDP_OPEN = [7, 53, 1000, 1500, 2999]
SEED = 4_242


@pytest.fixture(scope="module")
def services() -> Iterator[None]:
    with tcp_listeners(TCP_OPEN, backlog=512), udp_service(V4, UDP_OPEN):
        yield


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    cols = table.select(["host", "proto", "port", "state", "reason"]).to_pydict()
    return sorted(zip(*(cols[k] for k in cols), strict=True))


CASES = {  # method, ports, rows
    "udp": ("udp", "1-3000", 3000),
    "syn+udp": ("syn", "T:1-1500,U:1-1500", 3000),
}


@pytest.fixture(scope="module")
def whole(services: None) -> dict[str, list[tuple[Any, ...]]]:
    """The unsharded, uninterrupted result of each case."""
    out = {}
    for name, (method, ports, n) in CASES.items():
        rows = _rows(pn.scan(V4, ports, method=method, seed=SEED).tables["ports"])
        assert len(rows) == n
        opened = {(r[1], r[2]) for r in rows if r[3] == "open"}
        want = {("udp", p) for p in UDP_OPEN if p <= (3000 if method == "udp" else 1500)}
        if method == "syn":
            want |= {("tcp", p) for p in TCP_OPEN}
        assert opened == want
        out[name] = rows
    return out


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("n", [2, 3])
def test_shards_run_separately_merge_to_the_unsharded_result(
    whole: dict[str, list[tuple[Any, ...]]], tmp_path: Path, case: str, n: int
) -> None:
    method, ports, size = CASES[case]
    ids, totals = [], []
    for k in range(1, n + 1):
        s = pn.Scan(V4, ports, method=method, seed=SEED, shard=(k, n), output=str(tmp_path))
        totals.append(s.counters.total)
        ids.append(s.start().wait().scan_id)
        assert s.counters.done == s.counters.total  # the progress total was the shard's
    assert sum(totals) == size
    merged = pn.read_scans(tmp_path, ids).tables["ports"]
    assert merged.num_rows == size  # disjoint: no port in two shards, none missed
    assert _rows(merged) == whole[case]


@pytest.mark.parametrize("case", list(CASES))
def test_distributed_scan_in_process_merges_to_the_unsharded_result(
    whole: dict[str, list[tuple[Any, ...]]], tmp_path: Path, case: str
) -> None:
    method, ports, size = CASES[case]
    ds = DistributedScan(V4, ports, method=method, seed=SEED, shards=3, output=str(tmp_path))
    assert ds.counters.total == size == sum(ds.totals.values())
    res = ds.start().wait()
    assert ds.status == "completed"
    assert _rows(res.tables["ports"]) == whole[case]
    assert ds.progress.done == size


# -- resume of -sS -sU ---------------------------------------------------------------------
RESUME_PORTS = "T:1-5000,U:1-20000"  # 25,000 rows; the TCP part's positions come first
N_TCP = 5000


def _low_water(root: Path, sid: str) -> int:
    ck = json.loads((root / f"scan_id={sid}" / "_checkpoint.json").read_text())
    return int(ck["shards"]["1/1"]["low_water"])


@pytest.fixture(scope="module")
def uninterrupted(services: None) -> list[tuple[Any, ...]]:
    rows = _rows(pn.scan(V4, RESUME_PORTS, method="syn", seed=SEED).tables["ports"])
    assert len(rows) == 25_000
    return rows


@pytest.mark.parametrize("stop_at", [2_000, N_TCP + 6_000], ids=["in-syn", "in-udp"])
def test_cancelled_syn_udp_scan_resumes_where_it_stopped(
    uninterrupted: list[tuple[Any, ...]], tmp_path: Path, stop_at: int
) -> None:
    s = pn.Scan(V4, RESUME_PORTS, method="syn", seed=SEED, rate=20_000, output=str(tmp_path))
    s.start()
    t0 = time.monotonic()
    while s.progress.done < stop_at and s.running:
        assert time.monotonic() - t0 < 20
        time.sleep(0.005)
    s.cancel()
    first = s.wait()
    sid = s.scan_id or ""
    assert s.status == "cancelled" and first.tables["ports"].num_rows < 25_000
    low = _low_water(tmp_path, sid)
    if stop_at > N_TCP:
        assert low >= N_TCP  # the SYN part is complete on disk ...
    else:
        assert 0 < low < N_TCP

    r = pn.Scan.resume(tmp_path, sid, rate=None)
    assert r.counters.total == 25_000 - low
    res = r.start().wait()
    udp_sent = r.engine_stats["udp"]["round0_sent"]
    if stop_at > N_TCP:
        assert set(r.engine_stats) == {"udp"}  # ... so the resume sent no SYN at all
        assert udp_sent == 25_000 - low
    else:
        assert r.engine_stats["round0_sent"] == N_TCP - low  # SYN went on from its mark
        assert udp_sent == 20_000
    assert _rows(res.tables["ports"]) == uninterrupted
    assert pn.read_scans(tmp_path, sid).tables["ports"].num_rows == 25_000
    assert _low_water(tmp_path, sid) == 25_000


_CHILD = """
import sys, time, prtip_nb as pn
s = pn.Scan("127.0.0.1", {ports!r}, method="syn", seed={seed}, rate=20_000,
            output=sys.argv[1]).start()
print("ID", s.scan_id, flush=True)
while s.running:
    print("P", s.progress.done, flush=True)
    time.sleep(0.01)
"""


def test_syn_udp_scan_killed_in_its_udp_part_resumes_without_the_syn_part(
    uninterrupted: list[tuple[Any, ...]], tmp_path: Path
) -> None:
    """kill -9 of the scanning process once the UDP part is under way: the checkpoint
    counts the whole SYN part, and the resume (another process) sends UDP probes only."""
    import signal
    import subprocess
    import sys

    code = _CHILD.format(ports=RESUME_PORTS, seed=SEED)
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    sid, done = "", 0
    try:
        for line in proc.stdout:  # bounded: the child ends with its scan
            word, value = line.split()
            if word == "ID":
                sid = value
            elif int(value) >= N_TCP + 8_000:
                done = int(value)
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(10)
    assert sid and done, "the scan ended before the kill point"
    low = _low_water(tmp_path, sid)
    assert N_TCP <= low <= done
    r = pn.Scan.resume(tmp_path, sid)
    res = r.start().wait()
    assert set(r.engine_stats) == {"udp"}
    assert r.engine_stats["udp"]["round0_sent"] == 25_000 - low
    assert _rows(res.tables["ports"]) == uninterrupted


def test_distributed_syn_udp_scan_cancelled_then_resumed(
    uninterrupted: list[tuple[Any, ...]], tmp_path: Path
) -> None:
    """Shards in this process, one after the other: cancelled during the first shard's
    UDP part, resumed with pn.resume; that shard's mark is past its SYN part."""
    ds = DistributedScan(V4, RESUME_PORTS, method="syn", seed=SEED, shards=2, rate=10_000,
                         output=str(tmp_path))
    ds.start()
    t0 = time.monotonic()
    while ds.progress.done < N_TCP // 2 + 4_000:  # shard 1: 2,500 TCP then 10,000 UDP
        assert ds.running and time.monotonic() - t0 < 20
        time.sleep(0.01)
    ds.cancel()
    ds.wait()
    assert ds.status == "cancelled" and ds.scan_id is not None
    directory = tmp_path / f"scan_id={ds.scan_id}"
    ck = json.loads((directory / "_checkpoint-s001.json").read_text())
    assert ck["shards"]["1/2"]["low_water"] >= N_TCP // 2
    res = pn.resume(tmp_path, ds.scan_id)
    assert _rows(res.tables["ports"]) == uninterrupted


def test_cli_shards_of_a_udp_scan_cover_every_port_once(
    services: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    from prtip_nb.cli import main

    seen: list[int] = []
    for k in (1, 2, 3):
        assert main(["scan", "-sU", "--shard", f"{k}/3", "-p", "1-60", V4, "--seed", "7",
                     "--no-progress"]) == 0
        seen += [int(p) for p in re.findall(r"^(\d+)/udp", capsys.readouterr().out, re.M)]
    assert sorted(seen) == list(range(1, 61))
