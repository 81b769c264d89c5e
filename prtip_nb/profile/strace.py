"""The syscall mix of a command, from ``strace -f -c``: the report's I/O analysis."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

# A line of strace -c's table: % time, seconds, usecs/call, calls, [errors], syscall.
_ROW = re.compile(r"^\s*([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(?:(\d+)\s+)?([a-z_0-9]+)\s*$")

NETWORK = ("socket", "connect", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg",
           "recvmmsg", "getsockopt", "setsockopt", "bind", "getsockname", "getpeername")
GROUPS = {"futex": ("futex",), "brk": ("brk",), "mmap": ("mmap", "munmap", "mremap"),
          "network": NETWORK}


def parse(text: str) -> dict[str, int]:
    """{syscall: calls} from strace -c output (the 'total' row excluded)."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if m and m[6] != "total":
            calls[m[6]] = calls.get(m[6], 0) + int(m[4])
    return calls


def mix(calls: dict[str, int]) -> dict[str, float]:
    """Counts and shares of the report's syscall groups."""
    total = sum(calls.values())
    out: dict[str, float] = {"syscalls": float(total)}
    for group, names in GROUPS.items():
        n = sum(calls.get(name, 0) for name in names)
        out[f"{group}_calls"] = float(n)
        out[f"{group}_share"] = n / total if total else 0.0
    return out


def syscall_mix(cmd: list[str], timeout: float = 300) -> dict[str, float] | None:
    """Run ``cmd`` under ``strace -f -c``; None when strace is not installed."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "strace.txt"
        subprocess.run([strace, "-f", "-c", "-o", str(out), "--", *cmd],
                       capture_output=True, timeout=timeout, check=False)
        return mix(parse(out.read_text())) if out.exists() else None
