"""Scenarios of issue 9: Dask shards, resume after kill -9, and the dataset read by Dask.

- ``dask-scaling``: a rate-limited 65,535-port scan, 4 shards at 5k pps each against 1 shard
  at 5k pps on the same LocalCluster (wall ratio, ideal 0.25); and with no rate limit, the
  Dask scan against the same scan in one process (overhead ratio).
- ``resume``: kill -9 a scanning process at 30/60/90 %, resume it; the scanning lost (the
  checkpoint's low-water mark behind the work done at the kill) and the total wall time of
  the killed run + its resume against an uninterrupted run.
- ``dask-read``: a synthetic 10M-row dataset; open ports per host through
  ``read_scans(engine="dask")``; the client process's peak RSS.

The LocalCluster runs in a child process (its address printed on stdout) inside the
benchmark's private namespace, with ephemeral ports only (``dashboard_address=":0"``).
"""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .harness import save, timed
from .scenarios import lab_process

ALL = "1-65535"

_CLUSTER = """
import sys
from distributed import LocalCluster
with LocalCluster(n_workers=int(sys.argv[1]), processes=True, threads_per_worker=1,
                  dashboard_address=":0") as cluster:
    print(cluster.scheduler_address, flush=True)
    sys.stdin.read()
"""


@contextmanager
def cluster_client(n_workers: int) -> Iterator[Any]:
    from distributed import Client

    proc = subprocess.Popen([sys.executable, "-c", _CLUSTER, str(n_workers)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        with Client(proc.stdout.readline().strip()) as client:
            client.run(lambda: __import__("prtip_nb.engine.shardtask"))  # warm the workers
            yield client
    finally:
        proc.stdin.close()
        proc.wait(30)


def _open(res: Any) -> set[int]:
    ports = res.tables["ports"].to_pydict()
    return {p for p, s in zip(ports["port"], ports["state"], strict=True) if s == "open"}


def _wall(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def dask_scaling(runs: int = 3) -> dict[str, Any]:
    import prtip_nb as pn

    rated: list[dict[str, float]] = []
    free: list[dict[str, float]] = []
    exact = True
    with lab_process(), cluster_client(4) as client:
        pn.scan("127.0.0.1", ALL, cluster=client, shards=4, workers=1)  # warm-up
        for _ in range(runs):
            one, r1 = _wall(lambda: pn.scan("127.0.0.1", ALL, cluster=client, shards=1,
                                            rate=5000, seed=1))
            four, r4 = _wall(lambda: pn.scan("127.0.0.1", ALL, cluster=client, shards=4,
                                             rate=5000, seed=1))
            exact &= _open(r1) == _open(r4)
            rated.append({"one_shard_s": one, "four_shards_s": four, "ratio": four / one})
            single, rs = _wall(lambda: pn.scan("127.0.0.1", ALL, seed=2))
            dask, rd = _wall(lambda: pn.scan("127.0.0.1", ALL, cluster=client, shards=4,
                                             workers=1, seed=2))
            exact &= _open(rs) == _open(rd)
            free.append({"single_s": single, "dask_s": dask, "ratio": dask / single})
    summary = {
        "rate_limited_ratio": statistics.median(r["ratio"] for r in rated),
        "rate_limited_one_shard_s": statistics.median(r["one_shard_s"] for r in rated),
        "rate_limited_four_shards_s": statistics.median(r["four_shards_s"] for r in rated),
        "no_rate_overhead_ratio": statistics.median(r["ratio"] for r in free),
        "no_rate_single_s": statistics.median(r["single_s"] for r in free),
        "no_rate_dask_s": statistics.median(r["dask_s"] for r in free),
        "exact": exact,
        "runs": runs,
    }
    payload = {"scenario": "dask-scaling", "summary": summary, "rated": rated, "free": free}
    save("dask-scaling", payload)
    return payload


_CHILD = """
import sys, time, prtip_nb as pn
root, sid, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = (pn.Scan("127.0.0.1", ports="1-65535", output=root, rate=rate) if sid == "-"
     else pn.Scan.resume(root, sid)).start()
print("ID", s.scan_id, s._plan.start, flush=True)
while s.running:
    print("P", s.progress.done, flush=True)
    time.sleep(0.01)
s.wait()
"""


def _child(root: Path, sid: str, rate: float, kill_at: float | None) -> dict[str, Any]:
    """Run (or resume) a scan in a child process; kill -9 it at ``kill_at`` of all ports."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(root), sid, str(rate)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    start, done = 0, 0
    for line in proc.stdout:
        word, *rest = line.split()
        if word == "ID":
            sid, start = rest[0], int(rest[1])
        elif word == "P":
            done = start + int(rest[0])
            if kill_at is not None and done >= kill_at * 65_535:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait()
    return {"sid": sid, "done": done, "wall_s": time.perf_counter() - t0}


def _killed_and_resumed(root: Path, rate: float, kills: tuple[float, ...]) -> dict[str, Any]:
    """Kill -9 the scan at each fraction of ``kills``, resume it each time, to the end."""
    import prtip_nb as pn

    sid, total, lost = "-", 0.0, []
    for at in (*kills, None):
        r = _child(root, sid, rate, at)
        sid, total = r["sid"], total + r["wall_s"]
        if at is not None:
            ck = json.loads((root / f"scan_id={sid}" / "_checkpoint.json").read_text())
            lost.append((r["done"] - ck["shards"]["1/1"]["low_water"]) / rate)
    ports = pn.read_scans(root, sid).tables["ports"]
    exact = ports.num_rows == 65_535 and len(set(ports["port"].to_pylist())) == 65_535
    return {"total_s": total, "lost_s": lost, "exact": exact}


def resume(runs: int = 3, rate: float = 5000) -> dict[str, Any]:
    """A 65,535-port scan at ``rate`` (about 13 s): uninterrupted, killed once at 50 %, and
    killed at 30, 60 and 90 %; each killed run resumed in a new process, as after a crash."""
    rows = []
    with lab_process():
        for _ in range(runs):
            tmp = Path(tempfile.mkdtemp(prefix="prtip-resume-"))
            try:
                whole = _child(tmp / "a", "-", rate, None)["wall_s"]
                once = _killed_and_resumed(tmp / "b", rate, (0.5,))
                thrice = _killed_and_resumed(tmp / "c", rate, (0.3, 0.6, 0.9))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            rows.append({"uninterrupted_s": whole, "one_kill": once, "three_kills": thrice,
                         "ratio_one_kill": once["total_s"] / whole,
                         "ratio_three_kills": thrice["total_s"] / whole})
    lost = [x for r in rows for k in ("one_kill", "three_kills") for x in r[k]["lost_s"]]
    summary = {
        "max_lost_s": max(lost),
        "median_lost_s": statistics.median(lost),
        "uninterrupted_median_s": statistics.median(r["uninterrupted_s"] for r in rows),
        "ratio_one_kill": statistics.median(r["ratio_one_kill"] for r in rows),
        "ratio_three_kills": statistics.median(r["ratio_three_kills"] for r in rows),
        "exact": all(r[k]["exact"] for r in rows for k in ("one_kill", "three_kills")),
        "rate": rate,
        "runs": runs,
    }
    payload = {"scenario": "resume", "summary": summary, "runs": rows}
    save("resume", payload)
    return payload


def write_synthetic(root: Path, hosts: int = 1000, ports: int = 10_000) -> str:
    """A finished scan of ``hosts`` × ``ports`` rows (1% open), in parts of 500k rows."""
    from datetime import UTC, datetime

    import numpy as np
    import pyarrow as pa

    from prtip_nb.results import ScanMeta, _files, schema

    sid = "20260101T000000Z-synth0"
    meta = ScanMeta(sid, {"targets": ["synthetic"]}, datetime(2026, 1, 1, tzinfo=UTC),
                    datetime(2026, 1, 1, 1, tzinfo=UTC))
    directory = _files.scan_dir(root, sid)
    names = pa.array([f"10.{h // 256}.{h % 256}.1" for h in range(hosts)])
    fields = schema.file_schema("ports")
    rng = np.random.default_rng(1)
    rows, per = hosts * ports, 500_000
    for n, lo in enumerate(range(0, rows, per)):
        j = np.arange(lo, min(rows, lo + per))
        is_open = (rng.random(len(j)) < 0.01).astype(np.int32)
        cols = {
            "host": names.take(pa.array(j % hosts)),
            "family": pa.array(np.full(len(j), 4, np.uint8)),
            "proto": pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(j), np.int32)),
                                                    pa.array(["tcp"])),
            "port": pa.array((j // hosts + 1).astype(np.uint16)),
            "state": pa.DictionaryArray.from_arrays(pa.array(1 - is_open),
                                                    pa.array(["open", "closed"])),
            "reason": pa.DictionaryArray.from_arrays(pa.array(1 - is_open),
                                                     pa.array(["syn-ack", "reset"])),
        }
        arrays = [cols.get(f.name, pa.nulls(len(j), f.type)) for f in fields]
        _files.write_part(_files.part_path(directory, "ports", n),
                          pa.Table.from_arrays(arrays, schema=fields), meta.parquet_metadata())
    hosts_t = schema.empty("hosts").drop_columns(["scan_id"])
    _files.write_part(_files.part_path(directory, "hosts", 0), hosts_t, meta.parquet_metadata())
    return sid


_READ = """
import sys, prtip_nb as pn
ddf = pn.read_scans(sys.argv[1], engine="dask")
counts = ddf[ddf["state"] == "open"].groupby("host").size().compute()
print("RESULT", len(counts), int(counts.sum()))
"""


def dask_read(runs: int = 3) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="prtip-dask-read-"))
    try:
        write_synthetic(tmp)
        results = [timed([sys.executable, "-c", _READ, str(tmp)], "dask") for _ in range(runs)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {
        "rows": 10_000_000,
        "peak_rss_mib": max(r.peak_rss_bytes for r in results) / 2**20,
        "median_s": statistics.median(r.wall_s for r in results),
        "runs": runs,
    }
    payload = {"scenario": "dask-read", "summary": summary}
    save("dask-read", payload)
    return payload
