"""``prtip-nb scan -oX/-oJ/-oG``, ``prtip-nb import`` and ``prtip-nb diff``, as processes."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prtip_nb as pn

from .conftest import DATA, Listeners, validate


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prtip_nb.cli", *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_scan_writes_nmap_xml_json_and_grepable(
    listeners: Listeners, run_nmap: Callable[..., Path], ndiff: Any, dtd: Any, tmp_path: Path
) -> None:
    listeners.open(9201, 9204)
    xml, jsonl, gnmap = tmp_path / "a.xml", tmp_path / "a.jsonl", tmp_path / "a.gnmap"
    out = cli("scan", "-sT", "-p", "9200-9205", "127.0.0.1", "--no-progress",
              "-oX", str(xml), "-oJ", str(jsonl), "-oG", str(gnmap))  # fmt: skip
    assert out.returncode == 0, out.stderr
    validate(dtd, xml)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sorted(r["port"] for r in rows if r["state"] == "open") == [9201, 9204]
    assert "9201/open/tcp//" in gnmap.read_text()
    # Against nmap's own XML of the same ports: ndiff finds no state that differs.
    theirs = run_nmap("9200-9205")
    report = ET.fromstring(ndiff(theirs, xml, "--xml").stdout)
    changed = [p for is_change, p in _state_changes(report) if is_change]
    assert not changed, ET.tostring(report)
    assert not report.findall(".//hostdiff/a") + report.findall(".//hostdiff/b")  # same host


def _state_changes(report: ET.Element) -> list[tuple[bool, Any]]:
    """(changed, element) for each portdiff: changed when a and b carry different states."""
    out = []
    for portdiff in report.iter("portdiff"):
        a, b = portdiff.find("a/port/state"), portdiff.find("b/port/state")
        if a is not None or b is not None:
            changed = (a.get("state") if a is not None else None) != (
                b.get("state") if b is not None else None
            )
            out.append((changed, portdiff))
    return out


def test_import_then_diff(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    sample, masscan = DATA / "nmap-sample.xml", DATA / "masscan.json"
    out = cli("import", str(sample), str(DATA / "masscan.list"), "-o", str(root))
    assert out.returncode == 0, out.stderr
    assert "4 hosts, 10 port rows" in out.stdout
    assert len(pn.list_scans(root)) == 2
    again = cli("import", str(sample), "-o", str(root))
    assert again.returncode == 1 and "--overwrite" in again.stderr
    assert cli("import", str(sample), "-o", str(root), "--overwrite").returncode == 0
    sid = pn.read_nmap_xml(sample).scan_id
    same = cli("diff", f"{root}:{sid}", str(sample))
    assert (same.returncode, same.stdout.strip()) == (0, "no changes")
    bad = cli("diff", str(masscan), str(sample))  # no such file
    assert bad.returncode == 2 and "neither a file" in bad.stderr
