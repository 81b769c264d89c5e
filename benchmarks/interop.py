"""Interop scenarios: importing a large nmap XML, and reading one host from a large dataset.

Both make their input synthetically (documentation addresses only; nothing is scanned),
once per run of the scenario, under a temporary directory.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .harness import _RUSAGE_RE, ROOT, env_for_scan, save

IMPORT_HOSTS, IMPORT_PORTS = 500, 2000  # 1M port rows
DATASET_HOSTS, DATASET_PORTS = 500, 20000  # 10M port rows
TARGET_RATE, TARGET_RSS_MIB, TARGET_READ_S = 200_000, 500, 1.0
SERVICES = ("ssh", "http", "https", "smtp", "domain", "imap", "mysql", "rdp", "unknown")


def host_names(n: int) -> list[str]:
    """``n`` <= 500 addresses from 198.51.100.0/24 and 203.0.113.0/24 (RFC 5737)."""
    return [f"198.51.100.{i}" if i < 250 else f"203.0.113.{i - 250}" for i in range(n)]


def synth_nmap_xml(path: Path, hosts: int = IMPORT_HOSTS, ports: int = IMPORT_PORTS) -> int:
    """An nmap -oX file as nmap 7.93 writes a SYN scan (every port listed, as with -dd)."""
    with open(path, "w") as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n<nmaprun '
                 f'scanner="nmap" args="nmap -sS -dd -p1-{ports} 198.51.100.0/24 203.0.113.0/24"'
                 ' start="1764325200" startstr="Fri Nov 28 10:20:00 2025" version="7.93" '
                 f'xmloutputversion="1.05">\n<scaninfo type="syn" protocol="tcp" '
                 f'numservices="{ports}" services="1-{ports}"/>\n<verbose level="0"/>\n'
                 '<debugging level="2"/>\n')  # fmt: skip
        for addr in host_names(hosts):
            lines = []
            for p in range(1, ports + 1):
                state, reason = ("open", "syn-ack") if p % 50 == 0 else ("closed", "reset")
                lines.append(f'<port protocol="tcp" portid="{p}"><state state="{state}" '
                             f'reason="{reason}" reason_ttl="63"/><service '
                             f'name="{SERVICES[p % len(SERVICES)]}" method="table" conf="3"/>'
                             "</port>\n")  # fmt: skip
            fh.write(f'<host starttime="1764325201" endtime="1764325260"><status state="up" '
                     f'reason="echo-reply" reason_ttl="63"/>\n<address addr="{addr}" '
                     'addrtype="ipv4"/>\n<hostnames>\n</hostnames>\n<ports>'
                     + "".join(lines) + '</ports>\n<times srtt="1200" rttvar="300" to="100000"/>'
                     "\n</host>\n")  # fmt: skip
        fh.write('<runstats><finished time="1764325300" timestr="Fri Nov 28 10:21:40 2025" '
                 'elapsed="100.00" exit="success"/><hosts up="500" down="0" total="500"/>\n'
                 "</runstats>\n</nmaprun>\n")  # fmt: skip
    return hosts * ports


_IMPORT = (
    "import sys, time; t0 = time.perf_counter(); import prtip_nb as pn; t1 = time.perf_counter();"
    " r = pn.read_nmap_xml(sys.argv[1]); t2 = time.perf_counter();"
    " print('INTEROP', r.tables['ports'].num_rows, t2 - t1, t1 - t0)"
)


def _measured(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, peak RSS MiB, stdout) of ``cmd`` in its own process (as harness.timed)."""
    wrapped = [sys.executable, "-m", "prtip_nb.profile.measure", *cmd]
    proc = subprocess.run(wrapped, capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=env_for_scan())  # fmt: skip
    m = _RUSAGE_RE.search(proc.stderr)
    if m is None or proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return float(m[1]), int(m[3]) / 1024, proc.stdout


def _child_figures(stdout: str) -> list[float]:
    line = next(x for x in stdout.splitlines() if x.startswith("INTEROP"))
    return [float(v) for v in line.split()[1:]]


def import_nmap_xml(runs: int = 3) -> dict[str, Any]:
    """``read_nmap_xml`` of a 1M-row file in a fresh process: rows/s and peak RSS."""
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scan.xml"
        rows = synth_nmap_xml(path)
        size = path.stat().st_size
        for _ in range(runs):
            wall, rss, stdout = _measured([sys.executable, "-c", _IMPORT, str(path)])
            n, read_s, import_s = _child_figures(stdout)
            assert int(n) == rows, (n, rows)
            figures.append({"read_s": read_s, "import_s": import_s, "wall_s": wall,
                            "peak_rss_mib": rss})  # fmt: skip
    best = min(figures, key=lambda f: f["read_s"])
    summary = {
        "rows": rows, "file_mib": round(size / 2**20, 1),
        "rows_per_s": round(rows / best["read_s"]),
        "rows_per_s_whole_process": round(rows / best["wall_s"]),
        "peak_rss_mib": round(max(f["peak_rss_mib"] for f in figures), 1),
        "target_rows_per_s": TARGET_RATE, "target_rss_mib": TARGET_RSS_MIB,
    }  # fmt: skip
    summary["exact"] = (summary["rows_per_s"] >= TARGET_RATE
                        and summary["peak_rss_mib"] <= TARGET_RSS_MIB)  # fmt: skip
    payload = {"scenario": "import-nmap-xml", "summary": summary, "runs": figures}
    print(f"  saved {save('import-nmap-xml', payload)}")
    return payload


def synth_dataset(root: Path, hosts: int = DATASET_HOSTS, ports: int = DATASET_PORTS) -> str:
    """A finished 10M-row scan as a builder writes one: a part per 65,536 probes, in the
    scan's shuffled order (so no part holds a host range a reader could skip by)."""
    import numpy as np
    import pyarrow as pa

    from prtip_nb.results import ScanMeta, _arrow, _files, schema
    from prtip_nb.results import _convert as cv

    start = datetime(2025, 11, 28, 10, 20, tzinfo=UTC)
    meta = ScanMeta(scan_id="20251128T102000Z-synth0", started=start, ended=start + timedelta(
        minutes=10), config={"targets": ["198.51.100.0/24", "203.0.113.0/24"],
                             "ports": f"1-{ports}", "method": "syn"})  # fmt: skip
    md = meta.parquet_metadata()
    directory = _files.scan_dir(root, meta.scan_id)
    names = cv.strings(host_names(hosts))
    order = np.random.default_rng(7).permutation(hosts * ports)
    step = 65536
    for number, at in enumerate(range(0, len(order), step)):
        idx = order[at : at + step]
        n = len(idx)
        port = (idx % ports + 1).astype(np.uint16)
        is_open = port % 50 == 0
        zero = _arrow.zeros(n)
        cols = {
            "scan_id": _arrow.constant_dict(meta.scan_id, n, zero),
            "host": names.take(pa.array(idx // ports)),
            "family": pa.array(np.full(n, 4, np.uint8)),
            "proto": _arrow.constant_dict("tcp", n, zero),
            "port": pa.array(port),
            "state": pa.DictionaryArray.from_arrays(pa.array(is_open.astype(np.int32) ^ 1),
                                                    cv.strings(["open", "closed"])),
            "reason": pa.DictionaryArray.from_arrays(pa.array(is_open.astype(np.int32) ^ 1),
                                                     cv.strings(["syn-ack", "reset"])),
            "ttl": pa.array(np.full(n, 63, np.uint8)),
        }  # fmt: skip
        table = pa.Table.from_arrays(
            [cols[f.name] if f.name in cols else _arrow.null_array(f.type, n, zero)
             for f in schema.PORTS], schema=schema.PORTS)  # fmt: skip
        _files.write_part(_files.part_path(directory, "ports", number), table, md)
    n_open = ports // 50
    hosts_table = cv.table(
        {"scan_id": [meta.scan_id] * hosts, "host": host_names(hosts), "family": [4] * hosts,
         "state": ["up"] * hosts, "reason": ["syn-ack"] * hosts, "open": [n_open] * hosts,
         "closed": [ports - n_open] * hosts, "filtered": [0] * hosts, "other": [0] * hosts},
        schema.HOSTS,
    )  # fmt: skip
    for name in ("telemetry", "events"):
        _files.write_part(_files.part_path(directory, name, 0), schema.empty(name), md)
    _files.write_part(_files.part_path(directory, "hosts", 0), hosts_table, md)
    return meta.scan_id


# The first call in a fresh process (it also imports pyarrow.dataset), then a second one.
_READ = (
    "import sys, time; import prtip_nb as pn; import pyarrow; t0 = time.perf_counter();"
    " r = pn.read_scans(sys.argv[1], host=sys.argv[2]); t1 = time.perf_counter();"
    " pn.read_scans(sys.argv[1], host=sys.argv[2]); t2 = time.perf_counter();"
    " print('INTEROP', r.tables['ports'].num_rows, t1 - t0, t2 - t1)"
)


def read_filtered(runs: int = 3) -> dict[str, Any]:
    """``read_scans(root, host=one)`` on a 10M-row dataset, before and after compaction."""
    from prtip_nb.results.compact import compact

    figures: dict[str, list[float]] = {"parts": [], "compacted": [], "parts_again": [],
                                       "compacted_again": []}  # fmt: skip
    rss: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "scans"
        sid = synth_dataset(root)
        host = host_names(DATASET_HOSTS)[123]
        for layout in ("parts", "compacted"):
            if layout == "compacted":
                t0 = time.perf_counter()
                compact(root, sid)
                compact_s = time.perf_counter() - t0
            for _ in range(runs):
                _, peak, stdout = _measured([sys.executable, "-c", _READ, str(root), host])
                n, read_s, again_s = _child_figures(stdout)
                assert int(n) == DATASET_PORTS, n
                figures[layout].append(read_s)
                figures[f"{layout}_again"].append(again_s)
                rss.append(peak)
    summary = {
        "rows": DATASET_HOSTS * DATASET_PORTS, "rows_read": DATASET_PORTS,
        "read_s_parts": round(min(figures["parts"]), 3),
        "read_s_compacted": round(min(figures["compacted"]), 3),
        "read_s_parts_again": round(min(figures["parts_again"]), 3),
        "read_s_compacted_again": round(min(figures["compacted_again"]), 3),
        "peak_rss_mib": round(max(rss), 1), "target_s": TARGET_READ_S,
        "compact_s": round(compact_s, 1),
    }  # fmt: skip
    # The target is for a finished (compacted) scan; the parts layout is reported alongside.
    summary["exact"] = summary["read_s_compacted"] <= TARGET_READ_S
    payload = {"scenario": "read-filtered", "summary": summary, "runs": figures}
    print(f"  saved {save('read-filtered', payload)}")
    return payload
