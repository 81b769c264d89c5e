"""``python -m benchmarks [SCENARIO ...] [--runs N]``: prtip_nb against nmap, as ratios.

Every scenario runs inside a private network namespace that this runner creates
(``unshare --net``, lo up): the only targets are the lab services it starts there.
"""

from __future__ import annotations

import argparse
import json
import sys

from .scenarios import SCENARIOS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    p.add_argument("scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)

    from prtip_nb.lab import in_private_netns, reexec_in_private_netns

    if not in_private_netns():
        reexec_in_private_netns([sys.executable, "-m", "benchmarks", *(argv or sys.argv[1:])])
    failed = False
    for name in args.scenarios:
        print(f"== {name} ==", flush=True)
        result = SCENARIOS[name](runs=args.runs)
        print(json.dumps(result["summary"], indent=2))
        failed |= not result["summary"].get("exact", True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
