"""The caller's side of a distributed scan: run the shard tasks on Dask, merge their results.

Split from ``distributed`` so that module stays the API. Nothing here imports Dask unless a
cluster is used.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..results import _arrow, _files, _hosts, schema
from ..results import _convert as cv
from .checkpoint import FORMAT, checkpoint_name, write_atomic
from .shardtask import run_shard

if TYPE_CHECKING:
    from ..results import ScanResult
    from .distributed import DistributedScan

POLL = 0.25


def _client(cluster: Any) -> tuple[Any, bool]:
    """(client, owned): a Client as given, or one made for an address or a Cluster."""
    from distributed import Client

    if isinstance(cluster, Client):
        return cluster, False
    return Client(cluster), True  # an address ("tcp://...") or a Cluster object


def run_on_dask(ds: DistributedScan, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Submit one task per shard; relay cancel; return their summaries (first error raised)."""
    from distributed import Event

    if not jobs:
        return []
    client, owned = _client(ds.cluster)
    topic = jobs[0]["topic"]
    client.subscribe_topic(topic, lambda event: ds.deliver(event[1]))
    try:
        cancel = Event(jobs[0]["cancel"], client=client)
        futures = [
            client.submit(run_shard, job, key=f"prtip_nb-{job['scan_id']}-s{job['index']:03d}",
                          pure=False)
            for job in jobs
        ]
        error: BaseException | None = None
        relayed = False
        last_tick = time.monotonic()
        while True:
            finished = [f for f in futures if f.done()]
            for f in finished:
                if error is None and f.status == "error":
                    error = f.exception()
                    ds.cancel()  # one shard failed: stop the others, keep their rows
            if ds.cancel_event.is_set() and not relayed:
                cancel.set()
                relayed = True
            if len(finished) == len(futures):
                break
            time.sleep(0.02)  # f.done() is local state: polling it costs nothing
            if time.monotonic() - last_tick >= POLL:
                last_tick = time.monotonic()
                ds.tick()
        if relayed:
            cancel.clear()  # every shard has seen it; the scheduler may forget the event
        if error is not None:
            raise error
        return [f.result() for f in futures]
    finally:
        # A shard's last report travels the same ordered streams as its result: it is in.
        client.unsubscribe_topic(topic)
        if owned:
            client.close()


def _meta(ds: DistributedScan, ended: datetime | None) -> Any:
    from ..results import ScanMeta

    assert ds.scan_id is not None and ds.started is not None
    return ScanMeta(scan_id=ds.scan_id, config=ds.public_config, started=ds.started,
                    ended=ended)


def _events(ds: DistributedScan) -> pa.Table:
    """The caller's own events (lifecycle), with a null shard."""
    rows = ds.driver_events
    cols: dict[str, list[Any]] = {
        "t": [r[0] for r in rows], "kind": [r[1] for r in rows], "payload": [r[2] for r in rows]
    }
    names = ("t", "kind", "payload")
    table = cv.table(cols, pa.schema([schema.EVENTS.field(n) for n in names]))
    return _with_id(table, ds.scan_id or "", "events")


def _telemetry(ds: DistributedScan) -> pa.Table:
    """Telemetry rows forwarded live by the shards (shard column last)."""
    rows = ds.telemetry_rows()
    fields = schema.file_schema("telemetry")
    cols = {f.name: [r[i] for r in rows] for i, f in enumerate(fields)}
    return _with_id(cv.table(cols, fields), ds.scan_id or "", "telemetry")


def _with_id(table: pa.Table, scan_id: str, name: str) -> pa.Table:
    n = table.num_rows
    col = _arrow.constant_dict(scan_id, n, _arrow.zeros(n))
    return schema.conform(table.add_column(0, schema.SCAN_ID, col), name)


def _next_number(directory: Any, table: str, tag: str) -> int:
    found = [_files.part_number(p, tag) for p in _files.parts(directory, table)]
    return max((n for n in found if n is not None), default=-1) + 1


def _shard_tables(ds: DistributedScan) -> dict[str, list[pa.Table]]:
    """The tables the shards sent back (all of them without output, else their hosts)."""
    tables: dict[str, list[pa.Table]] = {name: [] for name in schema.TABLES}
    for s in ds.shard_reports:
        for name, data in (s.get("tables") or {}).items():
            with pa.ipc.open_stream(data) as reader:
                tables[name].append(schema.conform(reader.read_all(), name))
    return tables


def merge(ds: DistributedScan) -> ScanResult:
    """The whole scan as one ScanResult; with output, also its events and hosts parts."""
    from ..results import ScanResult, read_scans

    c = ds.counters
    done = [s for s in ds.shard_reports if "done" in s]
    if done:
        c.done = sum(int(s["done"]) for s in done)
        c.open = sum(int(s["open"]) for s in done)
    meta = _meta(ds, datetime.now(UTC))
    events = _events(ds)
    out = ds.config.output
    if out is not None:
        from .distributed import DRIVER_TAG

        directory = _files.scan_dir(out, meta.scan_id)
        md = meta.parquet_metadata()
        number = _next_number(directory, "events", DRIVER_TAG)
        _files.write_part(_files.part_path(directory, "events", number, DRIVER_TAG), events, md)
        res = read_scans(out, meta.scan_id)  # no hosts part yet: derived from all the ports
        hosts = _hosts.merge_shard_hosts(res.tables["hosts"], _shard_tables(ds)["hosts"])
        res = ScanResult({**res.tables, "hosts": hosts}, meta)
        if ds.status == "completed":  # a cut-short scan has no hosts part: not complete
            path = _files.part_path(directory, "hosts", _next_number(directory, "hosts", ""))
            _files.write_part(path, hosts, md)  # last: marks the scan complete
        write_manifest(ds, ds.status)
        return ScanResult(res.tables, meta)
    tables = _shard_tables(ds)
    ports = _arrow.normalize_ports(pa.concat_tables([schema.empty("ports"), *tables["ports"]]))
    # Scripts, os, trace and telemetry as the shards gave them; the scan row comes from
    # the driver's meta (a shard's describes one shard).
    merged = {name: pa.concat_tables([schema.empty(name), *parts]).unify_dictionaries()
              for name, parts in tables.items() if name in ("scripts", "os", "trace", "telemetry")}
    return ScanResult(
        {
            **merged,
            "ports": ports,
            "hosts": _hosts.merge_shard_hosts(_hosts.derive_hosts(ports), tables["hosts"]),
            "events": pa.concat_tables([schema.empty("events"), *tables["events"], events]),
        },
        meta,
    )


def snapshot(ds: DistributedScan) -> ScanResult:
    """While shards run: the parts on disk so far (with output), and the live telemetry."""
    from ..errors import DatasetError
    from ..results import ScanResult, read_scans

    tables: dict[str, pa.Table] = {}
    if ds.config.output is not None and ds.scan_id is not None:
        try:
            tables = dict(read_scans(ds.config.output, ds.scan_id).tables)
        except DatasetError:
            tables = {}  # no part written yet
    tables["telemetry"] = _telemetry(ds)
    tables["events"] = _events(ds)
    return ScanResult(tables, _meta(ds, None))


def write_manifest(ds: DistributedScan, status: str) -> None:
    """The scan-wide checkpoint: every shard, its tag and index, the config with the seed."""
    from ..results._files import scan_dir
    from .resume import space_digest

    assert ds.config.output is not None and ds.scan_id and ds.started
    directory = scan_dir(ds.config.output, ds.scan_id)
    directory.mkdir(parents=True, exist_ok=True)
    shards = {
        f"{k}/{n}": {"index": i, "total": ds.totals[i], "tag": f"s{i:03d}-",
                     "low_water": 0, "status": "pending", **ds.resume_entry(i)}
        for i, (k, n) in ds.shards.items()
    }
    write_atomic(directory / checkpoint_name(), {
        "format": FORMAT, "scan_id": ds.scan_id, "started": ds.started.isoformat(),
        "config": ds.config.to_json(), "seed": ds.config.seed, "distributed": True,
        "status": status, "space": space_digest(ds.space), "shards": shards,
    })
