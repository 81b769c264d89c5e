"""The shipped sample data (data/sample/) reads with the public API, as the notebooks need it.

Users without root (a locked-down JupyterHub) read these files instead of scanning, so
what a notebook relies on is checked here: the dataset is of the current schema, a series
of scans over time with open ports, services and certificates, whose diffs show ports
opened and closed; the nmap and masscan files read and agree with the last scan. No root
and no network: this only reads files. When a check fails after a schema or scanner
change, regenerate the data (``REGEN``) rather than loosening the check.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

import prtip_nb as pn
from prtip_nb.results import schema

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
SCANS = SAMPLE / "scans"
REGEN = "regenerate it: scripts/in-netns .venv/bin/python scripts/make-sample-data"
LAB_NETS = [ipaddress.ip_network(n) for n in ("198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]
TABLES = {"ports", "hosts", "telemetry", "events", *schema.INVENTORY}


@pytest.fixture(scope="module")
def series() -> list[pn.ScanResult]:
    """Each stored scan on its own, oldest first (as a notebook diffs them)."""
    every = pn.read_scans(SCANS, strict=True)  # a damaged part file fails here, by name
    metas = sorted(every.scans, key=lambda m: m.started)
    return [pn.read_scans(SCANS, scan_id=m.scan_id, strict=True) for m in metas]


def _open(res: pn.ScanResult, family: int | None = None) -> set[tuple[str, int]]:
    ports = res.open_ports
    if family is not None:
        ports = ports[ports["family"] == family]
    return {(h, int(p)) for h, p in zip(ports["host"], ports["port"], strict=True)}


def test_every_file_is_one_a_reader_knows_and_the_whole_is_small() -> None:
    files = [p for p in SAMPLE.rglob("*") if p.is_file()]
    assert files, f"{SAMPLE} is empty: {REGEN}"
    for path in files:
        rel = path.relative_to(SAMPLE).parts
        if rel[0] == "scans":
            # scans/scan_id=<id>/<table>/part-*.parquet: the layout read_scans reads.
            assert len(rel) == 4 and rel[1].startswith("scan_id="), path
            assert rel[2] in TABLES and rel[3].endswith(".parquet"), path
        elif rel[0] == "lab04":  # notebook 04's recorded measurements
            assert rel[1:] in {("runs.csv",), ("telemetry.parquet",), ("profile.csv",)}, path
        elif rel[0] == "lab06":  # notebook 06's recorded run: see the test below
            assert rel[1:] in {("run.json",), ("nmap-sn.xml",), ("nmap-su.xml",)} or (
                rel[1] == "scans" and rel[2].startswith("scan_id=") and rel[4].endswith(".parquet")
            ), path
        elif rel[0] == "lab02os":  # notebook 02's OS-detection run: see the test below
            assert rel[1:] == ("run.json",) or (
                rel[1] == "scans" and rel[2].startswith("scan_id=") and rel[3] in TABLES
                and rel[4].endswith(".parquet")), path
        else:
            assert rel in {("nmap-lab.xml",), ("masscan-lab.json",), ("README.md",)}, (
                f"{path}: not read by this test; read it here or leave it out of data/sample"
            )
    total = sum(p.stat().st_size for p in files)
    assert total < 1_000_000, f"data/sample holds {total:,} bytes; keep it well under 1 MB"


def test_the_dataset_is_a_series_of_scans_of_the_current_schema(
    series: list[pn.ScanResult],
) -> None:
    assert len(series) == 4, REGEN
    starts = [r.meta.started for r in series if r.meta is not None]
    assert len(starts) == 4 and starts == sorted(set(starts)), "four distinct start times"
    for res in series:
        assert res.meta is not None
        assert res.meta.schema_version == schema.SCHEMA_VERSION, (
            f"scan {res.scan_id} is of schema {res.meta.schema_version}, the library writes "
            f"{schema.SCHEMA_VERSION}: {REGEN}"
        )
        cfg = res.meta.config
        # The same targets and ports each time: only then do diffs mean something.
        assert (cfg["targets"], cfg["top_ports"], cfg["service"]) == (
            series[0].meta.config["targets"], 100, True)  # fmt: skip
        ports = res.open_ports
        assert len(ports) >= 1, f"scan {res.scan_id} has no open port"
        assert ports["service"].notna().all(), "-sV names every open port"
        tls = ports[ports["tls_subject"].notna()]
        assert len(tls) >= 1 and (tls["tls_not_after"] > res.meta.started).all()
        assert set(res.hosts["host"]) == set(cfg["targets"])
        assert {4, 6} <= set(res.ports["family"].astype(int)), "IPv4 and IPv6 hosts"
    # A host that is silent at first and appears later is part of the story.
    first = series[0].hosts.set_index("host")["state"]
    assert (first != "up").sum() == 1 and (series[-1].hosts["state"] == "up").all()


def test_only_documentation_addresses(series: list[pn.ScanResult]) -> None:
    for res in series:
        for host in set(res.ports["host"]) | set(res.hosts["host"]):
            assert any(ipaddress.ip_address(host) in net for net in LAB_NETS), host


def test_diffs_over_time_show_opened_and_closed_ports_and_a_changed_service(
    series: list[pn.ScanResult],
) -> None:
    diffs = [pn.diff(a, b) for a, b in zip(series, series[1:], strict=False)]
    first = diffs[0]
    assert set(first["change"]) == {"opened", "closed"}, first
    opened = first[first["change"] == "opened"]
    assert (opened["before"] == "closed").all() and (opened["after"] == "open").all()
    seen = set().union(*(set(d["change"]) for d in diffs))
    assert {"opened", "closed", "service-changed", "new-host"} <= seen
    changed = diffs[1][diffs[1]["change"] == "service-changed"]
    assert len(changed) == 1 and changed["before"].iloc[0] == "tcpwrapped"
    assert changed["after"].iloc[0].startswith("http ")


def test_nmap_xml_reads_and_sees_what_the_last_scan_saw(series: list[pn.ScanResult]) -> None:
    nm = pn.read_nmap_xml(SAMPLE / "nmap-lab.xml")
    assert nm.scan_id.startswith("nmap-")
    # nmap scans one address family per run: the file has the IPv4 hosts.
    assert _open(nm) == _open(series[-1], family=4)
    certs = nm.scripts[nm.scripts["id"] == "ssl-cert"]
    assert len(certs) >= 1 and set(certs["port"].astype(int)) == {443}
    assert (nm.open_ports["tls_subject"].dropna() == "CN=prtip-lab.test").all()


def test_masscan_json_reads_and_holds_the_last_scans_open_ports(
    series: list[pn.ScanResult],
) -> None:
    ms = pn.read_masscan(SAMPLE / "masscan-lab.json")
    last = series[-1]
    assert _open(ms) == _open(last)
    banners = ms.open_ports.dropna(subset=["banner"])
    theirs = dict(zip(zip(banners["host"], banners["port"].astype(int), strict=True),
                      banners["banner"], strict=True))  # fmt: skip
    ours = last.open_ports.dropna(subset=["banner"])
    assert theirs == dict(zip(zip(ours["host"], ours["port"].astype(int), strict=True),
                              ours["banner"], strict=True))  # fmt: skip
    assert any(b.startswith("SSH-2.0-") for b in theirs.values())


def test_the_readme_example_runs_as_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (SAMPLE.parents[1] / "README.md").read_text()
    example = readme.split("## Sample data", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(SAMPLE.parents[1])  # its paths are relative to the repository's root
    exec(compile(example, "README.md (Sample data)", "exec"), {})
    out = capsys.readouterr().out
    for word in ("opened", "closed", "service-changed", "new-host", "ssl-cert", "SSH-2.0-"):
        assert word in out, word


def test_notebook_06s_recorded_run_reads_and_agrees_with_nmaps() -> None:
    """data/sample/lab06: notebook 06's lab run (PRTIP_NB_RECORD), read without root: the
    sweep and the UDP scan beside nmap's files of the same run."""
    import json

    lab = SAMPLE / "lab06"
    run = json.loads((lab / "run.json").read_text())
    assert set(run["ids"]) == {"discover", "udp", "unlimited", "both"}, (
        "regenerate: sudo scripts/in-netns env PRTIP_NB_RECORD=$PWD/data/sample/lab06 "
        ".venv/bin/jupyter execute notebooks/06_udp_and_host_discovery.ipynb")
    sweep = pn.read_scans(lab / "scans", scan_id=run["ids"]["discover"], strict=True).hosts
    theirs = pn.read_nmap_xml(lab / "nmap-sn.xml").hosts
    assert len(sweep) == 24 and (sweep["state"] == "up").sum() == 7
    ours = dict(zip(sweep["host"], sweep["state"].astype(str), strict=True))
    assert ours == dict(zip(theirs["host"], theirs["state"].astype(str), strict=True))
    udp = pn.read_scans(lab / "scans", scan_id=run["ids"]["udp"], strict=True).ports
    nmap_udp = pn.read_nmap_xml(lab / "nmap-su.xml").ports
    assert len(udp) == 42
    key = ["port", "state", "reason"]
    assert (udp[key].astype(str).sort_values("port").values.tolist()
            == nmap_udp[key].astype(str).sort_values("port").values.tolist())
    for address in sweep["host"]:
        assert any(ipaddress.ip_address(address) in net for net in LAB_NETS), address


def test_notebook_04s_recorded_measurements_read() -> None:
    """data/sample/lab04: three runs of each size, sampled often enough, and pn.profile's
    table with both tools (what notebook 04 reads without root)."""
    import pandas as pd

    runs = pd.read_csv(SAMPLE / "lab04" / "runs.csv")
    assert sorted(runs["ports"].unique()) == [100, 1_000, 10_000]
    assert (runs.groupby("ports")["run"].count() == 3).all()
    assert (runs.loc[runs["ports"] == 10_000, "samples"] >= 5).all()
    tel = pd.read_parquet(SAMPLE / "lab04" / "telemetry.parquet")
    assert set(tel["size"]) == set(runs["size"])
    profile = pd.read_csv(SAMPLE / "lab04" / "profile.csv")
    assert set(profile["ports"]) == {100, 1_000, 10_000}


def test_notebook_02s_recorded_os_detection_run_tells_the_stacks_apart() -> None:
    """data/sample/lab02os: notebook 02's -O scan of a StackLab of three Linux stacks
    (defaults; timestamps off and TTL 128; window scaling and SACK off), read without root
    or nmap: each host's fingerprint shows what its sysctls changed, and the matches are
    Linux."""
    import json

    from prtip_nb.osdetect.fingerprint import parse_fingerprint

    lab = SAMPLE / "lab02os"
    run = json.loads((lab / "run.json").read_text())
    regen = ("regenerate: mkdir data/sample/lab02os; sudo scripts/in-netns env "
             "PRTIP_NB_RECORD=$PWD/data/sample/lab02os .venv/bin/jupyter execute "
             "notebooks/02_how_port_scanning_works.ipynb (from notebooks/)")
    res = pn.read_scans(lab / "scans", scan_id=run["scan_id"], strict=True)
    stack_of = run["stacks"]
    assert sorted(stack_of) == sorted(res.hosts["host"]) and len(stack_of) == 3, regen
    fps = {stack_of[h]: parse_fingerprint(f[0])
           for h, f in zip(res.hosts["host"], res.hosts["os_fingerprint"], strict=True)}
    a, b, c = (fps[s] for s in sorted(fps))  # "A: ...", "B: ...", "C: ..."
    assert a["T5"]["T"] == c["T5"]["T"] == "40" and b["T5"]["T"] == "80"  # ip_default_ttl
    assert "T11" in a["OPS"]["O1"] and "T11" not in b["OPS"]["O1"]  # tcp_timestamps=0
    options_a, options_c = (set(re.sub(r"M[0-9A-F]+", "", fp["OPS"]["O1"])) for fp in (a, c))
    assert {"S", "W"} <= options_a and not {"S", "W"} & options_c  # tcp_sack, window_scaling
    assert c["ECN"]["O"] == "M5B4" and a["ECN"]["O"] == b["ECN"]["O"]  # the exercise's answer
    for fp in (a, b, c):  # what no sysctl here changes
        assert {k: v for k, v in fp["U1"].items() if k != "T"} == {
            k: v for k, v in a["U1"].items() if k != "T"}
    best = res.os.groupby("host", sort=False).head(1)
    assert len(best) == 3 and all(
        "Linux" in {cl["family"] for cl in classes} for classes in best["classes"]), best


def test_the_scans_hold_the_default_scripts_results_as_nmap_prints_them(
    series: list[pn.ScanResult],
) -> None:
    """-sC in every scan: notebooks and the README show script results from the sample.
    ssl-cert by category is nmap's short text (subject, SAN, dates), as in nmap's file of
    the same lab; the new host's certificate is the one expiring soon."""
    from prtip_nb._report_changes import expiring_certificates

    for res in series:
        assert res.meta is not None and list(res.meta.config["scripts"]) == ["default"], REGEN
        ids = set(res.scripts["id"])
        assert {"ssl-cert", "http-title", "smtp-commands"} <= ids, (ids, REGEN)
    last = series[-1]
    ours = last.scripts[last.scripts["id"] == "ssl-cert"]
    theirs = pn.read_nmap_xml(SAMPLE / "nmap-lab.xml").scripts
    theirs = theirs[theirs["id"] == "ssl-cert"]
    heads = ["Subject", "Subject Alternative Name", "Not valid before", "Not valid after"]
    for text in [*ours["output"], *theirs["output"]]:
        assert [ln.split(":")[0] for ln in text.split("\n")] == heads, text
    # nmap's text and ours for the same certificates (the IPv4 hosts nmap scanned).
    v4 = ours[ours["host"].str.contains(".", regex=False)]
    def by_port(df):  # type: ignore[no-untyped-def]
        rows = df[["host", "port", "output"]].itertuples(index=False)
        return {(h, int(p)): o for h, p, o in rows}

    assert by_port(v4) == by_port(theirs)
    assert last.meta is not None
    soon = expiring_certificates(last, now=last.meta.started)
    assert soon[["host", "port"]].values.tolist() == [["203.0.113.5", 443]], soon
