"""``Scan``: one scan on a background thread, and ``scan()``, its blocking wrapper.

Everything the user typed is parsed and validated in ``Scan.__init__``: a bad target or
port raises there, before any socket exists. ``start()`` runs the engine on a daemon
thread; ``cancel()`` makes it stop within one poll interval (50 ms) and keeps what was
found; ``wait()`` returns the ``ScanResult``. Because the scan runs on its own thread,
``scan()`` works the same inside a notebook, whose event loop is already running.

Start, cancel, wait, events and the terminal event are engine.lifecycle's, shared with
``DistributedScan``; this module says what one process's scan does inside them.
"""

from __future__ import annotations

import os
import random
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..config import ScanConfig, is_privileged
from ..errors import ConfigError, PrivilegeError, ScanError
from ..net.counters import Counters
from ..net.ratectl import RateState
from ..targets import PortSet, TargetSet, TargetSpace, parse_ports, parse_targets, shard_len
from .checkpoint import RunPlan
from .discovery import DISCOVER_BY_DEFAULT
from .events import (
    Event,
    PortFound,
    Progress,
    ScanStarted,
    StageChanged,
    publish_diagnostics,
)
from .lifecycle import Lifecycle
from .runs import ScanRuns
from .telemetry import Poller, release_free_memory

if TYPE_CHECKING:
    from ..results import ResultBuilder, ScanResult
    from .checkpoint import Checkpointer
    from .distributed import DistributedScan
    from .sink import RecordSink
    from .telemetry import Poller as PollerT
    from .workers import WorkerPool

_AUTO_WARNED: set[str] = set()


def _resolve_method(method: str) -> str:
    """'syn' needs raw sockets (PrivilegeError with the fix otherwise); 'auto' takes SYN
    when privileged, else connect, and says which -- once per process and choice."""
    if method == "auto":
        picked = "syn" if is_privileged() else "connect"
        if picked not in _AUTO_WARNED:
            _AUTO_WARNED.add(picked)
            why = (
                "raw sockets are available" if picked == "syn"
                else "no root or CAP_NET_RAW for raw sockets; -sS would need them"
            )
            warnings.warn(f"method='auto' picked {picked!r}: {why}", stacklevel=3)
        return picked
    if method == "syn" and not is_privileged():
        from ..net.rawsock import PRIVILEGE_FIX

        raise PrivilegeError(f"method='syn' (-sS) sends raw packets: {PRIVILEGE_FIX}")
    if method == "udp" and not is_privileged():
        raise PrivilegeError(
            "method='udp' (-sU) sends raw packets and reads ICMP errors with a packet "
            "capture: run as root, or give the interpreter the capability (sudo setcap "
            "cap_net_raw+ep \"$(readlink -f $(which python3))\")"
        )
    return method


def make_config(
    targets: str | Sequence[str] | None,
    ports: str | int | Sequence[int] | None,
    config: ScanConfig | None,
    options: dict[str, Any],
) -> ScanConfig:
    """The ScanConfig of ``Scan(targets, ports, **options)`` or ``Scan(config=...)``, with a
    seed: the shards and resumes of one scan must share its order."""
    if config is None:
        if ports is not None and not isinstance(ports, str):
            ports = ",".join(str(p) for p in ([ports] if isinstance(ports, int) else ports))
        config = ScanConfig(targets=() if targets is None else targets,  # type: ignore[arg-type]
                            ports=ports, **options)
    elif targets is not None or ports is not None or options:
        raise ConfigError("give either config= or targets/ports/options, not both")
    if config.seed is None:
        config = config.replace(seed=random.SystemRandom().getrandbits(63))
    return config


def build_space(config: ScanConfig) -> tuple[TargetSet, PortSet, TargetSpace]:
    """The targets, ports and index space of ``config`` (method already resolved), checked.

    One place for what a Scan and a DistributedScan must agree on: a UDP scan (-sU) reads
    unprefixed ports as UDP, -sS scans U: ports too (-sS -sU), -sT refuses them; a ping
    sweep's or list scan's config is not a port scan's."""
    if config.ping_only or config.list_only:
        flag, run = ("-sn", "pn.discover(targets)") if config.ping_only else \
            ("-sL", "prtip-nb scan -sL")
        raise ConfigError(
            f"a {flag} config ({'ping_only' if config.ping_only else 'list_only'}=True) "
            "records a run that scans no ports: a port scan cannot run it",
            hint=f"use {run}, or drop {'ping_only' if config.ping_only else 'list_only'}",
        )
    method = config.method
    targets = parse_targets(
        list(config.targets),
        exclude=list(config.exclude) or None,
        exclude_file=config.exclude_file,
        input_file=config.input_file,
        family=config.family,
    )
    ports = parse_ports(config.ports, top_ports=config.top_ports,
                        default_proto="udp" if method == "udp" else "tcp")
    if ports.count("udp") and method == "connect":
        raise ConfigError(
            "a connect (-sT) scan probes TCP only, but the port list has UDP ports",
            hint="drop the U: ports, or use method='udp' (-sU) or 'syn' (-sS -sU)",
        )
    if ports.count("tcp") and method == "udp":
        raise ConfigError(
            "a UDP (-sU) scan probes UDP only, but the port list has TCP ports",
            hint="drop the T: ports, or use method='syn' to scan T: and U: ports together",
        )
    return targets, ports, TargetSpace(targets, ports)


def segments(space: TargetSpace) -> tuple[tuple[int, int], ...]:
    """``(offset, size)`` of each engine's own index space inside ``space``, in run order.

    A -sS -sU scan runs the SYN engine over the TCP indices (first in the space), then the
    UDP engine over the rest, each with its own permutation and shard of its part. A
    shard's positions are the TCP part's, then the UDP part's: that order is what the
    checkpoint's low-water mark counts and what a resume restarts from."""
    tcp = space.ports.count("tcp") * space.hosts
    udp = space.size - tcp
    if tcp and udp:
        return ((0, tcp), (tcp, udp))
    return ((0, space.size),)


class Scan(ScanRuns, Lifecycle):
    """A scan on a background thread: ``start()``, ``cancel()``, ``wait()``, ``result``
    (engine.lifecycle), in this process.

    >>> s = Scan("127.0.0.1", ports="22,80,443").start()   # doctest: +SKIP
    >>> s.wait().ports                                      # doctest: +SKIP
    """

    def __init__(
        self,
        targets: str | Sequence[str] | None = None,
        ports: str | int | Sequence[int] | None = None,
        *,
        config: ScanConfig | None = None,
        **options: Any,
    ) -> None:
        Lifecycle.__init__(self)
        config = make_config(targets, ports, config, options)
        self.config = config.replace(method=_resolve_method(config.method))
        self.targets, self.ports, self.space = build_space(self.config)
        self._scripts: list[Any] = []
        self._named_scripts: frozenset[str] = frozenset()
        if self.config.scripts:  # resolved now: a bad name fails before anything is sent
            from ..nse.select import parse_args, resolve

            chosen = tuple(self.config.scripts)
            if self.config.service and "version" not in chosen:
                chosen += ("version",)  # nmap runs the version category with -sV: -A shows them
            self._scripts = resolve(chosen)
            # Scripts named one by one (not by category) run as nmap runs them: verbose.
            words = {w.strip() for x in chosen if isinstance(x, str) for w in x.split(",")}
            self._named_scripts = frozenset(s.id for s in self._scripts if s.id in words)
            self._script_args = parse_args(self.config.script_args)
        #: (offset, size) of each engine's part of the index space, in run order.
        self.segments = segments(self.space)
        self.counters = Counters()
        self.counters.total = sum(shard_len(size, self.config.shard) for _, size in self.segments)
        #: What an engine needs to resume identically (e.g. the SYN cookie secret): the
        #: checkpoint keeps it, and a resumed Scan finds it filled in. Never in reports.
        self.engine_state: dict[str, Any] = {}
        #: What the engine reports about its run (SYN: replies, invalid, duplicates, drops).
        self.engine_stats: dict[str, Any] = {}
        self._plan = RunPlan()
        self._rate_source: Callable[[], RateState] | None = None  # the running engine's
        self._ckpt: Checkpointer | None = None
        self._live_sink: RecordSink | None = None  # the poller age-flushes it
        self._flush_error: BaseException | None = None  # a live flush failed (disk full)
        self._seen: tuple[int, float | None] = (0, None)  # retries, rate at the last tick
        self._builder: ResultBuilder | None = None
        self._pool: WorkerPool | None = None
        self._poller: PollerT | None = None

    # -- lifecycle (engine.lifecycle calls these) ---------------------------------------
    def _begin(self) -> ScanStarted:
        if self.config.output is not None:  # before a packet: a scan must be able to save
            from .._fileio import check_output_dir

            why = check_output_dir(self.config.output, what="output folder")
            if why:
                raise ConfigError(why, token=self.config.output)
        if self.config.os:  # -O: nmap-os-db and raw sockets, checked before a packet
            from .osstage import preflight

            preflight(family=self.config.family, os_db=self.config.os_db)
        self._t0 = time.monotonic()
        self._pool = self._spawn_workers()  # before pyarrow's import: the start-ups overlap
        try:
            from .checkpoint import open_builder

            self._builder = open_builder(self.config, self._plan, self.counters.total)
            meta = self._builder.meta
        except BaseException:
            if self._pool is not None:
                self._pool.stop()
            raise
        if self._pool is None:
            # The scan's clock starts once its results can be stored. Worker processes
            # already send meanwhile (the first 0.3 s of a kernel's pyarrow import): their
            # probes belong to the scan's time, or its first sample reads as a burst.
            self._t0 = time.monotonic()
        cfg = self.config
        return ScanStarted(
            0.0, meta.scan_id, self.counters.total, cfg.targets, self.ports.to_spec(), cfg.method
        )

    @classmethod
    def resume(cls, root: str | os.PathLike[str], scan_id: str, *, cluster: Any = None,
               **options: Any) -> Scan | DistributedScan:
        """The scan (not started) that continues ``scan_id`` under ``root`` from its
        checkpoint: the one way to resume (``pn.resume`` starts and waits for it).

        Same seed, targets, ports and method; each shard restarts at its low-water mark and
        appends to the same directory. ``options`` may change pacing (rate, timing, ...).
        A scan that ran as Dask shards comes back as a ``DistributedScan`` (same API), its
        shards run on ``cluster`` (or in turn in this process without one).
        """
        from .resume import resumed

        return resumed(root, scan_id, cluster=cluster, **options)

    # -- hooks for what composes a Scan: checkpoints, resume, shards, the -sV stage -----------
    @property
    def plan(self) -> RunPlan:
        """Where this run begins: scan id, start position, resume or shard (``RunPlan``)."""
        return self._plan

    def apply_plan(self, plan: RunPlan) -> None:
        """Before ``start()``: continue a scan or run one shard of it (resume, shardtask).

        The plan's ``engine_state`` (cookie secret, source port) is what the engines reuse,
        so late replies to the earlier run still match."""
        if self._thread is not None:
            raise ScanError("apply_plan() comes before start()")
        self._plan = plan
        self.counters.total = max(0, self.counters.total - plan.start)
        self.engine_state.update(plan.engine_state)

    @property
    def builder(self) -> ResultBuilder | None:
        """The result being built (None before ``start()``): stages add rows to it."""
        return self._builder

    def watch_sink(self, sink: RecordSink) -> None:
        """Have the poller age-flush ``sink``, so live views get rows while replies pause."""
        self._live_sink = sink

    def _snapshot(self) -> ScanResult:
        if self._builder is None:
            raise ScanError("the scan has not started; call start() first")
        return self._builder.snapshot()

    @property
    def scan_id(self) -> str | None:
        return None if self._builder is None else self._builder.meta.scan_id

    def rate_state(self) -> RateState:
        """The send rate in force and why (adaptive, pinned or unlimited), live."""
        source = self._rate_source
        if source is not None:
            return source()
        if self.config.rate is not None:
            return RateState(self.config.rate, "pinned")
        return RateState(None, "")

    def _record(self, ev: Event) -> None:
        if self._builder is not None:
            self._builder.add_event(ev.t, ev.kind, ev.payload())

    def _tick(self) -> None:
        if self._live_sink is not None:  # rows reach live views even while replies pause
            try:
                self._live_sink.flush_if_older()
            except Exception as exc:  # noqa: BLE001 - e.g. a full disk, on the poller thread
                self.flush_failed(exc)
        progress = self.progress
        self.bus.publish(progress, record=False)  # telemetry rows already record it
        self._diagnose(progress)

    def _diagnose(self, now: Progress) -> None:
        """On the poller's tick: RetryScheduled / RateLimited (events.publish_diagnostics,
        shared with discovery). Both land in the events table; a scan without retries or
        losses publishes neither."""
        self._seen = publish_diagnostics(self.bus, now, self.counters.retries, self._seen)

    def flush_failed(self, exc: BaseException) -> None:
        """A flush on a helper thread (poller, checkpointer) could not save its rows.

        The helper must not die with a traceback, and the scan must not go on sending what
        it cannot save: stop it; ``_execute`` then fails it with this error (exit 1, not 130)."""
        if self._flush_error is None:
            self._flush_error = exc
            self._cancel.set()

    def _found(self, batch: Any) -> None:
        """Publish PortFound for the open rows of a ports batch (results arrive in bulk)."""
        import pyarrow.compute as pc

        from ..results._convert import scalar_str

        record = self._builder is None or self._builder.hold != "open"
        if not record and not self.bus.listens(PortFound):
            return  # HOT PATH: no row to record and no one to hear it
        sid = self.scan_id or ""
        t = time.monotonic() - self._t0
        opened = batch.filter(pc.equal(batch["state"].cast("string"), scalar_str("open")))
        # FLAT MEMORY: a scan holding only open rows does not copy each into the events
        # table too (~250 B of JSON and tuple an open port, against ~40 B as a ports row:
        # 65 MiB for a /15's 262K opens); subscribers still get every PortFound.
        # ONE PUBLISH A BATCH: 15 us an event one at a time (a lock, a wake-up and a GIL
        # hand-off each), 5% of a /17 scan's time with a panel watching its 65K opens.
        rows = opened.select(["host", "proto", "port", "state", "reason"]).to_pylist()
        self.bus.publish_many([PortFound(t, sid, **row) for row in rows], record=record)

    # -- the scan thread (engine.lifecycle runs these in order) --------------------------
    def _execute(self) -> None:
        builder = self._builder
        assert builder is not None
        self._poller = Poller(
            self.counters, builder, self._t0, self.config.telemetry_interval, on_sample=self._tick,
            rate=self.rate_state,
        )
        self._poller.start()
        self.bus.publish(StageChanged(0.0, builder.meta.scan_id, "scan"))
        if self.config.method in ("syn", "udp"):
            self._run_syn()
        else:
            self._run_connect()
        if self._flush_error is not None:  # the cancel was ours: the scan failed
            raise self._flush_error
        if self.config.resolve != "never" and not self._cancel.is_set():
            from .names import run_names_stage

            run_names_stage(self)  # reverse DNS of the hosts up (-n: none, -R: all)
        if self.config.traceroute and not self._cancel.is_set():
            from .tracestage import run_trace_stage

            run_trace_stage(self)  # --traceroute: the path to each host up
        if (self.config.service or self.config.verify) and not self._cancel.is_set():
            from .svstage import run_service_stage

            run_service_stage(self)  # -sV/--verify: after the port scan, on open TCP ports
        if self.config.os and not self._cancel.is_set():
            from .osstage import run_os_stage

            run_os_stage(self)  # -O: after the port scan and -sV, on the hosts found
        if self._scripts and not self._cancel.is_set():
            from ..nse.engine import Limits
            from .nsestage import run_script_stage

            # SCRIPTS: the one hook of prtip_nb.nse; they see -sV's columns.
            run_script_stage(self, self._scripts, self._script_args,
                             Limits(timeout=self.config.script_timeout,
                                    named=self._named_scripts))

    def _wind_down(self) -> None:
        if self._poller is not None:
            self._poller.stop()  # its closing telemetry row, at the scan's end time

    def _conclude(self) -> ScanResult:
        builder = self._builder
        assert builder is not None
        release_free_memory()  # the scan's freed buffers, before finish allocates anew
        result = builder.finish(ended=datetime.now(UTC), hosts=self._tallied(),
                                complete=self.status == "completed")
        release_free_memory()  # finish's temporaries, before the caller's report
        return result

    def _closed(self) -> None:
        if self._ckpt is not None:
            self._ckpt.close(self.status)

    def _tallied(self) -> Any:
        """The hosts table from the sink's tally when memory holds only open rows (the
        rows cannot tell it then), else None (derived from the rows at finish)."""
        sink = self._live_sink
        if sink is None or sink.tally is None:
            return None
        sink.flush()
        return sink.hosts_table()

    def _on_batch(self, batch: Any) -> None:
        assert self._builder is not None
        self._builder.add_batch(batch)
        self._found(batch)


def scan(
    targets: str | Sequence[str],
    ports: str | int | Sequence[int] | None = None,
    *,
    cluster: Any = None,
    shards: int | None = None,
    discover: bool = DISCOVER_BY_DEFAULT["python"],
    **options: Any,
) -> ScanResult:
    """Scan ``targets`` on ``ports`` and return the result; blocks until done.

    ``discover=True`` pings the targets first (``pn.discover``) and scans only those up,
    as nmap does without -Pn (loopback, own addresses, no privileges, ``shard=`` or
    ``cluster=``/``shards=``: everything is scanned); with none up, the discovery result
    is returned. The default differs from the command line's, for a reason that
    ``engine.discovery.DISCOVER_BY_DEFAULT`` gives.

    Options are ScanConfig's: ``method``, ``top_ports``, ``exclude``, ``timing``,
    ``max_retries``, ``timeout``, ``concurrency``, ``seed``, ``keep``, ``output`` …
    Ctrl-C (KeyboardInterrupt) cancels the scan and re-raises.

    ``cluster=`` (a ``dask.distributed.Client``) runs ``shards`` shards as Dask tasks,
    writing one dataset under ``output`` (engine.distributed).

    >>> res = scan("127.0.0.1", ports="22,80", method="connect")   # doctest: +SKIP
    """
    from .discovery import discover_then

    todo = discover_then(targets, options, discover=discover,
                         distributed=cluster is not None or shards is not None)
    if todo.nothing_up:
        assert todo.found is not None
        return todo.found
    targets, options = todo.targets, todo.options
    if cluster is not None or shards is not None:
        from .distributed import DistributedScan

        dist = DistributedScan(targets, ports, cluster=cluster, shards=shards, **options)
        return dist.start().wait()
    return Scan(targets, ports, **options).start().wait()
