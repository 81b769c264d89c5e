"""``python -m prtip_nb.profile.measure CMD ...``: run CMD; print its wall time and peak memory.

Used by ``prtip_nb.profile`` and by ``benchmarks/`` alike.

The wrapper forks CMD and wait4()s it, so the figures are CMD's own, not the runner's:
- ``maxrss_kb``: wait4()'s ru_maxrss, the largest single process of the tree;
- ``tree_kb``: the peak of the *sum* of VmRSS over CMD and all its descendants, sampled
  every 5 ms (a scan with worker processes costs their memory too; nmap is one process,
  where both figures agree).
The last stderr line is ``RUSAGE wall_s=<float> maxrss_kb=<int> tree_kb=<int>``.
"""

from __future__ import annotations

import os
import sys
import threading
import time


def _tree_rss_kb(pid: int) -> int:
    total = 0
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            kids = [int(k) for k in fh.read().split()]
    except OSError:
        kids = []
    for kid in kids:
        total += _tree_rss_kb(kid)
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    except OSError:
        pass
    return total


def main() -> int:
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(sys.argv[1], sys.argv[1:])
        finally:
            os._exit(127)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _tree_rss_kb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    tree = max(peak[0], usage.ru_maxrss)
    sys.stderr.write(
        f"\nRUSAGE wall_s={wall:.6f} maxrss_kb={usage.ru_maxrss} tree_kb={tree}\n"
    )
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
