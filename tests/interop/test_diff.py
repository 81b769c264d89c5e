"""diff(): two real scans with a port opened and one closed between them, and the rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import prtip_nb as pn
from prtip_nb.interop.diff import CHANGES

from .conftest import DATA, Listeners

PORTS = "9100-9110"


def _changes(d: pd.DataFrame) -> list[tuple[object, ...]]:
    return [tuple(None if pd.isna(v) else v for v in row) for row in d.itertuples(index=False)]


def test_a_port_opened_and_a_port_closed(listeners: Listeners, tmp_path: Path) -> None:
    listeners.open(9101, 9105)
    before = pn.scan("127.0.0.1", ports=PORTS, method="connect")
    listeners.close(9105)
    listeners.open(9108)
    after = pn.scan("127.0.0.1", ports=PORTS, method="connect")
    d = pn.diff(before, after)
    assert _changes(d) == [
        ("127.0.0.1", "tcp", 9105, "open", "closed", "closed"),
        ("127.0.0.1", "tcp", 9108, "closed", "open", "opened"),
    ]
    assert d["host"].dtype == pd.ArrowDtype(pa.string())
    assert d["port"].dtype == pd.ArrowDtype(pa.uint16())
    assert pn.diff(before.ports, after.ports).equals(d)  # DataFrames work as well
    assert pn.diff(after, after).empty
    # The same through the CLI, from a dataset and from nmap XML: exit 1 = differences.
    before.to_parquet(tmp_path / "ds")
    xml = after.to_nmap_xml(tmp_path / "after.xml")
    cli = subprocess.run(
        [sys.executable, "-m", "prtip_nb.cli", "diff", f"{tmp_path / 'ds'}:{before.scan_id}",
         str(xml)], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 1, cli.stderr
    assert "9105" in cli.stdout and "opened" in cli.stdout


def _frame(rows: list[tuple[str, int, str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["host", "port", "state", "service"]).assign(proto="tcp")


def test_host_and_service_changes() -> None:
    old = _frame([
        ("198.51.100.1", 22, "open", "ssh"),
        ("198.51.100.1", 80, "open", "http"),
        ("198.51.100.2", 443, "open", None),   # gone, with an open port
        ("198.51.100.3", 25, "closed", None),  # gone, with none open
        ("198.51.100.4", 25, "filtered", None),  # silent: never present
    ])  # fmt: skip
    new = _frame([
        ("198.51.100.1", 22, "open", "ssh"),
        ("198.51.100.1", 80, "open", "nginx"),
        ("198.51.100.4", 25, "open", "smtp"),  # present now: a new host
        ("198.51.100.5", 25, "closed", None),  # new, none open
    ])  # fmt: skip
    assert _changes(pn.diff(old, new)) == [
        ("198.51.100.1", "tcp", 80, "http", "nginx", "service-changed"),
        ("198.51.100.2", "tcp", 443, "open", None, "gone-host"),
        ("198.51.100.3", None, None, "up", None, "gone-host"),
        ("198.51.100.4", "tcp", 25, None, "open", "new-host"),
        ("198.51.100.5", None, None, None, "up", "new-host"),
    ]
    assert set(pn.diff(old, new)["change"].astype(str)) <= set(CHANGES)


def test_masscan_against_nmap_and_bad_input() -> None:
    old = pn.read_masscan(DATA / "masscan.list")
    d = pn.diff(old, pn.read_nmap_xml(DATA / "nmap-sample.xml"))  # no host in common
    gone = d[d["change"] == "gone-host"]
    assert sorted(set(gone["host"])) == sorted(set(old.tables["hosts"]["host"].to_pylist()))
    assert set(d["change"].astype(str)) == {"new-host", "gone-host"}
    with pytest.raises(ValueError, match="needs columns"):
        pn.diff(pd.DataFrame({"host": ["x"]}), pd.DataFrame({"host": ["x"]}))


_OLD = """[
{"ip": "198.51.100.7", "timestamp": "1764325200", "ports": [{"port": 22, "proto": "tcp",
 "status": "open", "reason": "syn-ack", "ttl": 54}]}
]"""
_NEW = r"""[
{"ip": "198.51.100.7", "timestamp": "1764325300", "ports": [{"port": 22, "proto": "tcp",
 "service": {"name": "ssh\u001b[2J\u001b]0;pwned\u0007\u009b2J\u202e", "banner": "x"}}]}
]"""


def test_diff_prints_terminal_controls_of_imported_files_as_text(tmp_path: Path) -> None:
    """A banner's ``ESC[2J`` would clear the screen of whoever reads the diff."""
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(_OLD)
    new.write_text(_NEW)
    out = subprocess.run([sys.executable, "-m", "prtip_nb.cli", "diff", str(old), str(new)],
                         capture_output=True, timeout=120)
    assert out.returncode == 1, out.stderr  # differences
    text = out.stdout.decode()
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert "\u202e" not in text  # a bidi override would reorder what the user reads
    assert r"ssh\x1b[2J\x1b]0;pwned\x07\x9b2J\u202e service-changed" in text


def test_script_os_and_cpe_changes(tmp_path: Path) -> None:
    # The same nmap file with one script output, one CPE and the best OS match edited.
    original = DATA / "nmap" / "odd-scripts-everywhere.xml"
    text = original.read_text()
    edited = (text.replace("cpe:/a:caddyserver:caddy", "cpe:/a:caddyserver:caddy:2.8")
                  .replace('output="0s"', 'output="3s"')
                  .replace("Linux 5.0 - 6.2", "Linux 6.1"))  # fmt: skip
    path = tmp_path / "edited.xml"
    path.write_text(edited)
    d = pn.diff(pn.read_nmap_xml(original), pn.read_nmap_xml(path))
    got = {(r.change, r.port if not pd.isna(r.port) else None): (r.before, r.after)
           for r in d.itertuples()}  # fmt: skip
    assert got == {
        ("cpe-changed", 443): ("cpe:/a:caddyserver:caddy", "cpe:/a:caddyserver:caddy:2.8"),
        ("script-changed", None): ("clock-skew: 0s", "clock-skew: 3s"),
        ("os-changed", None): ("Linux 5.0 - 6.2", "Linux 6.1"),
    }
    assert set(d["change"].astype(str)) <= set(CHANGES)
