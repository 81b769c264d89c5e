"""The `prtip-nb` command: real processes, real sockets (in the suite's namespace)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import prtip_nb as pn
from tests.conftest import tcp_listeners


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prtip_nb.cli", *args], capture_output=True, text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "args, token",
    [
        (["scan", "-p", "80abc", "127.0.0.1"], "80abc"),
        (["scan", "-p", "65536", "127.0.0.1"], "65536"),
        (["scan", "-p", "", "127.0.0.1"], "port"),
        (["scan", "-p", "80", "300.1.1.1"], "300.1.1.1"),  # parse-only
        (["scan", "-p", "80"], "target"),
        (["scan", "-p", "80", "127.0.0.1", "--exclude", "127.0.0.0/8"], "exclu"),
        (["scan", "-T", "9", "127.0.0.1"], "-T"),
        (["scan", "--rate", "inf", "127.0.0.1"], "--rate"),
        (["scan", "--rate", "fast", "127.0.0.1"], "'fast'"),
        (["scan", "--min-rate", "5000", "--max-rate", "100", "127.0.0.1"], "min_rate"),
        (["scan", "--max-rate=0", "127.0.0.1"], "max_rate"),
        (["scan", "-p", "80", "127.0.0.1", "--rate", "inf"], "finite"),
        (["scan", "-p", "80", "127.0.0.1", "--rate", "nan"], "finite"),
        (["scan", "-p", "80", "127.0.0.1", "--rate=-5"], "positive"),
        (["scan", "-p", "80", "127.0.0.1", "-iL", "/dev/zero"], "line 1"),
        (["scan", "-p", "80", "-iL", "/nonexistent/targets"], "cannot read -iL"),
        (["scan", "-p", "80", "127.0.0.1", "--excludefile", "/dev/zero"], "line 1"),
        (["scan", "-p", "80", "127.0.0.1", "-oN", "/nonexistent/x"], "/nonexistent"),
        (["scan", "-p", "80", "127.0.0.1", "-oX", "/nonexistent/x.xml"], "-oX"),
        (["scan", "-p", "80", "127.0.0.1", "-oG", "/"], "directory"),
        (["scan", "-p", "80", "127.0.0.1", "--event-log", "/proc/x/y"], "--event-log"),
        (["scan", "-p", "80", "127.0.0.1", "-o", "/dev/null/scans"], "-o folder"),
        (["scan", "-p", "80", "127.0.0.1", "-g", "53"], "source port (-g) needs"),
        (["scan", "-sS", "-p", "80", "127.0.0.1", "-g", "0"], "1-65535"),
        (["scan", "-sV", "-p", "80", "127.0.0.1", "--versiondb", "/nonexistent/probes"],
         "does not exist"),
    ],
)
def test_bad_input_exits_2_and_names_the_problem(args: list[str], token: str) -> None:
    out = run(*args)
    assert out.returncode == 2, out
    assert token.lower() in out.stderr.lower()
    assert "Traceback" not in out.stderr


def test_output_paths_are_checked_before_anything_is_sent(tmp_path: Path) -> None:
    """nmap's order: a path that cannot be written fails in a moment, with nothing scanned
    and nothing written, not after the whole scan."""
    t0 = time.monotonic()
    out = run("scan", "-sT", "-p", "1-65535", "127.0.0.1", "-o", str(tmp_path / "scans"),
              "-oN", str(tmp_path / "missing" / "scan.txt"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1  # one line
    assert "folder" in out.stderr and "does not exist" in out.stderr
    assert time.monotonic() - t0 < 10
    assert list(tmp_path.iterdir()) == []


def test_input_files_name_the_bad_line(tmp_path: Path) -> None:
    bad = tmp_path / "targets.txt"
    bad.write_text("# lab\n198.51.100.1\n\n198.51.100.300\n")
    # --privileged: as root the scan reads -iL after dropping to nobody, and pytest's
    # folders are root's (0700); tests/net/test_privdrop.py covers the drop.
    out = run("scan", "-p", "80", "--privileged", "-iL", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"-iL file '{bad}', line 4" in out.stderr and "198.51.100.300" in out.stderr
    binary = tmp_path / "binary"
    binary.write_bytes(b"198.51.100.1\n\xff\xfe\x00\x01\n")
    out = run("scan", "-p", "80", "--privileged", "-iL", str(binary))
    assert out.returncode == 2 and "line 2" in out.stderr and "Traceback" not in out.stderr


@pytest.fixture
def listeners() -> Iterator[list[int]]:
    with tcp_listeners([2222, 8080]) as ports:
        yield ports


@pytest.mark.usefixtures("netns")
def test_scan_writes_text_and_dataset(listeners: list[int], tmp_path: Path) -> None:
    normal = tmp_path / "scan.txt"
    out = run("scan", "-sT", "-p", "1-9000", "127.0.0.1", "-T4", "-oN", str(normal),
              "-o", str(tmp_path / "scans"))
    assert out.returncode == 0, out.stderr
    assert "2222/tcp    open" in out.stdout
    assert "8080/tcp    open" in out.stdout
    assert "Not shown: 8998 closed ports" in out.stdout
    assert normal.read_text() in out.stdout
    res = pn.read_scans(tmp_path / "scans")
    assert sorted(res.open_ports["port"].astype(int)) == listeners
    listing = run("read", str(tmp_path / "scans"))
    assert listing.returncode == 0
    assert str(res.ports["scan_id"].iloc[0]) in listing.stdout


def test_the_program_flushes_everything_before_its_fast_exit() -> None:
    """Run as the program, prtip-nb leaves by os._exit once its outputs are written (the
    interpreter's teardown of pyarrow and numpy is skipped): every line still arrives
    through a pipe, with the command's exit code."""
    out = run("scan", "-sL", "-n", "192.0.2.0/24")  # parse-only: -sL -n lists, sends nothing
    assert out.returncode == 0, out.stderr
    reports = [line for line in out.stdout.splitlines() if line.startswith("Scan report for ")]
    assert len(reports) == 256 and reports[-1] == "Scan report for 192.0.2.255"  # parse-only
    assert out.stdout.rstrip().splitlines()[-1].startswith("Done: 256 IP addresses")
    bad = run("scan", "-p", "80abc", "127.0.0.1")
    assert bad.returncode == 2


def test_version_and_help() -> None:
    assert run("--version").stdout.startswith("prtip-nb ")
    assert "-sT" in run("scan", "--help").stdout


@pytest.mark.usefixtures("netns")
def test_progress_bar_on_a_tty(listeners: list[int]) -> None:
    """On a terminal, stderr shows a progress bar with percent, rate and ETA."""
    import os
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "prtip_nb.cli", "scan", "-p", "1-20000", "127.0.0.1",
         "--rate", "10000"],
        stdout=subprocess.PIPE, stderr=slave, text=True,
    )
    os.close(slave)
    out, _ = proc.communicate(timeout=60)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    bar = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "%" in bar and "ETA" in bar and "/s" in bar
    assert "2222/tcp" in out


@pytest.mark.usefixtures("netns")
def test_event_log_is_json_lines(listeners: list[int], tmp_path: Path) -> None:
    import json

    log = tmp_path / "events.jsonl"
    out = run("scan", "-p", "2200-2300,8080", "127.0.0.1", "--event-log", str(log))
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "ScanStarted" and kinds[-1] == "ScanCompleted"
    assert sorted(e["port"] for e in events if e["kind"] == "PortFound") == listeners


@pytest.mark.usefixtures("netns")
def test_stats_every_prints_the_rate_in_force(listeners: list[int]) -> None:
    out = run("scan", "-sT", "-p", "1-9000", "127.0.0.1", "--rate", "20000",
              "--stats-every", "0.1")
    assert out.returncode == 0, out.stderr
    stats = [line for line in out.stderr.splitlines() if line.startswith("Stats: ")]
    assert len(stats) >= 2  # 9,000 probes at 20,000/s: about 0.45 s
    assert "limit 20,000/s pinned" in stats[-1]
    assert "2222/tcp    open" in out.stdout


def test_text_report_and_oN_escape_terminal_controls(tmp_path: Path) -> None:
    """Banners are escaped where they are read; imported files' fields and hostnames are
    not, so the report escapes what it prints: ESC, BEL, C1 controls, bidi overrides."""
    from prtip_nb._cliguard import write_normal
    from prtip_nb.cli import format_report
    from prtip_nb.interop.commands import load_file

    path = tmp_path / "m.json"
    path.write_text(r"""[
{"ip": "198.51.100.7", "timestamp": "1764325303", "ports": [{"port": 22, "proto": "tcp",
 "service": {"name": "ssh\u001b[2J\u001b]0;pwned\u0007\u202e", "banner": "x"}}]}
]""")
    text = format_report(load_file(path))
    assert r"ssh\x1b[2J\x1b]0;pwned\x07\u202e" in text
    assert not any(ch in text for ch in "\x1b\x07\u202e")
    normal = tmp_path / "scan.txt"
    write_normal(str(normal), text)
    assert normal.read_text() == text


def test_error_messages_escape_what_they_echo(tmp_path: Path) -> None:
    bad = tmp_path / "targets.txt"
    bad.write_text("198.51.100.1\n\x1b[2Jnot-a-target\x07!\n")
    out = run("scan", "-p", "80", "--privileged", "-iL", str(bad))  # root's folder: keep root
    assert out.returncode == 2 and "line 2" in out.stderr
    assert "\x1b" not in out.stderr and r"\x1b[2J" in out.stderr
