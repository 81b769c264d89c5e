"""``pn.profile.run``: reproduce the ProRT-IP profiling tables for prtip_nb (and nmap).

Every scenario runs as its own subprocess, so each peak RSS is that run's own, inside a
private network namespace that this module creates, against lab services it starts there.
Peak memory is the process tree's (scan workers included), sampled by ``measure``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PrivilegeError
from .scenarios import Scenario, resolve
from .strace import syscall_mix

if TYPE_CHECKING:
    import pandas as pd

_MEASURE = re.compile(r"RUSAGE wall_s=([0-9.]+) maxrss_kb=(\d+) tree_kb=(\d+)")

# The lab the scenarios scan: 50 listeners on each family, HTTP/HTTPS on the report's ports.
_LABS = (
    ["--host", "127.0.0.1", "--tcp", "50", "--http", "80", "--https", "443"],
    ["--host", "127.0.0.1", "--http", "8080", "--https", "8443", "--tcp", "0"],
    ["--host", "::1", "--tcp", "50"],
)


def run(
    scenarios: str | list[str] | tuple[Scenario, ...] = "report",
    *,
    nmap: bool = True,
    strace: bool = True,
    runs: int = 1,
    flamegraphs: bool = False,
    output: str | os.PathLike[str] = "data/profile",
) -> pd.DataFrame:
    """Run ``scenarios`` ("report", "small", or names) and return one row per (scenario, tool).

    Columns: scenario, tool, method, ports, wall_s, peak_rss_bytes, memory_per_port_bytes,
    marginal_bytes_per_port, pps, exact, and the syscall mix (syscalls, futex/brk/mmap/
    network calls and shares) when strace is installed. ``runs`` > 1 keeps the median run.

    ``flamegraphs=True`` also records each prtip_nb scenario once more under py-spy (the
    ``profile`` extra) and saves an SVG flame graph, Python and native frames, in a new
    ``<output>/profile-<UTC time>/`` directory beside the table as ``results.json``; the
    ``flamegraph`` column holds each SVG's path (None for nmap, which py-spy cannot see).
    The measured runs are never the profiled one: sampling would skew their figures.
    """
    import pandas as pd

    names = [s.name for s in resolve(scenarios)]
    flame_dir = _flame_dir(output) if flamegraphs else None
    args = ["--json", "--runs", str(runs), *(["--no-nmap"] if not nmap else []),
            *(["--no-strace"] if not strace else []),
            *(["--flamegraphs", str(flame_dir)] if flame_dir else []), *names]
    if _inside():
        rows = _run_here(resolve(names), nmap=nmap, strace=strace, runs=runs,
                         flame_dir=flame_dir)
    else:
        from ..lab import can_unshare, run_in_private_netns

        if not can_unshare():
            raise PrivilegeError(
                "prtip_nb.profile runs every scenario inside a private network namespace, "
                "which needs root or CAP_SYS_ADMIN; run the notebook or script as root"
            )
        out = run_in_private_netns(
            [sys.executable, "-m", "prtip_nb.profile", *args], capture_output=True, text=True
        )
        if out.returncode != 0:
            raise RuntimeError(f"profile run failed: {out.stderr.strip()[-2000:]}")
        rows = json.loads(out.stdout.strip().splitlines()[-1])
    if flame_dir is not None:
        (flame_dir / "results.json").write_text(json.dumps(rows, indent=1))
    return _frame(pd, rows)


def _flame_dir(output: str | os.PathLike[str]) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = Path(output).absolute() / f"profile-{stamp}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def py_spy() -> str | None:
    """The py-spy executable: on PATH, or beside this interpreter (a venv not activated)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def flamegraph(cmd: list[str], svg: Path, *, rate: int = 250) -> Path | None:
    """Run ``cmd`` under ``py-spy record`` and write its flame graph to ``svg``.

    ``--subprocesses`` follows scan worker processes; ``--native`` adds C frames (numpy,
    Arrow, the kernel boundary) and is dropped if this system cannot unwind them. py-spy
    needs ptrace rights over the child: root, or CAP_SYS_PTRACE. None if it failed.
    """
    exe = py_spy()
    if exe is None:
        return None
    for native in (["--native"], []):
        svg.unlink(missing_ok=True)
        proc = subprocess.run(
            [exe, "record", "--format", "flamegraph", "--rate", str(rate), "--subprocesses",
             *native, "--output", str(svg), "--", *cmd],
            capture_output=True, text=True, timeout=600, check=False,
        )
        if proc.returncode == 0 and svg.exists() and svg.stat().st_size > 0:
            return svg
    return None


def _inside() -> bool:
    from ..lab import in_private_netns

    return os.environ.get("PRTIP_NB_NETNS") == "1" or in_private_netns()


@contextmanager
def _labs() -> Iterator[dict[str, list[int]]]:
    """Start the lab processes; yield the open TCP ports of 127.0.0.1 and ::1."""
    with ExitStack() as stack:
        truth: dict[str, list[int]] = {"127.0.0.1": [], "::1": []}
        for lab_args in _LABS:
            proc = subprocess.Popen(
                [sys.executable, "-m", "prtip_nb.lab", *lab_args],
                stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True,
            )
            stack.callback(proc.wait, 5)
            stack.callback(proc.terminate)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"lab {' '.join(lab_args)} did not start: {line!r}")
            ready = json.loads(line.split(" ", 1)[1])
            truth[ready["host"]] += ready["tcp"]
        yield truth


def _measure(cmd: list[str]) -> tuple[float, int, str]:
    proc = subprocess.run([sys.executable, "-m", "prtip_nb.profile.measure", *cmd],
                          capture_output=True, text=True, timeout=600)
    m = _MEASURE.search(proc.stderr)
    if m is None:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-1000:]}")
    return float(m[1]), int(m[3]) * 1024, proc.stdout


_OPEN = re.compile(r"^(\d+)/tcp\s+open\b", re.M)


def _run_here(scenarios: tuple[Scenario, ...], *, nmap: bool, strace: bool, runs: int,
              flame_dir: Path | None = None) -> list[dict[str, Any]]:
    nmap_path = shutil.which("nmap") if nmap else None
    if flame_dir is not None and py_spy() is None:
        warnings.warn("flamegraphs=True needs py-spy (pip install 'prtip-nb[profile]'); "
                      "the flamegraph column stays empty", stacklevel=2)
        flame_dir = None
    rows: list[dict[str, Any]] = []
    with _labs() as truth:
        for sc in scenarios:
            tools = [("prtip_nb", sc.prtip_cmd())]
            if nmap_path:
                tools.append(("nmap", sc.nmap_cmd(nmap_path)))
            for tool, cmd in tools:
                trials = sorted((_measure(cmd) for _ in range(max(1, runs))), key=lambda r: r[0])
                wall, rss, out = trials[len(trials) // 2]
                expected = {p for p in truth[sc.target] if p in _port_set(sc.ports)}
                row: dict[str, Any] = {
                    "scenario": sc.name, "tool": tool, "method": sc.method_flag()[1:],
                    "ports": sc.n_ports, "wall_s": wall, "peak_rss_bytes": rss,
                    "pps": sc.n_ports / wall if wall else 0.0,
                    "exact": {int(p) for p in _OPEN.findall(out)} == expected,
                }
                if strace:
                    row.update(syscall_mix(cmd) or {})
                if flame_dir is not None:
                    svg = flamegraph(cmd, flame_dir / f"{sc.name}-{tool}.svg") \
                        if tool == "prtip_nb" else None
                    row["flamegraph"] = str(svg) if svg is not None else None
                rows.append(row)
    return rows


def _port_set(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _frame(pd: Any, rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["memory_per_port_bytes"] = df["peak_rss_bytes"] / df["ports"]
    # Marginal memory: above the same tool's smallest scan of the same kind (100 ports).
    base = df[df["scenario"] == "syn-100"].set_index("tool")["peak_rss_bytes"]
    df["marginal_bytes_per_port"] = [
        (r.peak_rss_bytes - base[r.tool]) / (r.ports - 100)
        if r.tool in base.index and r.ports > 100 and r.scenario != "service-4" else float("nan")
        for r in df.itertuples()
    ]
    return df.convert_dtypes(dtype_backend="pyarrow")
