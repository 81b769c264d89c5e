"""ScanConfig's explicit options (issue 14: no ``extra`` side channel) and stored configs
written with the old ``extra`` dict, which must read back with the same answers.

No network: configs, dicts, footers and the shipped sample data (data/sample/lab06, whose
ping sweep was stored with ``"extra": {"discovery": "-sn"}``).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

import prtip_nb as pn
from prtip_nb.config import ScanConfig, upgrade_json
from prtip_nb.engine.resume import config_from_json
from prtip_nb.errors import ConfigError, DatasetError
from prtip_nb.interop._cmdline import command_line, is_discovery
from prtip_nb.results import ScanMeta

LAB06 = Path(__file__).resolve().parents[1] / "data" / "sample" / "lab06"
NEW_FIELDS = ("service_probes", "source_port", "udp_source_port", "ping_only", "list_only")


def _old_shape(cfg: ScanConfig, extra: dict[str, object]) -> dict[str, object]:
    """``cfg.to_json()`` as a prtip_nb from before the fields wrote it."""
    doc = {k: v for k, v in cfg.to_json().items() if k not in NEW_FIELDS}
    doc["extra"] = extra
    return doc


# -- the fields and their checks -------------------------------------------------------------
def test_the_fields_replace_extra(tmp_path: Path) -> None:
    assert "extra" not in {f for f in ScanConfig.__dataclass_fields__}
    probes = tmp_path / "nmap-service-probes"
    probes.write_text("Probe TCP NULL q||\n")
    cfg = ScanConfig(targets="198.51.100.1", method="syn", source_port=53,
                     udp_source_port=5353, service_probes=probes)  # type: ignore[arg-type]
    assert (cfg.source_port, cfg.udp_source_port) == (53, 5353)
    assert cfg.service_probes == str(probes)  # a Path is kept as text: the config is JSON
    doc = cfg.to_json()
    assert {k: doc[k] for k in NEW_FIELDS} == {
        "service_probes": str(probes), "source_port": 53, "udp_source_port": 5353,
        "ping_only": False, "list_only": False}
    json.dumps(doc)
    assert config_from_json(doc) == cfg
    assert ScanConfig(targets="x", service_probes="nmap").service_probes == "nmap"


@pytest.mark.parametrize(("options", "message", "hint"), [
    ({"method": "syn", "source_port": 0}, "source_port must be a port number 1-65535, not 0",
     "-g 53"),
    ({"method": "syn", "source_port": 65536}, "1-65535, not 65536", "None lets"),
    ({"method": "udp", "udp_source_port": "53"}, "udp_source_port must be a port number", ""),
    ({"method": "syn", "source_port": True}, "source_port must be a port number", ""),
    ({"source_port": 53}, "a source port (-g) needs a SYN (-sS) or UDP (-sU) scan",
     "method='syn'"),
    ({"service_probes": ""}, "service_probes must be 'nmap' or the path", "'nmap' reads"),
    ({"service_probes": 7}, "service_probes must be 'nmap' or the path", ""),
    ({"service_probes": "/nonexistent/nmap-service-probes"}, "does not exist", "--versiondb"),
    ({"ping_only": "yes"}, "ping_only must be True or False", ""),
    ({"ping_only": True, "list_only": True}, "exclude each other", "-sL only lists"),
])
def test_bad_values_say_what_and_how(options: dict[str, object], message: str,
                                     hint: str) -> None:
    with pytest.raises(ConfigError) as err:
        ScanConfig(targets="198.51.100.1", **options)  # type: ignore[arg-type]
    assert message in str(err.value)
    assert hint in (err.value.hint or "")


def test_a_port_scan_refuses_a_sweep_or_list_config() -> None:
    with pytest.raises(ConfigError, match="scans no ports") as err:
        pn.Scan("198.51.100.1", ports="80", ping_only=True)
    assert "pn.discover" in (err.value.hint or "")
    with pytest.raises(ConfigError, match=r"-sL config \(list_only=True\)"):
        pn.Scan("198.51.100.1", ports="80", list_only=True)


# -- configs stored with the old ``extra`` dict ---------------------------------------------
def test_upgrade_json_turns_extra_into_fields() -> None:
    unset = {"service_probes": None, "source_port": None, "udp_source_port": None,
             "ping_only": False, "list_only": False}
    assert upgrade_json({"targets": ["a"], "extra": {}}) == {"targets": ["a"], **unset}
    assert upgrade_json({"extra": {"discovery": "-sn"}}) == {**unset, "ping_only": True}
    assert upgrade_json({"extra": {"list": "-sL"}}) == {**unset, "list_only": True}
    assert upgrade_json({"extra": {"source_port": 53, "udp_source_port": 54,
                                   "service_probes": "nmap"}}) == {
        **unset, "source_port": 53, "udp_source_port": 54, "service_probes": "nmap"}
    # What it does not know stays under extra (resume refuses it; metadata readers ignore it).
    assert upgrade_json({"extra": {"discovery": "-sX", "x": 1}}) == {
        **unset, "extra": {"discovery": "-sX", "x": 1}}
    assert upgrade_json({"list_only": True, "extra": {"list": "-sL"}})["list_only"] is True
    assert upgrade_json({"ping_only": False, "extra": {"discovery": "-sn"}}) == {
        **unset, "ping_only": False}  # a field already present wins
    new = ScanConfig(targets="a", ping_only=True).to_json()
    assert upgrade_json(new) == new  # today's shape passes through
    imported = {"source": "nmap-xml", "args": "nmap -sn 198.51.100.0/28"}
    assert upgrade_json(imported) == imported


def test_an_old_checkpoint_config_resumes_with_the_same_options() -> None:
    cfg = ScanConfig(targets="198.51.100.1", ports="1-100", method="syn", source_port=47123,
                     udp_source_port=47124, seed=7)
    old = _old_shape(cfg, {"source_port": 47123, "udp_source_port": 47124})
    assert config_from_json(old) == cfg
    plain = ScanConfig(targets="198.51.100.1", ports="80", seed=1)
    assert config_from_json(_old_shape(plain, {})) == plain  # what almost every scan wrote
    with pytest.raises(DatasetError, match=r"unknown option\(s\) 'extra.secret_sauce'"):
        config_from_json(_old_shape(plain, {"secret_sauce": 1}))


def test_old_and_new_sweep_configs_give_the_same_command_line() -> None:
    sweep = ScanConfig(targets=("198.51.100.0/28",), ping_only=True)
    new, old = sweep.to_json(), _old_shape(sweep, {"discovery": "-sn"})
    assert is_discovery(new) and is_discovery(old)  # the raw old dict, not upgraded first
    assert command_line(new) == command_line(old) == "prtip-nb scan -sn 198.51.100.0/28"
    listing = ScanConfig(targets=("198.51.100.0/30",), list_only=True)
    assert command_line(listing.to_json()) == command_line(_old_shape(listing, {"list": "-sL"}))
    assert command_line(listing.to_json()) == "prtip-nb scan -sL 198.51.100.0/30"
    port_scan = ScanConfig(targets=("198.51.100.1",), ports="22")
    assert not is_discovery(_old_shape(port_scan, {}))
    assert command_line(_old_shape(port_scan, {})) == "prtip-nb scan -sT -p 22 198.51.100.1"


def test_an_old_footer_reads_in_the_new_shape() -> None:
    old = _old_shape(ScanConfig(targets="198.51.100.1", method="syn"), {"source_port": 40001})
    meta = ScanMeta(scan_id="20261201T000000Z-abcdef", config=old,
                    started=datetime(2026, 12, 1, tzinfo=UTC))
    back = ScanMeta.from_parquet_metadata(meta.parquet_metadata(), path="part-00000.parquet")
    assert back.config["source_port"] == 40001 and "extra" not in back.config
    assert back.config == ScanConfig(targets="198.51.100.1", method="syn",
                                     source_port=40001).to_json()


def test_the_sample_sweep_stored_with_extra_reads_as_a_sweep(tmp_path: Path) -> None:
    """data/sample/lab06's ping sweep has ``"extra": {"discovery": "-sn"}`` in its footers:
    read_scans, the scan table's args and the nmap XML export still call it ``-sn``."""
    import pyarrow.parquet as pq

    from prtip_nb.results import schema

    run = json.loads((LAB06 / "run.json").read_text())
    sid = run["ids"]["discover"]
    part = next((LAB06 / "scans" / f"scan_id={sid}").glob("hosts/*.parquet"))
    stored = json.loads(pq.read_schema(part).metadata[schema.META_CONFIG])
    assert stored["extra"] == {"discovery": "-sn"} and "ping_only" not in stored

    res = pn.read_scans(LAB06 / "scans", scan_id=sid, strict=True)
    assert res.meta is not None
    assert res.meta.config["ping_only"] is True and "extra" not in res.meta.config
    assert res.scan["args"].tolist() == ["prtip-nb scan -sn 198.51.100.0/28 203.0.113.0/29"]
    root = ET.parse(res.to_nmap_xml(tmp_path / "sweep.xml")).getroot()
    assert root.get("args") == "prtip-nb scan -sn 198.51.100.0/28 203.0.113.0/29"
    assert root.find("scaninfo") is None  # nmap -sn's shape: no port scan
    udp = pn.read_scans(LAB06 / "scans", scan_id=run["ids"]["udp"], strict=True)
    assert udp.meta is not None and udp.meta.config["ping_only"] is False  # "extra": {}
    assert udp.scan["args"].iloc[0].startswith("prtip-nb scan -sU -p ")
