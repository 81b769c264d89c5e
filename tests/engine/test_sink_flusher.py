"""RecordSink's flush thread: batches built and written off the feeding thread, in order,
with a bounded buffer; EventBus.listens, which lets the scan skip PortFound events."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from prtip_nb.engine.events import EventBus, PortFound, Progress
from prtip_nb.engine.sink import BEHIND, CHUNK, RecordSink
from prtip_nb.engine.syn import verdict
from prtip_nb.net.counters import Counters
from prtip_nb.probes.records import DTYPE
from prtip_nb.targets import parse_ports, parse_targets


def _records(start: int, n: int) -> bytes:
    rec = np.zeros(n, DTYPE)
    rec["index"] = np.arange(start, start + n)
    rec["code"] = np.where(rec["index"] % 3 == 0, 0, 1)  # every third open
    return rec.tobytes()


def test_the_flush_thread_writes_every_record_in_order_off_the_feeder() -> None:
    targets, ports = parse_targets(["198.18.0.0/22"]), parse_ports("1-100")
    threads: set[str] = set()
    batches = []

    def on_batch(batch: object) -> None:
        threads.add(threading.current_thread().name)
        batches.append(batch)

    sink = RecordSink(targets=targets, ports=ports, scan_id="t", decode=verdict,
                      on_batch=on_batch, counters=Counters(), batch_rows=4096, max_age=None)
    sink.start_flusher()
    peak = 0
    for k in range(0, 102_400, 1024):  # the whole /22 x 100 space, as a receiver feeds
        sink.feed(_records(k, 1024))
        peak = max(peak, sink.buffered)
        if k == 8192:  # give the thread its turn once: a busy box can starve it of the GIL
            deadline = time.monotonic() + 5.0
            while "prtip-sink-flush" not in threads and time.monotonic() < deadline:
                time.sleep(0.001)
    sink.stop_flusher()
    sink.flush()  # what the thread left: on the caller
    rows = sum(b.num_rows for b in batches)
    assert rows == 102_400
    # Conversion happened on the flush thread, not (only) on the feeder.
    assert "prtip-sink-flush" in threads
    # The buffer never held more than BEHIND batches and one feed before someone flushed.
    assert peak <= (BEHIND * 4096 + 1024) * DTYPE.itemsize
    # In order: the host/port pairs come back as the index space's (host = j % H).
    hosts = np.concatenate([np.asarray(b["host"].to_pylist(), object) for b in batches])
    assert len(set(zip(hosts.tolist(), np.concatenate(
        [b["port"].to_numpy() for b in batches]).tolist(), strict=True))) == 102_400


def test_kept_rows_of_many_blocks_come_in_full_batches_and_every_index_is_done() -> None:
    """A flush converts its records a CHUNK-row block at a time (each freed once its batch
    exists); rows that ``keep`` keeps still come in batches of CHUNK rows, in order, and
    ``on_flushed`` hears every record's index, kept or not."""
    targets, ports = parse_targets(["198.18.0.0/22"]), parse_ports("1-100")
    batches: list[object] = []
    done: list[np.ndarray] = []
    n = 3 * CHUNK + 5
    sink = RecordSink(targets=targets, ports=ports, scan_id="t", decode=verdict,
                      on_batch=batches.append, counters=Counters(), keep="responsive",
                      batch_rows=4 * CHUNK, max_age=None, on_flushed=done.append)
    for k in range(0, n, 1000):
        sink.feed(_records(k, min(1000, n - k)))
    assert sink.buffered == n * DTYPE.itemsize
    sink.flush()
    assert sink.buffered == 0
    assert np.array_equal(np.concatenate(done), np.arange(n))
    # (every record answered: "responsive" keeps them all, in CHUNK-row batches)
    assert [b.num_rows for b in batches] == [CHUNK, CHUNK, CHUNK, 5]  # type: ignore[attr-defined]


def test_a_failing_flush_reaches_on_error() -> None:
    targets, ports = parse_targets(["198.18.0.0/24"]), parse_ports("1-10")
    heard: list[BaseException] = []

    def on_batch(batch: object) -> None:
        raise OSError(28, "No space left on device")

    sink = RecordSink(targets=targets, ports=ports, scan_id="t", decode=verdict,
                      on_batch=on_batch, counters=Counters(), batch_rows=256, max_age=None)
    sink.start_flusher(heard.append)
    sink.feed(_records(0, 512))  # two batches due: the thread is woken
    deadline = time.monotonic() + 10
    while not heard and time.monotonic() < deadline:
        time.sleep(0.01)
    sink.stop_flusher()  # heard already: does not raise again
    assert heard and isinstance(heard[0], OSError)


def test_listens_tells_whether_anyone_takes_an_event_kind() -> None:
    bus = EventBus()
    assert not bus.listens(PortFound)
    sub = bus.subscribe(None, Progress)
    assert not bus.listens(PortFound)
    both = bus.subscribe(None, (Progress, PortFound))
    assert bus.listens(PortFound)
    bus.unsubscribe(both)
    bus.unsubscribe(sub)
    bus.subscribe(None)  # everything
    assert bus.listens(PortFound)


def test_timer_threads_hand_age_flushes_to_the_flush_thread() -> None:
    """The poller's flush_if_older must not convert on the poller (its ticks stay on time)."""
    targets, ports = parse_targets(["198.18.0.0/24"]), parse_ports("1-10")
    threads: list[str] = []
    sink = RecordSink(targets=targets, ports=ports, scan_id="t", decode=verdict,
                      on_batch=lambda b: threads.append(threading.current_thread().name),
                      counters=Counters(), max_age=0.05)
    sink.start_flusher()
    sink.feed(_records(0, 100))
    time.sleep(0.06)
    sink.flush_if_older()  # as the poller does: only wakes the flush thread
    deadline = time.monotonic() + 10
    while not threads and time.monotonic() < deadline:
        time.sleep(0.01)
    sink.stop_flusher()
    assert threads == ["prtip-sink-flush"]


def test_host_text_by_whole_table_and_by_distinct_hosts_agree_with_ipaddress() -> None:
    """V4Text.column: a table of every host's text (small target sets) or the distinct
    hosts' text taken back (big ones) give each row its address, in any order, repeats
    included, across ranges."""
    import ipaddress

    from prtip_nb.engine.hosttally import V4Text

    targets = parse_targets(["198.18.0.0/22", "198.18.8.250-198.18.9.5",
                            "203.0.113.7"])  # parse-only: no packet sent
    index = np.random.default_rng(3).integers(0, targets.size, 5000).astype(np.uint64)
    want = [targets.address(int(h)) for h in index]
    assert all(str(ipaddress.ip_address(w)) == w for w in want)
    v4 = V4Text(targets)
    assert v4.column(index).to_pylist() == want
    v4.WHOLE = 16  # as a target set bigger than the table's bound
    assert v4.column(index).to_pylist() == want


def test_parquet_options_name_parquet_leaves_dictionaries_but_floats_no_zstd_if_null(
        tmp_path: Path) -> None:
    """parquet_options names Parquet's own leaf paths (nested ones included: a name
    Parquet does not know would silently be ignored): dictionaries for every leaf but
    floats and times, zstd for every column with a value, none for all-null ones; and
    a part written so reads back equal."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from prtip_nb.results import _files, schema

    for sch in (schema.PORTS, schema.HOSTS, schema.SCAN, schema.TELEMETRY, schema.OS):
        buf = io.BytesIO()
        pq.write_table(sch.empty_table(), buf)
        leaves = {c.path: c for c in pq.ParquetFile(io.BytesIO(buf.getvalue())).schema}
        opts = _files.parquet_options(sch.empty_table())
        assert set(opts["use_dictionary"]) <= set(leaves) and set(opts["compression"]) == set(
            leaves)
        plain = {p for p in leaves if p not in opts["use_dictionary"]}
        assert all(leaves[p].physical_type in ("FLOAT", "DOUBLE")
                   or leaves[p].logical_type.type == "TIMESTAMP" for p in plain), plain
    ports = pa.table({"host": ["198.51.100.1", "198.51.100.2"], "rtt_ms": [1.5, None],
                      "tls_san": pa.nulls(2, pa.list_(pa.string()))})
    opts = _files.parquet_options(ports)
    assert opts["use_dictionary"] == ["host", "tls_san.list.element"]
    assert opts["compression"] == {"host": "ZSTD", "rtt_ms": "ZSTD",
                                   "tls_san.list.element": "NONE"}
    _files.write_part(tmp_path / "p.parquet", ports, {b"k": b"v"})
    back = pq.ParquetFile(tmp_path / "p.parquet")
    assert back.read().equals(ports)
    codecs = {back.metadata.row_group(0).column(i).path_in_schema:
              back.metadata.row_group(0).column(i).compression for i in range(3)}
    assert codecs == {"host": "ZSTD", "rtt_ms": "ZSTD", "tls_san.list.element": "UNCOMPRESSED"}


def test_host_tally_keeps_each_hosts_earliest_reason_ties_to_the_first_row() -> None:
    """HostTally.add against a row-by-row reference, over flushes with many ties in time:
    counts per state, smallest RTT, and the reason of the earliest responsive row (the
    first row among equal times; an earlier flush wins a tie)."""
    from prtip_nb.engine.hosttally import HostTally

    rng = np.random.default_rng(7)
    n_hosts = 50
    tally = HostTally(n_hosts)
    counts = np.zeros_like(tally.counts)
    first_t = {h: None for h in range(n_hosts)}
    first_reason = np.full(n_hosts, -1)
    rtt = np.full(n_hosts, np.inf, np.float32)
    for _flush in range(8):
        n = 400
        h = rng.integers(0, n_hosts, n).astype(np.int64)
        st = rng.integers(0, 4, n).astype(np.int32)  # open, closed, filtered, unfiltered
        why = rng.integers(0, 6, n).astype(np.int32)
        t_us = rng.integers(0, 300, n).astype(np.int64)
        rtts = rng.random(n).astype(np.float32)
        tally.add(h, st, why, rtts, t_us, st < 3)
        for k in range(n):
            counts[h[k], st[k]] += 1
            if st[k] < 3:
                rtt[h[k]] = min(rtt[h[k]], rtts[k])
            if tally._responsive[st[k]] and (first_t[h[k]] is None or t_us[k] < first_t[h[k]]):
                first_t[h[k]], first_reason[h[k]] = t_us[k], why[k]
    assert (tally.counts == counts).all() and (tally.rtt == rtt).all()
    assert (tally.first_reason == first_reason).all()
