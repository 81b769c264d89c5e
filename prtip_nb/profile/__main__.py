"""``python -m prtip_nb.profile [--json] [SCENARIO ...]``: the profiling table, as text or JSON.

Run it inside a private network namespace (``pn.profile.run`` does this for you).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .runner import _inside, _run_here, run
from .scenarios import resolve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m prtip_nb.profile")
    p.add_argument("scenarios", nargs="*", default=["report"])
    p.add_argument("--json", action="store_true", help="print the rows as one JSON line")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--no-nmap", action="store_true")
    p.add_argument("--no-strace", action="store_true")
    p.add_argument("--flamegraphs", metavar="DIR", type=Path,
                   help="also record a py-spy flame graph (SVG) per prtip_nb scenario in DIR")
    a = p.parse_args(argv)
    names = a.scenarios if a.scenarios != ["report"] else "report"
    if a.json and _inside():
        if a.flamegraphs is not None:
            a.flamegraphs.mkdir(parents=True, exist_ok=True)
        rows = _run_here(resolve(names), nmap=not a.no_nmap, strace=not a.no_strace, runs=a.runs,
                         flame_dir=a.flamegraphs)
        print(json.dumps(rows))
        return 0
    df = run(names, nmap=not a.no_nmap, strace=not a.no_strace, runs=a.runs,
             flamegraphs=a.flamegraphs is not None,
             output=a.flamegraphs if a.flamegraphs is not None else "data/profile")
    print(df.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
