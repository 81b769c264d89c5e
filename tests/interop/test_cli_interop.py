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
    out = cli("scan", "-sT", "-n", "-p", "9200-9205", "127.0.0.1", "--no-progress",
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
    assert again.returncode == 0 and "already imported" in again.stdout
    over = cli("import", str(sample), "-o", str(root), "--overwrite")
    assert over.returncode == 0 and "replacing scan nmap-" in over.stdout
    assert "nmap-sample.xml" in over.stdout  # names what it replaces
    sid = pn.read_nmap_xml(sample).scan_id
    same = cli("diff", f"{root}:{sid}", str(sample))
    assert (same.returncode, same.stdout.strip()) == (0, "no changes")
    bad = cli("diff", str(masscan), str(sample))  # no such file
    assert bad.returncode == 2 and "neither a file" in bad.stderr


def _tree_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_import_many_carries_on_past_bad_files(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    corpus = DATA / "nmap"
    good = [corpus / "fin.xml", corpus / "scripts.xml"]
    bad = [corpus / "odd-no-protocol.xml", corpus / "odd-empty.xml",
           corpus / "odd-masscan-binary.scan"]  # fmt: skip
    out = cli("import", str(good[0]), *map(str, bad), str(good[1]), "-o", str(root))
    assert out.returncode == 1
    assert "import: 2 imported, 0 skipped, 3 failed" in out.stdout
    assert "odd-no-protocol.xml: " in out.stdout and "line 8" in out.stdout
    assert "Traceback" not in out.stderr
    assert "--readscan" in out.stdout  # how to convert masscan's binary format
    assert len(pn.list_scans(root)) == 2
    # Nothing of the failed ones was left behind: only the two scans' directories.
    assert sorted(p.name for p in root.iterdir()) == sorted(
        f"scan_id={pn.read_nmap_xml(g).scan_id}" for g in good
    )
    again = cli("import", *map(str, good), "-o", str(root))
    assert again.returncode == 0 and "import: 0 imported, 2 skipped, 0 failed" in again.stdout


def test_ids_never_collide(tmp_path: Path) -> None:
    # Two files with the same args and start time (the v1 id's only inputs) differ in one
    # port state: they get two ids, and both import.
    one = (DATA / "nmap-sample.xml").read_text()
    two = one.replace('portid="8080"><state state="filtered"', 'portid="8080"><state state="open"')
    assert two != one
    (tmp_path / "a.xml").write_text(one)
    (tmp_path / "b.xml").write_text(two)
    a, b = pn.read_nmap_xml(tmp_path / "a.xml"), pn.read_nmap_xml(tmp_path / "b.xml")
    assert a.scan_id != b.scan_id and a.config["args"] == b.config["args"]
    out = cli("import", str(tmp_path / "a.xml"), str(tmp_path / "b.xml"), "-o",
              str(tmp_path / "scans"))  # fmt: skip
    assert out.returncode == 0 and "2 imported" in out.stdout
    # masscan files too: the whole file's hash, not its first 64 KiB.
    head = (DATA / "masscan.list").read_text()
    (tmp_path / "m1.list").write_text(head + "\n" * 70000 + "open tcp 1 198.51.100.9 1764325200\n")
    (tmp_path / "m2.list").write_text(head + "\n" * 70000 + "open tcp 2 198.51.100.9 1764325200\n")
    ids = {pn.read_masscan(tmp_path / n).scan_id for n in ("m1.list", "m2.list")}
    assert len(ids) == 2


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    from prtip_nb.errors import DatasetError
    from prtip_nb.results import _files

    res = pn.read_nmap_xml(DATA / "nmap" / "scripts.xml")
    root = tmp_path / "scans"
    write_part = _files.write_part

    def disk_full(path: Path, table: Any, metadata: Any) -> None:
        if path.parent.name == "hosts":  # the last part: everything else is written by then
            raise DatasetError(f"could not write {path}: [Errno 28] No space left on device")
        write_part(path, table, metadata)

    monkeypatch.setattr(_files, "write_part", disk_full)
    try:
        res.to_parquet(root)
    except DatasetError:
        pass
    else:
        raise AssertionError("the write should have failed")
    assert list(root.iterdir()) == []  # no scan_id= folder, no hidden temporary one
    monkeypatch.undo()
    res.to_parquet(root)  # and a retry is not told "imported before"
    assert pn.read_scans(root, res.scan_id).tables["scripts"].num_rows == 8


def test_file_imported_by_schema_1_is_recognised(tmp_path: Path) -> None:
    import shutil

    # tests/data/v1-dataset holds nmap-sample.xml imported by prtip_nb before schema 2.
    root = tmp_path / "scans"
    shutil.copytree(DATA / "v1-dataset", root)
    out = cli("import", str(DATA / "nmap-sample.xml"), "-o", str(root))
    assert out.returncode == 0 and "imported before by an older prtip_nb" in out.stdout
    assert len(pn.list_scans(root)) == 2
