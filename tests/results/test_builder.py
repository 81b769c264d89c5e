"""ResultBuilder: schema-exact tables, parts on disk while running, dedup, hosts, memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prtip_nb.errors import DatasetError
from prtip_nb.results import ResultBuilder, ScanResult, list_scans, read_scans, schema

from .scans import T0, T0_US, fill, make_meta, ports_batch

# parse-only hosts: rows fed to ResultBuilder; nothing is sent to them
H1 = "10.0.0.1"  # parse-only
H200 = "192.168.100.200"  # parse-only
REPO = Path(__file__).resolve().parents[2]


def test_every_table_is_exactly_the_schema(result: ScanResult) -> None:
    for name, expected in schema.TABLES.items():
        table = result.tables[name]
        assert table.schema.equals(expected), name
        df = getattr(result, name)
        assert list(df.columns) == expected.names
        for field in expected:
            dtype = df[field.name].dtype
            assert isinstance(dtype, pd.ArrowDtype), (name, field.name, dtype)
            assert dtype.pyarrow_dtype == field.type, (name, field.name)
    ports = result.ports
    assert str(ports["port"].dtype) == "uint16[pyarrow]"
    assert str(ports["first_seen"].dtype) == "timestamp[us, tz=UTC][pyarrow]"
    assert result.ports is ports  # cached


def test_ports_sorted_by_ip_then_proto_then_port(result: ScanResult) -> None:
    got = list(zip(result.ports["host"], result.ports["proto"], result.ports["port"], strict=True))
    assert got == [
        ("10.0.0.1", "tcp", 21),  # parse-only
        ("10.0.0.1", "tcp", 22),  # parse-only
        ("10.0.0.1", "tcp", 23),  # parse-only
        ("10.0.0.1", "udp", 53),  # parse-only
        ("10.0.0.2", "tcp", 22),  # parse-only
        ("10.0.0.2", "tcp", 80),  # parse-only
        ("10.0.0.10", "tcp", 80),  # numeric order: .10 after .2; parse-only
    ]
    # The state dictionary is nmap's word order, whatever order the rows came in.
    states = result.tables["ports"]["state"].chunk(0).dictionary.to_pylist()
    assert states[: len(schema.STATES)] == list(schema.STATES)


def test_hosts_are_derived_from_ports(result: ScanResult) -> None:
    hosts = result.hosts.set_index("host")
    assert list(hosts.index) == ["10.0.0.1", "10.0.0.2", "10.0.0.10"]  # parse-only
    one = hosts.loc["10.0.0.1"]  # parse-only
    # up, with the reason of its earliest answer (the reset came before the syn-ack)
    assert (one["state"], one["reason"], one["hostname"]) == ("up", "reset", "gw.lan")
    assert (one["open"], one["closed"], one["filtered"], one["other"]) == (1, 1, 1, 1)
    assert one["rtt_ms"] == pytest.approx(0.2)
    two = hosts.loc["10.0.0.2"]  # parse-only
    assert (two["state"], two["reason"], two["open"], two["closed"]) == ("up", "reset", 1, 1)
    silent = hosts.loc["10.0.0.10"]  # parse-only
    assert (silent["state"], silent["reason"], silent["filtered"]) == ("unknown", "no-response", 1)
    assert pd.isna(silent["rtt_ms"])


def test_summary_open_ports_and_repr(result: ScanResult) -> None:
    s = result.summary()
    assert list(s.columns) == [
        "host", "hostname", "state", "open", "closed", "filtered", "other", "open_ports",
    ]  # fmt: skip
    assert all(isinstance(t, pd.ArrowDtype) for t in s.dtypes)
    assert list(s["open_ports"]) == ["22/tcp", "80/tcp", ""]
    assert list(result.open_ports["port"]) == [22, 80]
    assert repr(result) == "<ScanResult 20261128T101500Z-aaaaaa: 3 hosts, 7 ports, 2 open, 1.5 s>"
    assert "22/tcp" in result._repr_html_()


def test_duplicates_keep_the_first_responsive_row(tmp_path: Path) -> None:
    b = ResultBuilder(make_meta(), sink=tmp_path)
    rows = [
        (H1, None, 4, "tcp", 80, "filtered", "no-response", None, None, None),
        (H1, None, 4, "tcp", 80, "open", "syn-ack", 64, 1.0, T0_US + 9),
        (H1, None, 4, "tcp", 80, "closed", "reset", 64, 0.5, T0_US + 10),
        (H1, None, 4, "tcp", 443, "filtered", "no-response", None, None, T0_US + 1),
        (H1, None, 4, "tcp", 443, "filtered", "no-response", None, None, T0_US + 2),
        (H1, None, 4, "udp", 80, "open|filtered", "no-response", None, None, None),
    ]
    for start in range(0, 6, 2):  # two rows a batch: duplicates span part files
        b.add_batch(ports_batch(rows[start:start + 2]))
    assert b.rows == 6
    res = b.finish(ended=T0 + timedelta(seconds=1))
    ports = res.ports
    assert list(zip(ports["proto"], ports["port"], ports["state"], strict=True)) == [
        ("tcp", 80, "open"),
        ("tcp", 443, "filtered"),
        ("udp", 80, "open|filtered"),
    ]
    assert ports["first_seen"][1] == pd.Timestamp(T0_US + 1, unit="us", tz="UTC")
    # On disk too: the parts of the added rows were replaced by the deduplicated table.
    again = read_scans(tmp_path)
    assert again.tables["ports"].equals(res.tables["ports"])
    assert len(list((tmp_path / f"scan_id={res.scan_id}" / "ports").glob("*.parquet"))) == 1


def test_parts_are_written_while_running(tmp_path: Path) -> None:
    b = ResultBuilder(make_meta(), sink=tmp_path)
    for start in range(0, 35, 10):  # a part per batch, as the scan's sink hands them over
        b.add_batch(ports_batch([(H1, None, 4, "tcp", port, "closed", "reset", 64, 0.1,
                                  T0_US + port) for port in range(start, min(start + 10, 35))]))
    parts = sorted((tmp_path / "scan_id=20261128T101500Z-aaaaaa" / "ports").iterdir())
    assert [p.name for p in parts] == [f"part-0000{i}.parquet" for i in range(4)]
    for part in parts:
        file = pq.ParquetFile(part)
        assert "scan_id" not in file.schema_arrow.names  # the directory carries it
        assert file.schema_arrow.equals(schema.file_schema("ports"))
        md = file.schema_arrow.metadata
        assert md[schema.META_ENDED] == b""  # not ended yet
        assert md[schema.META_SCAN_ID] == b"20261128T101500Z-aaaaaa"
    # The builder is dropped without finish(), as by a crash: every row given is there.
    res = read_scans(tmp_path)
    assert len(res.ports) == 35 and res.ended is None
    assert res.hosts["state"].tolist() == ["up"]


def test_kill_9_keeps_every_added_row(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.results.scans import make_meta, ports_batch
        from prtip_nb.results import ResultBuilder
        b = ResultBuilder(make_meta(), sink={str(tmp_path)!r})
        for start in range(0, 35, 10):
            b.add_batch(ports_batch([({H1!r}, None, 4, "tcp", port, "open", "syn-ack", 64, 0.1,
                                      None) for port in range(start, min(start + 10, 35))]))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=60)
    assert proc.returncode == -9
    res = read_scans(tmp_path)
    assert len(res.ports) == 35 and res.open_ports["port"].tolist() == list(range(35))
    listed = list_scans(tmp_path)
    assert listed["complete"].tolist() == [False]
    assert listed["n_ports"].tolist() == [35] and listed["n_open"].tolist() == [35]


def test_snapshot_does_not_disturb_the_builder(tmp_path: Path) -> None:
    b = ResultBuilder(make_meta(), sink=tmp_path)
    fill(b, per_batch=3)
    snap = b.snapshot()
    assert len(snap.ports) == 7 and snap.ended is None and "running" in repr(snap)
    h3 = "10.0.0.3"  # parse-only
    b.add_batch(ports_batch([(h3, None, 4, "tcp", 443, "open", "syn-ack", 64, 2.0, T0_US + 50)]))
    res = b.finish(ended=T0 + timedelta(seconds=2))
    assert len(res.ports) == 8 and len(res.hosts) == 4 and len(snap.ports) == 7
    assert b.finish(ended=T0) is res  # idempotent


def test_services_merge_by_host_proto_port(result: ScanResult) -> None:
    b = ResultBuilder(make_meta())
    fill(b)
    b.add_services([{"host": H1, "proto": "tcp", "port": 22, "service": "ssh"}])
    b.add_services(
        [{"host": H1, "proto": "tcp", "port": 22, "product": "OpenSSH", "tls_san": ["a"]}]
    )
    ports = b.finish(ended=T0).ports.set_index(["host", "port"])
    row = ports.loc[("10.0.0.1", 22)]  # parse-only
    assert (row["service"], row["product"], list(row["tls_san"])) == ("ssh", "OpenSSH", ["a"])
    assert ports["service"].notna().sum() == 1


def test_given_hosts_table_is_used(result: ScanResult) -> None:
    b = ResultBuilder(make_meta())
    fill(b)
    hosts = pa.table(
        {
            "host": ["10.0.0.9"],  # parse-only
            "family": pa.array([4], pa.uint8()),
            "state": ["down"],
            "reason": ["host-unreach"],
            "open": pa.array([0], pa.uint32()),
            "closed": pa.array([0], pa.uint32()),
            "filtered": pa.array([0], pa.uint32()),
            "other": pa.array([0], pa.uint32()),
        }
    )
    res = b.finish(ended=T0, hosts=hosts)
    assert res.tables["hosts"].schema.equals(schema.HOSTS)
    assert res.hosts[["scan_id", "host", "state"]].values.tolist() == [
        ["20261128T101500Z-aaaaaa", "10.0.0.9", "down"]  # parse-only
    ]


def test_existing_scan_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "scan_id=20261128T101500Z-aaaaaa").mkdir()
    with pytest.raises(DatasetError, match="already exists"):
        ResultBuilder(make_meta(), sink=tmp_path)


def test_bytes_per_row_of_a_full_port_range() -> None:
    b = ResultBuilder(make_meta())
    rows = []
    for port in range(1, 65536):
        state, reason = ("open", "syn-ack") if port % 1000 == 0 else ("closed", "reset")
        rows.append((H200, None, 4, "tcp", port, state, reason, 64, 0.25, T0_US + port))
    b.add_batch(ports_batch(rows))
    table = b.finish(ended=T0).tables["ports"]
    per_row = table.get_total_buffer_size() / table.num_rows
    print(f"ports table: {per_row:.1f} B per row over {table.num_rows} rows")
    assert table.num_rows == 65535 and per_row < 60


def test_scanning_path_does_not_import_pandas(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from datetime import timedelta
        from tests.results.scans import T0, fill, make_meta
        from prtip_nb.results import ResultBuilder
        b = ResultBuilder(make_meta(), sink={str(tmp_path / "a")!r})
        fill(b, per_batch=2)
        b.snapshot()
        res = b.finish(ended=T0 + timedelta(seconds=1))
        res.to_parquet({str(tmp_path / "b")!r})
        print(repr(res))
        from prtip_nb.cli import format_report
        for only_open in (False, True):  # the CLI's report: several hosts, one sort
            text = format_report(res, only_open=only_open)
        assert "Scan report for" in text
        assert "pandas" not in sys.modules, "pandas was imported"
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "3 hosts, 7 ports, 2 open" in proc.stdout


def test_normalize_takes_over_a_batch_list() -> None:
    """Given the builder's batches, normalize_ports empties the list (so each input column
    can be freed as its sorted copy is made) and gives what the table form gives."""
    from prtip_nb.results import _arrow

    b = ResultBuilder(make_meta())
    fill(b, per_batch=3)
    b.add_batch(ports_batch([(H1, None, 4, "tcp", 22, "filtered", "no-response", None, None,
                              T0_US)]))
    batches = list(b._batches)
    assert len(batches) > 1
    expected = _arrow.normalize_ports(pa.Table.from_batches(batches, schema=schema.PORTS))
    given = list(batches)
    got = _arrow.normalize_ports(given)
    assert given == [] and got.equals(expected)
    assert got.schema.equals(schema.PORTS)


def test_host_states_tells_the_hosts_up_without_a_snapshot() -> None:
    """What the reverse-DNS stage asks mid-scan: every host in IP order, "up" when any of
    its rows answered; the same verdicts as the hosts table (rows in several batches)."""
    b = ResultBuilder(make_meta())
    fill(b, per_batch=3)  # parse-only; 10.0.0.10 only silent, in the 2nd batch of 3
    states = b.host_states()
    assert states.to_pydict() == {"host": ["10.0.0.1", "10.0.0.2", "10.0.0.10"],  # parse-only
                                  "state": ["up", "up", "unknown"]}
    hosts = b.snapshot().tables["hosts"]
    assert states["host"].to_pylist() == hosts["host"].to_pylist()
    assert states["state"].to_pylist() == hosts["state"].cast(pa.string()).to_pylist()
    b.finish(ended=T0 + timedelta(seconds=1))
    assert b.host_states().to_pydict() == states.to_pydict()  # from the final hosts table


@pytest.mark.serial
def test_null_columns_take_no_resident_memory() -> None:
    """All-null columns share one never-written mapping: 10M rows of them cost ~nothing."""
    from prtip_nb.engine.telemetry import rss_bytes
    from prtip_nb.results import _arrow

    n = 10_000_000
    before = rss_bytes()
    zero = _arrow.zeros(n)
    cols = [_arrow.null_array(f.type, n, zero) for f in schema.PORTS]
    assert all(c.null_count == n for c in cols)
    assert pa.Table.from_arrays(cols, schema=schema.PORTS).validate(full=True) is None
    assert rss_bytes() - before < 8 * 2**20  # one 8 B/row buffer would be 76 MiB


def test_held_open_rows_are_merged_into_few_batches(tmp_path: Path) -> None:
    """hold="open" keeps each batch's open rows; past COMPACT_HELD small batches they are
    merged into one (all-null columns stay zero-copy), and the result is the same rows."""
    from prtip_nb.results import builder as builder_mod

    b = ResultBuilder(make_meta(), sink=tmp_path, hold="open")
    n_batches = builder_mod.COMPACT_HELD * 2 + 3
    for k in range(n_batches):
        host = f"198.18.{k // 256}.{k % 256}"  # parse-only
        b.add_batch(ports_batch([  # one open, one closed row a batch
            (host, None, 4, "tcp", 80, "open", "syn-ack", 64, 0.5, T0_US + k),
            (host, None, 4, "tcp", 81, "closed", "reset", 64, 0.5, T0_US + k),
        ]))
    assert len(b._batches) <= 2 + builder_mod.COMPACT_HELD  # merged, not one per batch
    res = b.finish(ended=T0 + timedelta(seconds=1))
    ports = res.tables["ports"]
    assert ports.num_rows == n_batches  # the open rows only, every one of them
    assert set(ports["state"].cast("string").to_pylist()) == {"open"}
    assert ports["hostname"].null_count == n_batches
    on_disk = pq.read_table(tmp_path / f"scan_id={res.scan_id}" / "ports")
    assert on_disk.num_rows == 2 * n_batches  # the parts keep every row


def test_host_order_matches_ipaddress_order() -> None:
    """host_rank parses IPv4 with Arrow kernels and the rest with ipaddress; together they
    give ipaddress's order (IPv4 numerically, then IPv6, then non-addresses)."""
    import random

    from prtip_nb.results import _arrow
    from prtip_nb.results import _convert as cv

    texts = ["10.0.0.2", "10.0.0.10", "9.255.255.255", "::1", "2001:db8::1", "bogus",
             "010.1.1.1", "255.255.255.255", "0.0.0.0", "1.2.3.256", "198.18.0.1"]  # parse-only
    texts += [f"198.{18 + i // 65536}.{(i >> 8) & 255}.{i & 255}"  # parse-only
              for i in random.Random(1).sample(range(1 << 17), 2000)]
    rows = texts + texts[:50]  # repeated hosts share a rank
    rank = _arrow.host_rank(cv.plain_strings(rows)).to_pylist()
    expect = sorted(set(texts), key=_arrow._ip_key)
    assert rank == [expect.index(t) for t in rows]


def test_streamed_parts_hold_a_row_group_per_state(tmp_path: Path) -> None:
    """Parts written while a scan runs group their rows by state, a row group each, so
    read_scans(state=...) skips the other states' row groups by their statistics; what it
    returns is exactly the full read filtered."""
    b = ResultBuilder(make_meta(), sink=tmp_path)
    states = ["closed", "open", "filtered", "closed", "closed"]
    rows = []
    for port in range(1, 201):
        state = states[port % len(states)]
        rows.append(("198.18.0.1", None, 4, "tcp", port, state,  # parse-only
                     {"open": "syn-ack", "closed": "reset"}.get(state, "no-response"),
                     None if state == "filtered" else 64, None, T0_US + port))
    for start in range(0, 200, 50):  # a part per batch
        b.add_batch(ports_batch(rows[start:start + 50]))
    parts = sorted((tmp_path / "scan_id=20261128T101500Z-aaaaaa" / "ports").glob("*.parquet"))
    assert len(parts) == 4
    for part in parts:
        md = pq.ParquetFile(part).metadata
        col = md.schema.names.index("state")
        stats = [md.row_group(i).column(col).statistics for i in range(md.num_row_groups)]
        assert md.num_row_groups == 3 and all(s.min == s.max for s in stats)
    full = read_scans(tmp_path).tables["ports"]
    for want in ("open", ["open", "filtered"]):
        got = read_scans(tmp_path, state=want).tables["ports"]
        words = {want} if isinstance(want, str) else set(want)
        expect = full.filter(pa.array([s in words for s in full["state"].to_pylist()]))
        assert got.equals(expect)
