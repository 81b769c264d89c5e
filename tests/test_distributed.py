"""Sharded scans: shards merged equal the unsharded scan; Dask shards on a LocalCluster.

Everything scans 127.0.0.1 inside the suite's private namespace, on listeners opened here.
The LocalCluster's worker processes are started from this process, so they are in the
namespace too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import prtip_nb as pn
from prtip_nb.engine.distributed import DistributedScan
from prtip_nb.engine.events import Progress
from tests.conftest import in_netns, tcp_listeners
from tests.probes.test_pseudo_services import BEHIND, PSEUDO, pseudo_host  # noqa: F401

pytestmark = pytest.mark.usefixtures("netns")

OPEN = [7, 22, 80, 443, 1999, 2000, 2999, 3000]
SEED = 20_261_128


@pytest.fixture(scope="module")
def listening() -> Iterator[list[int]]:
    if not in_netns():
        pytest.skip("needs a private network namespace: run the suite with `make test`")
    with tcp_listeners(OPEN, backlog=512) as ports:
        yield ports


# The LocalCluster lives in a child process of its own: multiprocessing's resource tracker
# (started for the spawned workers) would otherwise outlive the cluster as a child of the
# test process, which other tests check for. dashboard_address=None still serves HTTP on
# 8787; ":0" takes an ephemeral port, as the scheduler and workers do (32768+): the scans
# below stay under 32768, on our listeners only.
_CLUSTER = """
import sys
from distributed import LocalCluster
with LocalCluster(n_workers=int(sys.argv[1]), processes=True, threads_per_worker=1,
                  dashboard_address=":0") as cluster:
    print(cluster.scheduler_address, flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


@contextmanager
def local_cluster(n_workers: int) -> Iterator[Any]:
    """A Client of a LocalCluster with ``n_workers`` worker processes (in this namespace)."""
    distributed = pytest.importorskip("distributed")
    proc = subprocess.Popen([sys.executable, "-c", _CLUSTER, str(n_workers)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://"), "the LocalCluster did not start"
        with distributed.Client(address) as c:
            yield c
    finally:
        proc.stdin.close()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client(listening: list[int]) -> Iterator[Any]:
    with local_cluster(2) as c:
        yield c


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    cols = table.select(["host", "proto", "port", "state", "reason"]).to_pydict()
    return sorted(zip(*(cols[k] for k in cols), strict=True))


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shards_run_separately_merge_to_the_unsharded_result(
    listening: list[int], tmp_path: Path, n: int
) -> None:
    whole = pn.scan("127.0.0.1", "1-3000", seed=SEED)
    ids = []
    for k in range(1, n + 1):
        ids.append(pn.Scan("127.0.0.1", "1-3000", seed=SEED, shard=(k, n),
                           output=str(tmp_path)).start().wait().scan_id)
    merged = pn.read_scans(tmp_path, ids).tables["ports"]
    assert merged.num_rows == 3000  # disjoint: no port in two shards, none missed
    assert _rows(merged) == _rows(whole.tables["ports"])


def test_dask_shards_merge_to_the_single_process_result(
    client: Any, listening: list[int], tmp_path: Path
) -> None:
    single = pn.scan("127.0.0.1", "1-20000", seed=SEED)
    ds = DistributedScan("127.0.0.1", "1-20000", seed=SEED, cluster=client, shards=4,
                         output=str(tmp_path))
    progress: list[Progress] = []
    found: list[int] = []
    ds.subscribe(lambda ev: progress.append(ev), Progress)
    ds.subscribe(lambda ev: found.append(ev.port), pn.engine.events.PortFound)
    res = ds.start().wait()

    assert ds.status == "completed"
    a, b = _rows(res.tables["ports"]), _rows(single.tables["ports"])
    assert a == b, (sorted(set(a) - set(b))[:5], sorted(set(b) - set(a))[:5], len(a), len(b))
    assert sorted(found) == listening  # every shard's results reached the caller's bus
    assert progress and {p.total for p in progress} == {20_000}  # one scan, one total
    assert progress[-1].done == 20_000
    # One dataset: the shards' parts side by side under one scan_id, marked complete.
    directory = tmp_path / f"scan_id={res.scan_id}"
    names = [p.name for p in directory.glob("ports/*.parquet")]
    assert {n[: len("part-s001-")] for n in names} == {f"part-s{k:03d}-" for k in range(1, 5)}
    assert len(list(directory.glob("hosts/*.parquet"))) == 1
    assert set(res.telemetry["shard"].dropna().astype(int)) == {1, 2, 3, 4}
    assert set(res.events["shard"].dropna().astype(int)) == {1, 2, 3, 4}
    # Each shard's memory is its Dask worker's (the process tree of where it ran), not the
    # caller's: about what the worker holds when asked afterwards (measured 134-137 MB
    # against 128 MB workers and a 217 MB caller).
    import psutil

    workers_rss = client.run(lambda: psutil.Process().memory_info().rss)
    biggest = max(workers_rss.values())
    by_shard = res.telemetry.groupby(res.telemetry["shard"].astype(int))["rss_bytes"].max()
    assert ((by_shard > 0.5 * min(workers_rss.values()))
            & (by_shard < 1.25 * biggest)).all(), (by_shard, workers_rss)  # fmt: skip
    assert "seed" not in res.config and res.config["shards"] == 4
    back = pn.read_scans(tmp_path, res.scan_id)
    assert _rows(back.tables["ports"]) == _rows(single.tables["ports"])
    ddf = pn.read_scans(tmp_path, engine="dask")
    counts = ddf[ddf["state"] == "open"].groupby("host").size().compute()
    assert counts.to_dict() == {"127.0.0.1": len(listening)}


def test_dask_shards_of_a_syn_udp_scan_merge_to_the_single_process_result(
    client: Any, listening: list[int], tmp_path: Path
) -> None:
    """-sS -sU and -sU on Dask: each shard runs both engines on its part of each protocol."""
    if os.geteuid() != 0:
        pytest.skip("needs root: SYN and UDP scans send raw packets")
    from tests.net.udplab import udp_service

    with udp_service("127.0.0.1", [53, 1000, 2999]):
        for method, ports in (("syn", "T:1-3000,U:1-3000"), ("udp", "1-3000")):
            single = pn.scan("127.0.0.1", ports, method=method, seed=SEED)
            out = tmp_path / method
            res = pn.scan("127.0.0.1", ports, method=method, seed=SEED, cluster=client,
                          shards=3, output=str(out))
            a, b = _rows(res.tables["ports"]), _rows(single.tables["ports"])
            assert len(a) == len(b) == (6000 if method == "syn" else 3000)
            assert a == b, (sorted(set(a) - set(b))[:5], sorted(set(b) - set(a))[:5])
            opened = {(r[1], r[2]) for r in a if r[3] == "open"}
            assert {("udp", 53), ("udp", 1000), ("udp", 2999)} <= opened


def test_dask_cancel_reaches_every_shard_then_resume(
    client: Any, listening: list[int], tmp_path: Path
) -> None:
    ds = DistributedScan("127.0.0.1", "1-32767", seed=SEED, cluster=client, shards=6,
                         output=str(tmp_path), rate=3000, workers=1)
    ds.start()
    t0 = time.monotonic()
    while ds.progress.done < 5000:
        assert time.monotonic() - t0 < 20, "no progress from the shards"
        time.sleep(0.05)
    live = ds.result  # while it runs: the parts on disk so far, telemetry as forwarded
    assert live.tables["ports"].num_rows > 0 and live.tables["telemetry"].num_rows > 0
    ds.cancel()
    t_cancel = time.monotonic()
    partial = ds.wait()
    assert time.monotonic() - t_cancel < 5  # running shards stopped, queued ones skipped
    assert ds.status == "cancelled"
    assert 0 < partial.tables["ports"].num_rows < 32_767
    assert ds.scan_id is not None
    res = pn.resume(tmp_path, ds.scan_id, cluster=client, rate=None)
    ports = res.ports
    assert len(ports) == 32_767 and ports["port"].nunique() == 32_767
    assert sorted(ports.loc[ports["state"] == "open", "port"].astype(int)) == listening
    disk = pn.read_scans(tmp_path, ds.scan_id).tables["ports"]
    assert disk.num_rows == 32_767


def test_worker_without_raw_socket_privilege_fails_fast(listening: list[int]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to start a worker and then drop its privileges")
    with local_cluster(1) as c:

        def drop() -> None:  # a real unprivileged worker: no root, no CAP_NET_RAW
            os.setgid(65534)
            os.setuid(65534)

        c.run(drop)
        t0 = time.monotonic()
        with pytest.raises(pn.PrivilegeError, match=r"shard \d .* on worker .*CAP_NET_RAW"):
            pn.scan("127.0.0.1", "1-100", method="syn", cluster=c, shards=2)
        assert time.monotonic() - t0 < 10


def test_lost_worker_shard_is_resumed_by_another(listening: list[int], tmp_path: Path) -> None:
    """A worker process killed (SIGKILL) mid-shard: Dask reruns its task on a worker that
    is alive, the rerun goes on from the shard's checkpoint (not from its start), and the
    scan completes with exactly the single-process scan's rows."""
    import signal

    single = pn.scan("127.0.0.1", "1-16000", seed=SEED)
    with local_cluster(2) as c:
        ds = DistributedScan("127.0.0.1", "1-16000", seed=SEED, cluster=c, shards=2,
                             output=str(tmp_path), rate=2000, workers=1)
        ds.start()
        t0 = time.monotonic()
        victim = None
        while victim is None:
            assert time.monotonic() - t0 < 30, "the shards made no progress"
            time.sleep(0.1)
            if ds.progress.done < 3000:  # ~1.5 s in: each shard has checkpointed a mark
                continue
            busy = [w for w, keys in c.processing().items() if keys]
            if busy:
                victim = busy[0]
        pid = c.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)  # a worker of the cluster this test started
        res = ds.wait(timeout=60)

    assert ds.status == "completed"
    a, b = _rows(res.tables["ports"]), _rows(single.tables["ports"])
    assert a == b, (sorted(set(a) - set(b))[:5], sorted(set(b) - set(a))[:5], len(a), len(b))
    assert res.tables["ports"].num_rows == 16_000  # no duplicate row after the rerun
    resumed = [s for s in ds.shard_summaries if s.get("resumed_from")]
    assert len(resumed) == 1 and resumed[0]["resumed_from"] > 0, ds.shard_summaries
    assert resumed[0]["done"] < 8000  # the rerun probed what was left, not the whole shard
    back = pn.read_scans(tmp_path, res.scan_id).tables["ports"]
    assert _rows(back) == b


# --- what only a shard's hosts table knows survives the merge -----------------------------


def _check_pseudo_merge(res: Any, host: str) -> None:
    hosts = res.hosts.set_index("host")
    assert hosts.loc[host, "pseudo_services"] == True  # noqa: E712 (a nullable bool)
    assert "scanned TCP ports open" in hosts.loc[host, "pseudo_reason"]
    assert hosts.loc[host, "open"] == 60  # the counts are of every shard's ports
    assert hosts.loc[host, "state"] == "up"
    scripts = res.scripts
    assert scripts["id"].tolist() == ["banner"] and scripts["port"].tolist() == [BEHIND]
    assert scripts["output"].iloc[0].startswith("SSH-2.0-OpenSSH")
    ssh = res.ports.set_index("port").loc[BEHIND]
    assert (ssh["service"], ssh["verified"]) == ("ssh", True)


@pytest.mark.usefixtures("pseudo_host")
@pytest.mark.parametrize("where", ["in-process", "dask"])
def test_sharded_sv_scan_keeps_pseudo_services_and_scripts(
    tmp_path: Path, request: pytest.FixtureRequest, where: str
) -> None:
    """-sV with --verify and a script, in 2 shards (30 ports each, each flags the host):
    hosts.pseudo_services, its reason and the scripts rows come through the merge, in
    memory and through the dataset the driver writes."""
    cluster = request.getfixturevalue("client") if where == "dask" else None
    opts = dict(service=True, scripts=["banner"], seed=SEED, cluster=cluster, shards=2)
    _check_pseudo_merge(pn.scan(PSEUDO, "2000-2059", **opts), PSEUDO)
    res = pn.scan(PSEUDO, "2000-2059", output=str(tmp_path), **opts)
    _check_pseudo_merge(res, PSEUDO)
    _check_pseudo_merge(pn.read_scans(tmp_path, res.scan_id), PSEUDO)
