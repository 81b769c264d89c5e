"""Scale (issue 20), in the suite's budget: a /20 of the range lab with dropping hosts.

- Exact: every open port of every answering host, no false opens, no duplicate rows, the
  dropping hosts' ports filtered (RangeTruth.check on the dataset written with output=).
- Flat memory's mechanism: a scan that writes a dataset and holds only open rows
  (hold="open", what hold="auto" picks above a million probes) streams every row to
  Parquet and keeps in memory only the open ones; its hosts table, tallied as verdicts
  are flushed, is the one the full rows give; the result says where the rest is.

Targets are a RangeLab (198.18.0.0/20 behind one veth link, in a namespace this test
creates); every scan is bounded by its probe count and the engines' own timeouts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

import prtip_nb as pn
from prtip_nb.config import HOLD_AUTO_PROBES, ScanConfig
from prtip_nb.engine.events import PortFound
from prtip_nb.errors import ConfigError
from prtip_nb.lab import RangeLab
from prtip_nb.results import _hosts
from tests.conftest import need_range_lab

PREFIX = "198.18.0.0/20"
PORTS = (22, 80, 443, 8080)
HOSTS = 4096


@pytest.fixture(scope="module")
def lab() -> Iterator[RangeLab]:
    """80 and 443 open everywhere; a dropped /24 and 40 seeded dropping hosts."""
    need_range_lab()
    with RangeLab(PREFIX, tcp=(80, 443), drop=["198.18.7.0/24"], drop_count=40,
                  seed=20) as lab:
        yield lab


@pytest.fixture(scope="module")
def held(lab: RangeLab, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pn.ScanResult]:
    out = tmp_path_factory.mktemp("scans")
    res = pn.scan(PREFIX, ",".join(map(str, PORTS)), method="syn", timing=4, output=str(out),
                  hold="open")
    return out, res


def _on_disk(out: Path, scan_id: str | None) -> ds.Dataset:
    return ds.dataset(out / f"scan_id={scan_id}" / "ports", format="parquet")


def test_the_dataset_is_exact_on_a_20_with_dropping_hosts(
        lab: RangeLab, held: tuple[Path, pn.ScanResult]) -> None:
    out, res = held
    truth = lab.truth(PORTS)
    assert truth.n_dropped > 256  # the /24 and the seeded hosts
    check = truth.check(_on_disk(out, res.scan_id).to_table(columns=["host", "port", "state"]))
    assert check == {"rows": HOSTS * len(PORTS), "wrong": 0, "duplicates": 0,
                     "open_found": check["open_expected"],
                     "open_expected": truth.counts()["open"], "missing_open": 0}


def test_memory_holds_the_open_rows_and_the_dataset_all(
        lab: RangeLab, held: tuple[Path, pn.ScanResult]) -> None:
    out, res = held
    truth = lab.truth(PORTS)
    ports = res.tables["ports"]
    assert ports.num_rows == truth.counts()["open"]  # 8,000-odd, not 16,384
    assert set(res.ports["state"].astype(str)) == {"open"}
    assert _on_disk(out, res.scan_id).count_rows() == HOSTS * len(PORTS)
    assert res.note is not None and str(out) in res.note and f"{HOSTS * len(PORTS):,}" in res.note
    assert res.note in repr(res)
    # The hosts table counts every state, tallied while the rows streamed out.
    hosts = res.hosts
    assert len(hosts) == HOSTS
    assert int(hosts["filtered"].sum()) == truth.counts()["filtered"]
    assert int(hosts["closed"].sum()) == truth.counts()["closed"]
    assert (hosts["state"].astype(str) == "up").sum() == HOSTS - truth.n_dropped
    # ... and it is the table the full rows give (what a hold="all" scan derives).
    full = pn.read_scans(out, scan_id=res.scan_id).tables["ports"]
    derived = _hosts.derive_hosts(full)
    cols = ["host", "state", "reason", "open", "closed", "filtered", "other"]
    # Values, not encodings: the two build their dictionaries in different orders.
    assert res.tables["hosts"].select(cols).to_pydict() == derived.select(cols).to_pydict()


def test_read_scans_pushes_state_and_port_filters_down(
        held: tuple[Path, pn.ScanResult]) -> None:
    out, res = held
    opened = pn.read_scans(out, scan_id=res.scan_id, state="open")
    assert opened.tables["ports"].num_rows == res.tables["ports"].num_rows
    one = pn.read_scans(out, scan_id=res.scan_id, state=["closed", "filtered"], port=22)
    assert one.tables["ports"].num_rows == HOSTS
    assert len(opened.hosts) == HOSTS  # the hosts table is read as written
    with pytest.raises(ValueError, match="not one of nmap's words"):
        pn.read_scans(out, state="up")


def test_hold_auto_and_its_errors(tmp_path: Path) -> None:
    cfg = ScanConfig(targets=("198.18.0.0/15",), output=str(tmp_path))
    assert cfg.held_rows(HOLD_AUTO_PROBES + 1) == "open"
    assert cfg.held_rows(HOLD_AUTO_PROBES) == "all"
    assert cfg.replace(output=None).held_rows(10**9) == "all"  # nowhere else to keep them
    assert cfg.replace(hold="all").held_rows(10**9) == "all"
    with pytest.raises(ConfigError, match="needs output="):
        ScanConfig(targets=("198.18.0.1",), hold="open")
    with pytest.raises(ConfigError, match="hold must be one of"):
        ScanConfig(targets=("198.18.0.1",), hold="some")


def test_a_held_scan_records_no_port_found_events_but_publishes_them(
        lab: RangeLab, tmp_path: Path) -> None:
    sc = pn.Scan("198.18.0.0/24", "80,443,8080", method="syn", timing=4,
                 output=str(tmp_path), hold="open")
    seen = sc.bus.subscribe(types=PortFound, maxsize=1 << 16)
    res = sc.start().wait()
    kinds = set(res.events["kind"].astype(str))
    assert "PortFound" not in kinds and "ScanCompleted" in kinds
    on_disk = _on_disk(tmp_path, res.scan_id).to_table(columns=["host", "port", "state"])
    opened = on_disk.filter(pc.equal(on_disk["state"].cast("string"), "open"))
    found = [ev for ev in seen.queue if isinstance(ev, PortFound)]  # and the terminal one
    assert len(found) == opened.num_rows  # one PortFound per open row streamed
    assert len(res.ports) == len(set(zip(res.ports["host"], res.ports["port"], strict=True)))


def test_the_cli_report_comes_in_chunks_with_the_same_text(
        held: tuple[Path, pn.ScanResult], monkeypatch: pytest.MonkeyPatch) -> None:
    from prtip_nb import _textreport as textreport
    from prtip_nb import cli

    _, res = held
    whole = cli.format_report(res, only_open=True)
    assert whole.count("Scan report for") == HOSTS
    monkeypatch.setattr(textreport, "REPORT_HOSTS", 100)
    chunks = list(cli.report_chunks(res, only_open=True))
    assert len(chunks) == HOSTS // 100 + 1
    # The same text, but for the last line: the process's peak RSS, read as it is now.
    assert "".join(chunks).rsplit("\n", 2)[0] == whole.rsplit("\n", 2)[0]
