"""The -sL and -sn paths stay lean: a list scan imports nothing of pyarrow, numpy or pandas
unless an output file asks for the result, and a ping sweep never loads the port-scan
engine (engine.scan). The interpreter's start is most of a list scan's cost
(benchmarks/rdns.py), so these imports are what the -sL benchmark measures. A port scan's
start-up runs without cyclic collection and loads no layer it does not use
(docs/architecture.md, "Start-up and the end of a short scan")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import in_netns, need

# net.privileges: -sL opens no raw socket (as root it has nothing to drop root after)
HEAVY = ("pyarrow", "numpy", "pandas", "scapy", "prtip_nb.engine.scan", "prtip_nb.net.privileges")
_PROBE = ("import sys; from prtip_nb.cli import main; rc = main(sys.argv[1:]); "
          "print('LOADED', ' '.join(m for m in {heavy!r} if m in sys.modules), "
          "file=sys.stderr); sys.exit(rc)")


def _run(args: list[str], heavy: tuple[str, ...] = HEAVY) -> tuple[str, set[str]]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=heavy), *args],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    line = [x for x in proc.stderr.splitlines() if x.startswith("LOADED")][-1]
    return proc.stdout, set(line.split()[1:])


def test_list_scan_imports_no_arrow() -> None:
    out, loaded = _run(["scan", "-sL", "-n", "198.51.100.0/29"])
    assert loaded == set()
    reports = [x for x in out.splitlines() if x.startswith("Scan report for ")]
    assert reports == [f"Scan report for 198.51.100.{n}" for n in range(8)]
    assert "Done: 8 IP addresses (0 hosts up)" in out


def test_list_scan_with_an_output_file_builds_the_result(tmp_path: Path) -> None:
    xml = tmp_path / "list.xml"
    out, loaded = _run(["scan", "-sL", "-n", "-oX", str(xml), "198.51.100.0/30"])
    assert "pyarrow" in loaded  # the result is built for -oX
    text = xml.read_text()
    assert text.count("<host>") + text.count("<host ") == 4 and 'addr="198.51.100.3"' in text


def test_ping_sweep_does_not_load_the_port_scan_engine() -> None:
    need(in_netns(), "needs a private network namespace: run under scripts/in-netns")
    need(os.geteuid() == 0, "needs root")
    # 127.0.0.1 of the private namespace this test runs in (scripts/in-netns).
    out, loaded = _run(["scan", "-sn", "-n", "127.0.0.1"], heavy=("prtip_nb.engine.scan",))
    assert loaded == set()
    assert "Scan report for 127.0.0.1" in out and "1 host up" in out


# A port scan's start-up: no collection while it imports (_cliguard.pause_gc), the scan
# resumes it with the start-up frozen; as the program only (argv None), so main([...])
# called from Python leaves its caller's collector as it found it.
_PROGRAM = """
import gc, sys
import prtip_nb._cliguard as guard
from prtip_nb.cli import main
seen = []  # per collection: was the start-up already frozen (resume_gc)?
gc.callbacks.append(lambda phase, info: phase == "start" and seen.append(gc.get_freeze_count() > 0))
_exit = guard.exit_now
def exit_now(code):
    print("GC", len(seen), all(seen), gc.isenabled(), gc.get_freeze_count() > 0,
          " ".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
    _exit(code)
guard.exit_now = exit_now
sys.argv = ["prtip-nb", *sys.argv[1:]]
main()
"""


def test_scan_starts_without_collection_and_loads_no_resume_layer() -> None:
    need(in_netns(), "needs a private network namespace: run under scripts/in-netns")
    # 127.0.0.1 of the private namespace this test runs in (scripts/in-netns).
    heavy = ("pyarrow", "prtip_nb.engine.resume", "html", "zipfile", "importlib.resources")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", _PROGRAM.format(heavy=heavy), "scan", "-sT", "-Pn", "-n",
         "--top-ports", "20", "127.0.0.1"],
        capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Done: 1 host(s), 20 port rows" in proc.stdout
    line = [x for x in proc.stderr.splitlines() if x.startswith("GC ")][-1].split()
    after_freeze, enabled, frozen = line[2], line[3], line[4]
    # Not one collection before the scan started (numpy and pyarrow were imported by then),
    # and the collector runs again, over what came after the start-up only.
    assert after_freeze == "True" and enabled == "True" and frozen == "True", line
    # A scan without -o loads no resume layer (engine.resume, hashlib via it), nor html's
    # entity table or zipfile (importlib.resources) for the top-ports list.
    assert set(line[5:]) == {"pyarrow"}, line


def test_main_from_python_leaves_the_collector_alone() -> None:
    import gc

    from prtip_nb.cli import main

    frozen = gc.get_freeze_count()
    assert main(["scan", "-sL", "-n", "198.51.100.0/30"]) == 0
    assert gc.isenabled() and gc.get_freeze_count() == frozen
