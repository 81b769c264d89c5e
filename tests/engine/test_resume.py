"""Checkpoints and resume: kill -9 a scanning process, resume it, get the exact dataset.

Real processes, real sockets in the suite's private namespace, real Parquet parts; only
the watermark has a pure-logic unit test besides.
"""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import prtip_nb as pn
from prtip_nb.engine.checkpoint import Watermark
from prtip_nb.results import schema
from prtip_nb.targets import Permutation
from tests.conftest import tcp_listeners

# Outside the ephemeral range (32768-60999): no TIME_WAIT of an earlier connect holds them.
OPEN = [1, 22, 80, 443, 3306, 8080, 31337, 61000, 64999, 65535]
RATE = 22_000  # probes/s: a 65,535-port scan lasts about 3 s


@pytest.fixture
def listening(netns: None) -> Iterator[list[int]]:
    with tcp_listeners(OPEN, backlog=512) as ports:
        yield ports


# -- pure logic ----------------------------------------------------------------------------
def test_watermark_counts_the_complete_prefix_of_out_of_order_marks() -> None:
    rng = np.random.default_rng(7)
    order = np.arange(200_000)
    # Locally shuffled, as verdicts arrive: each within ~3,000 positions of its turn.
    noisy = np.argsort(order + rng.integers(0, 3000, order.size), kind="stable")
    w = Watermark()
    done = np.zeros(order.size, dtype=bool)
    for chunk in np.array_split(noisy, 97):
        w.mark(chunk)
        done[chunk] = True
        expect = int(np.argmin(done)) if not done.all() else order.size
        assert w.low == expect
    assert w.low == order.size
    assert len(w.window) <= 1 << 14  # the window, not the scan: memory stays small
    w.mark(np.array([5, 10]))  # below the mark (a resume's overlap): ignored
    assert w.low == order.size


def test_unshuffle_array_inverts_shuffle() -> None:
    for size, seed in ((1, 0), (7, 3), (65_535, 11), (1_000_003, 12)):
        perm = Permutation(size, seed)
        i = np.arange(min(size, 50_000), dtype=np.uint64)
        assert (perm.unshuffle_array(perm.shuffle_array(i)) == i).all()


# -- kill -9 and resume --------------------------------------------------------------------
_CHILD = """
import sys, time, prtip_nb as pn
root, sid = sys.argv[1], sys.argv[2]
s = (pn.Scan("127.0.0.1", ports="1-65535", output=root, rate={rate}) if sid == "-"
     else pn.Scan.resume(root, sid)).start()
print("ID", s.scan_id, s.plan.start, flush=True)
while s.running:
    print("P", s.progress.done, flush=True)
    time.sleep(0.02)
"""


def _run_and_kill(root: Path, sid: str, at: float) -> tuple[str, int]:
    """Scan (or resume) in a child; kill -9 it once ``at`` of all ports are done.

    Returns the scan id and how many positions were done at the kill.
    """
    code = _CHILD.format(rate=RATE)
    proc = subprocess.Popen([sys.executable, "-c", code, str(root), sid],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    start, done = 0, 0
    try:
        for line in proc.stdout:
            word, *rest = line.split()
            if word == "ID":
                sid, start = rest[0], int(rest[1])
            elif word == "P" and start + int(rest[0]) >= at * 65_535:
                done = start + int(rest[0])
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(10)
    assert done, "the scan ended before the kill point"
    return sid, done


def _checkpoint(root: Path, sid: str) -> dict:
    return json.loads((root / f"scan_id={sid}" / "_checkpoint.json").read_text())


def test_kill_at_30_60_90_percent_then_resume_is_exact(
    listening: list[int], tmp_path: Path
) -> None:
    sid, low = "-", 0
    for at in (0.3, 0.6, 0.9):
        sid, done = _run_and_kill(tmp_path, sid, at)
        ck = _checkpoint(tmp_path, sid)
        assert ck["status"] == "running"
        ck_path = tmp_path / f"scan_id={sid}" / "_checkpoint.json"
        assert stat.S_IMODE(ck_path.stat().st_mode) == 0o600  # it holds the cookie secret
        assert not bool(pn.list_scans(tmp_path)["complete"].iloc[0])
        mark = ck["shards"]["1/1"]["low_water"]
        assert low <= mark <= done  # the mark only moves forward, never past the work
        lost_s = (done - mark) / RATE
        assert lost_s <= 1.0, f"kill at {at:.0%}: {lost_s:.2f} s of scanning lost"
        low = mark
        if at == 0.3:  # a cut-short scan reads back deduplicated, both ways
            arrow = pn.read_scans(tmp_path, sid).tables["ports"]
            ddf = pn.read_scans(tmp_path, sid, engine="dask").compute()
            assert len(ddf) == arrow.num_rows >= mark
            assert not ddf.duplicated(["host", "proto", "port"]).any()
    res = pn.resume(tmp_path, sid)

    ports = res.ports
    assert sorted(ports.loc[ports["state"] == "open", "port"].astype(int)) == listening
    assert len(ports) == 65_535 and ports["port"].nunique() == 65_535  # 0 gaps
    # On disk too: the final parts hold each port exactly once (0 duplicate rows).
    directory = tmp_path / f"scan_id={sid}"
    disk = pa.concat_tables(pq.read_table(p) for p in sorted(directory.glob("ports/*.parquet")))
    assert disk.num_rows == 65_535
    assert len(set(disk["port"].to_pylist())) == 65_535
    assert _checkpoint(tmp_path, sid)["status"] == "completed"
    assert not list(directory.rglob("*.tmp"))  # a killed writer's temp files are cleared
    assert bool(pn.list_scans(tmp_path)["complete"].iloc[0])
    # The seed stays in the checkpoint, never in the dataset's footers.
    footer = pq.read_schema(next(directory.glob("hosts/*.parquet"))).metadata
    assert "seed" not in json.loads(footer[schema.META_CONFIG])
    assert "seed" not in res.config
    again = pn.resume(tmp_path, sid)  # a completed scan is read back, not rescanned
    assert again.tables["ports"].num_rows == 65_535


def test_cancel_then_resume_appends_to_the_same_scan(
    listening: list[int], tmp_path: Path
) -> None:
    s = pn.Scan("127.0.0.1", ports="1-65535", output=str(tmp_path), rate=40_000).start()
    while s.progress.done < 25_000:
        assert s.running
        time.sleep(0.02)
    s.cancel()
    first = s.wait()
    assert s.status == "cancelled" and 0 < first.tables["ports"].num_rows < 65_535
    sid = s.scan_id
    assert sid is not None
    r = pn.Scan.resume(tmp_path, sid, rate=None)  # pacing may change; the space may not
    assert r.counters.total == 65_535 - _checkpoint(tmp_path, sid)["shards"]["1/1"]["low_water"]
    with pytest.raises(pn.ConfigError, match="keeps its ports"):
        pn.Scan.resume(tmp_path, sid, ports="1-10")
    res = r.start().wait()
    assert res.scan_id == sid and res.meta is not None
    assert res.meta.started == first.meta.started  # type: ignore[union-attr]
    ports = res.ports
    assert len(ports) == 65_535 and ports["port"].nunique() == 65_535
    assert sorted(ports.loc[ports["state"] == "open", "port"].astype(int)) == listening
    # Both runs' telemetry, the second's times continuing after the first's.
    t = res.telemetry["t"].astype(float).tolist()
    assert t == sorted(t) and len(t) > len(first.telemetry)
    assert pn.read_scans(tmp_path).tables["ports"].num_rows == 65_535


def test_cli_resume(listening: list[int], tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    from prtip_nb.cli import main

    s = pn.Scan("127.0.0.1", ports="1-30000", output=str(tmp_path), rate=30_000).start()
    while s.progress.done < 3000:
        time.sleep(0.02)
    s.cancel()
    s.wait()
    assert s.scan_id is not None
    capsys.readouterr()
    assert main(["resume", str(tmp_path), s.scan_id]) == 0
    out = capsys.readouterr().out
    assert "30000 port rows" in out
    for port in (p for p in listening if p <= 30_000):
        assert f"\n{port}/tcp" in out
