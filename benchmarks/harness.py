"""Shared pieces of the benchmark scenarios: run a command, time it, read its peak RSS.

Figures from a noisy 2-core machine hold only as ratios, so every scenario runs prtip_nb
and nmap alternately in the same process tree, and reports medians and their ratio.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@dataclass
class Run:
    tool: str
    wall_s: float
    peak_rss_bytes: int  # peak of the process tree's summed RSS (sampled every 5 ms)
    open_ports: set[int] = field(default_factory=set)
    exit_code: int = 0
    sum_of_peaks_bytes: int = 0  # upper bound: each process's own peak, added up


def timed(
    cmd: Sequence[str], tool: str, timeout: float = 300.0, capture: list[str] | None = None
) -> Run:
    """Run ``cmd`` under ``prtip_nb.profile.measure``: its own wall time and peak RSS.

    ``capture``: a list the command's stdout is appended to (to check what it found).
    """
    wrapped = [sys.executable, "-m", "prtip_nb.profile.measure", *cmd]
    proc = subprocess.run(
        wrapped, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env_for_scan()
    )
    if capture is not None:
        capture.append(proc.stdout)
    m = _RUSAGE_RE.search(proc.stderr)
    if m is None or proc.returncode not in (0, 1):
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return Run(
        tool, float(m[1]), int(m[3]) * 1024, parse_open_ports(proc.stdout), proc.returncode,
        sum_of_peaks_bytes=int(m[2]) * 1024 + worker_rss_bytes(proc.stdout),
    )


_WORKERS_RE = re.compile(r"^Memory: .* \+ \d+ workers ([0-9. +]+) MiB", re.M)


def worker_rss_bytes(text: str) -> int:
    """The peak RSS of prtip-nb's worker processes, from its "Memory:" line.

    wait4() reports the largest of the process tree, not the sum; workers report their own
    VmHWM, and a scan's memory cost is the parent's peak plus theirs.
    """
    m = _WORKERS_RE.search(text)
    if m is None:
        return 0
    return int(sum(float(x) for x in m[1].split("+")) * 2**20)


_RUSAGE_RE = re.compile(r"RUSAGE wall_s=([0-9.]+) maxrss_kb=(\d+) tree_kb=(\d+)")


_PORT_RE = re.compile(r"^(\d+)/tcp\s+open\b", re.M)


def nmap_path() -> str:
    """The nmap binary, or exit saying how to get it."""
    import shutil

    nmap = shutil.which("nmap")
    if nmap is None:
        raise SystemExit("nmap is not installed: apt-get install nmap (make bench does it)")
    return nmap


def parse_open_ports(text: str) -> set[int]:
    """Open TCP ports from nmap's or prtip-nb's normal (-oN style) output."""
    return {int(m) for m in _PORT_RE.findall(text)}


def summarise(runs: list[Run], ours: str, theirs: str) -> dict[str, float]:
    a = [r.wall_s for r in runs if r.tool == ours]
    b = [r.wall_s for r in runs if r.tool == theirs]
    ra = [r.peak_rss_bytes for r in runs if r.tool == ours]
    rb = [r.peak_rss_bytes for r in runs if r.tool == theirs]
    sa = [r.sum_of_peaks_bytes for r in runs if r.tool == ours]
    return {
        f"{ours}_sum_of_process_peaks_mib": max(sa) / 2**20,
        f"{ours}_median_s": statistics.median(a),
        f"{theirs}_median_s": statistics.median(b),
        "ratio": statistics.median(a) / statistics.median(b),
        f"{ours}_peak_rss_mib": max(ra) / 2**20,
        f"{theirs}_peak_rss_mib": max(rb) / 2**20,
    }


def save(name: str, payload: dict) -> Path:
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"

    def default(o: object) -> object:
        return sorted(o) if isinstance(o, set) else str(o)

    path.write_text(json.dumps(payload, indent=2, default=default))
    return path


def as_dict(run: Run) -> dict:
    d = asdict(run)
    d["open_ports"] = len(run.open_ports)
    return d


_COMPILED: list[bool] = []


def compile_sources() -> None:
    """prtip_nb's bytecode in its ``__pycache__``, as an installed package has it (pip
    compiles at install time): run from a checkout with PYTHONDONTWRITEBYTECODE set (as
    here), every prtip-nb process compiled its ~70 modules from source again, 45-60 ms
    of CPU that no installed copy pays. Python reads bytecode the flag forbids writing."""
    if not _COMPILED:
        import compileall

        compileall.compile_dir(ROOT / "prtip_nb", quiet=1)
        _COMPILED.append(True)


def compile_c(directory: Path, name: str, source: str, what: str) -> Path:
    """Write ``source`` to ``directory``/``name``.c and compile it with gcc -O2 -Werror; the
    executable's path. ``what`` names it in the error when there is no C compiler."""
    import shutil

    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit(f"{what} needs a C compiler: apt-get install gcc")
    src, exe = directory / f"{name}.c", directory / name
    src.write_text(source)
    subprocess.run([gcc, "-O2", "-Wall", "-Werror", "-o", str(exe), str(src)], check=True,
                   capture_output=True, text=True)
    return exe


def env_for_scan() -> dict[str, str]:
    compile_sources()
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return env
