"""Faults a scan must survive: a full disk, Ctrl-C, too few descriptors, a dead worker.

Each runs the real command line in a real subprocess, in the suite's private network
namespace, and checks what a user sees: no hang (every run has a deadline), the exit
code, a one-line message saying what was saved, and that ``resume`` then finishes the scan
exactly. The full disk is a small tmpfs mounted in a private mount namespace
(``unshare --mount``): nothing outside the test sees it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import prtip_nb as pn
from tests.conftest import need, tcp_listeners

# Outside the ephemeral range (32768-60999): no TIME_WAIT of an earlier connect holds them.
OPEN = [22, 80, 443, 8080, 31337, 64999]
CLI = [sys.executable, "-m", "prtip_nb.cli"]
DEADLINE = 90  # seconds: a run that takes longer has hung


@pytest.fixture
def listening(netns: None) -> Iterator[list[int]]:
    with tcp_listeners(OPEN, backlog=512) as ports:
        yield ports


def _scan_id(root: Path) -> str:
    (found,) = root.glob("scan_id=*")
    return found.name.split("=", 1)[1]


def _check_exact(root: Path, sid: str, listening: list[int]) -> None:
    res = pn.read_scans(root, sid)
    ports = res.ports
    assert len(ports) == 65_535 and ports["port"].nunique() == 65_535  # no gap, no duplicate
    assert sorted(ports.loc[ports["state"] == "open", "port"].astype(int)) == listening
    assert bool(pn.list_scans(root)["complete"].iloc[0])


# -- a full disk -----------------------------------------------------------------------------
_DISK = """
set -u
mount -t tmpfs -o size={size} tmpfs "$DISK"
"$@" scan {flags} -p 1-65535 127.0.0.1 -Pn -o "$DISK/scans" >"$OUT/scan.out" 2>"$OUT/scan.err"
echo $? >"$OUT/scan.rc"
cp -a "$DISK/scans" "$OUT/before"
mount -o remount,size=64m "$DISK"  # space freed: the same scan resumes where it stopped
sid=$(ls "$DISK/scans" | sed 's/^scan_id=//')
"$@" resume "$DISK/scans" "$sid" >"$OUT/resume.out" 2>"$OUT/resume.err"
echo $? >"$OUT/resume.rc"
cp -a "$DISK/scans" "$OUT/after"
"""


@pytest.mark.parametrize(
    "flags, size",
    # A whole 65,535-port dataset needs about 1 MiB; 512 KiB was once enough on a loaded
    # machine (smaller parts compress better), so the sizes stay well below it.
    # -sS keeps root (--privileged): pytest's folders are root's, closed to nobody.
    [("-sT", "256k"), ("-sT", "320k"), ("-sS --privileged --rate 50000", "320k")],
    ids=["connect-workers-256k", "connect-workers-320k", "syn-320k"],
)
def test_a_full_disk_ends_the_scan_with_exit_1_and_resume_finishes_it(
    listening: list[int], tmp_path: Path, flags: str, size: str, root: None
) -> None:
    need(shutil.which("unshare") is not None, "needs unshare (util-linux)")
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    script = _DISK.format(size=size, flags=flags)
    t0 = time.monotonic()
    subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script, "disk", *CLI],
        env={**os.environ, "DISK": str(disk), "OUT": str(out)}, timeout=2 * DEADLINE,
        check=True,
    )
    took = time.monotonic() - t0
    err = (out / "scan.err").read_text()
    assert (out / "scan.rc").read_text().strip() == "1", err
    assert "No space left on device" in err and "Traceback" not in err
    assert "saved " in err and "prtip-nb resume" in err  # what was kept, and what to do
    assert took < DEADLINE  # the worker-pipe hang made 2 runs in 5 wait forever
    saved = int(err.split("saved ", 1)[1].split()[0])
    before = out / "before"
    sid = _scan_id(before)
    if saved:  # what the message says was saved is there, readable
        assert pn.read_scans(before, sid).tables["ports"].num_rows >= saved
    assert not [p for p in before.rglob("*") if p.name.endswith(".tmp")]  # no debris
    assert (out / "resume.rc").read_text().strip() == "0", (out / "resume.err").read_text()
    _check_exact(out / "after", sid, listening)


# -- Ctrl-C ----------------------------------------------------------------------------------
def _wait_for_parts(root: Path, proc: subprocess.Popen[str], seconds: float = 20) -> None:
    end = time.monotonic() + seconds
    while not list(root.glob("scan_id=*/ports/part-*.parquet")):
        assert proc.poll() is None, "the scan ended before it could be interrupted"
        assert time.monotonic() < end, "no part file appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("method", ["-sT", "-sS"])
@pytest.mark.usefixtures("sigint_not_ignored")
def test_ctrl_c_exits_130_incomplete_and_resumable(
    listening: list[int], tmp_path: Path, method: str
) -> None:
    if method == "-sS":
        need(os.geteuid() == 0, "a SYN scan needs root")
    root = tmp_path / "scans"
    # --privileged: pytest's folders are root's (0700), closed to nobody after a drop.
    proc = subprocess.Popen([*CLI, "scan", method, "-p", "1-65535", "127.0.0.1", "-Pn",
                             "--privileged", "--rate", "15000", "-o", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_parts(root, proc)
        proc.send_signal(signal.SIGINT)  # what the terminal sends on Ctrl-C
        stdout, stderr = proc.communicate(timeout=DEADLINE)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert "Done: 1 host(s)" in stdout  # the partial report is shown
    sid = _scan_id(root)
    assert f"prtip-nb resume {root} {sid}" in stderr
    listing = pn.list_scans(root)
    assert not bool(listing["complete"].iloc[0])  # a cut-off scan is not a complete one
    ck = json.loads((root / f"scan_id={sid}" / "_checkpoint.json").read_text())
    assert ck["status"] == "cancelled"
    assert 0 < ck["shards"]["1/1"]["low_water"] < 65_535
    done = subprocess.run([*CLI, "resume", str(root), sid], capture_output=True, text=True,
                          timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    _check_exact(root, sid, listening)


# -- too few descriptors ---------------------------------------------------------------------
@pytest.mark.parametrize("method, limit", [("-sT", 8), ("-sT", 16), ("-sT", 64), ("-sS", 8),
                                           ("-sS", 16)])
def test_a_low_fd_limit_gives_a_correct_scan_or_a_clear_error(
    listening: list[int], tmp_path: Path, method: str, limit: int, root: None
) -> None:
    """`ulimit -n 8`: too few descriptors for a connect scan's worker processes: it runs in
    one process instead (saying so), and its dataset and -oX file are complete. A SYN scan
    that cannot open its capture says so in one line, with the fix."""

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    scans = tmp_path / "scans"
    out = subprocess.run(
        [*CLI, "scan", method, "-p", "1-65535", "127.0.0.1", "-Pn", "-o", str(scans),
         "-oX", str(tmp_path / "scan.xml"), "--privileged"],  # root's folders: keep root
        capture_output=True, text=True, preexec_fn=low, timeout=DEADLINE,
    )
    assert "Traceback" not in out.stderr
    if out.returncode != 0:  # allowed: one line that names the limit
        assert out.returncode == 1 and "ulimit -n" in out.stderr, out.stderr
        assert out.stderr.count("\n") <= 3  # the error, what was saved; not a traceback
        return
    assert (tmp_path / "scan.xml").read_text().count('state="open"') == len(OPEN)
    _check_exact(scans, _scan_id(scans), listening)


# -- a worker dies ---------------------------------------------------------------------------
def test_a_killed_worker_exits_1_says_what_was_saved_and_resume_finishes(
    listening: list[int], tmp_path: Path
) -> None:
    root = tmp_path / "scans"
    # Above the rate one process sends by itself (engine.runs.ONE_PROCESS_RATE): workers.
    proc = subprocess.Popen([*CLI, "scan", "-sT", "-p", "1-65535", "127.0.0.1", "-Pn",
                             "--rate", "25000", "-o", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_parts(root, proc)
        workers = [p for p in psutil.Process(proc.pid).children()
                   if "prtip_nb.engine.workers" in p.cmdline()]
        assert workers, "65,535 ports should run on worker processes"
        workers[0].kill()
        _, stderr = proc.communicate(timeout=DEADLINE)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr
    assert "a scan worker exited with -9" in stderr and "Traceback" not in stderr
    sid = _scan_id(root)
    assert f"prtip-nb resume {root} {sid}" in stderr
    assert not bool(pn.list_scans(root)["complete"].iloc[0])
    done = subprocess.run([*CLI, "resume", str(root), sid], capture_output=True, text=True,
                          timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    _check_exact(root, sid, listening)


# -- a flush that fails on a helper thread ---------------------------------------------------
def test_a_failed_flush_on_a_helper_thread_fails_the_scan_at_once(
    listening: list[int], dropped: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the engine waits on silent ports, the helper threads (checkpointer, poller)
    write the buffered verdicts. When that write fails, no thread may die with a traceback
    and the scan must not wait on: it stops and fails with the error, at once."""
    import threading

    died: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(repr(args.exc_value)))
    root = tmp_path / "scans"
    # 22 and 80 answer at once; 1000-1200 are dropped: no verdict for 5 s.
    s = pn.Scan("127.0.0.1", ports="22,80,1000-1200", method="connect", workers=1, timeout=5.0,
                max_retries=0, output=str(root)).start()
    folder = root / f"scan_id={s.scan_id}"
    end = time.monotonic() + 5
    while not folder.is_dir():
        assert time.monotonic() < end
        time.sleep(0.005)
    (folder / "ports").write_text("a file where the parts folder goes")  # part writes fail
    t0 = time.monotonic()
    with pytest.raises(pn.ScanError, match="could not write"):
        s.wait(timeout=DEADLINE)
    assert time.monotonic() - t0 < 3  # stopped, not waiting out the 5 s timeouts
    assert s.status == "failed"
    assert died == []  # no helper thread died with a traceback
