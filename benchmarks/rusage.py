"""``python -m benchmarks.rusage CMD ...``: run CMD; print its wall time and peak RSS.

The wrapper forks CMD and wait4()s it, so both figures are CMD's own (peak RSS includes
descendants it waited for), not the benchmark runner's. The last stderr line is
``RUSAGE wall_s=<float> maxrss_kb=<int>``.
"""

import os
import sys
import time


def main() -> int:
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(sys.argv[1], sys.argv[1:])
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    sys.stderr.write(f"\nRUSAGE wall_s={wall:.6f} maxrss_kb={usage.ru_maxrss}\n")
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
