"""How each scan kind runs inside a ``Scan``: connect (in process or worker processes),
SYN, UDP and SYN + UDP. ``ScanRuns`` is ``Scan``'s base: these methods build the kind's
engine and sink, run it on the scan's thread and publish its ``EngineStats`` and warnings;
engine.scan keeps the lifecycle (start, wait, cancel, events, poller, checkpoints).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from ..config import ScanConfig, fd_budget
from ..net.counters import Counters, RttEstimator
from ..net.ratectl import RateState, connect_rate
from ..targets import PortSet, TargetSet, shard_len
from .checkpoint import RunPlan
from .events import EngineStats, EventBus, ScanWarning

if TYPE_CHECKING:
    from ..results import ResultBuilder
    from .checkpoint import Checkpointer
    from .scan import Scan
    from .workers import WorkerPool

__all__ = ["AUTO_WORKERS_MIN_PROBES", "ONE_PROCESS_RATE", "ScanRuns"]

#: Below this many probes one process is as fast as several (a worker starts in 0.1-0.5 s;
#: a /24 x 100 ports, 25,600 probes, took 0.84 s in one process, 1.01 s with two workers).
AUTO_WORKERS_MIN_PROBES = 40_000
ONE_PROCESS_RATE = 20_000  # probes/s: a pinned rate up to this is sent from this process


class ScanRuns:
    """The per-kind runners of ``Scan`` (engine.scan), which sets every attribute below."""

    config: ScanConfig
    targets: TargetSet
    ports: PortSet
    counters: Counters
    segments: tuple[tuple[int, int], ...]
    engine_state: dict[str, Any]
    engine_stats: dict[str, Any]
    bus: EventBus
    _builder: ResultBuilder | None
    _ckpt: Checkpointer | None
    _pool: WorkerPool | None
    _rate_source: Callable[[], RateState] | None
    _cancel: threading.Event
    _plan: RunPlan
    _t0: float

    def _on_batch(self, batch: Any) -> None:
        raise NotImplementedError

    def flush_failed(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _run_connect(self) -> None:
        from ..net.connect import ConnectEngine
        from ..probes.records import RecordBuffer
        from ..probes.verdicts import connect_verdict
        from .probestream import probe_stream
        from .sink import RecordSink

        cfg = self.config
        tmpl = cfg.template
        builder = self._builder
        assert builder is not None
        sink = RecordSink(
            targets=self.targets, ports=self.ports, scan_id=builder.meta.scan_id,
            decode=connect_verdict, on_batch=self._on_batch, counters=self.counters,
            keep=cfg.keep, tally=self._new_tally(),
        )
        from .checkpoint import start_checkpoint

        self._ckpt = start_checkpoint(cast("Scan", self), sink)  # None without output=
        concurrency, rtt = self._connect_limits()
        workers = self._pool.workers if self._pool is not None else 1
        pace = connect_rate(cfg)
        self._rate_source = lambda: pace
        try:
            if self._pool is not None:
                self._pool.run(sink)
            else:
                out = RecordBuffer(sink.feed)
                engine = ConnectEngine(
                    emit=out.emit,
                    concurrency=concurrency,
                    rtt=rtt,
                    retries=cfg.retries,
                    counters=self.counters,
                    cancel=self._cancel,
                    scan_delay=tmpl.scan_delay,
                    tick=out.tick,
                    rate=pace.rate,
                    host_timeout=cfg.host_timeout,
                    emit_many=out.emit_many,
                )
                try:
                    engine.run(probe_stream(
                        self.targets, self.ports, cfg.seed or 0, cfg.shard, self._plan.start
                    ))
                finally:
                    out.flush()
        finally:
            sink.flush()
            self.bus.publish(EngineStats(
                time.monotonic() - self._t0, builder.meta.scan_id, "connect", workers,
                tuple(sink.peak_rss),
            ))

    def _run_syn(self) -> None:
        """A SYN scan (engine.syn) of the TCP ports, then a UDP scan (engine.udp) of the UDP
        ports, in this process, into one sink (nmap -sS -sU runs them one after the other
        too). Each engine has transmit threads + a receive thread."""
        from ..probes.verdicts import syn_verdict, udp_verdict
        from .checkpoint import start_checkpoint
        from .sink import RecordSink

        cfg = self.config
        builder = self._builder
        assert builder is not None
        sink = RecordSink(
            targets=self.targets, ports=self.ports, scan_id=builder.meta.scan_id,
            decode=syn_verdict, on_batch=self._on_batch, counters=self.counters, keep=cfg.keep,
            decode_udp=udp_verdict, tally=self._new_tally(),
        )
        self._ckpt = start_checkpoint(cast("Scan", self), sink)  # None without output=
        if not self.ports.count("tcp"):
            self._run_udp(sink, self._plan.start)
            return
        if self.ports.count("udp"):
            # -sS -sU: the shard's positions are the TCP part's, then the UDP part's
            # (segments()), so a resume past the TCP part goes straight to the UDP part.
            n_tcp = shard_len(self.segments[0][1], self.config.shard)
            start = self._plan.start
            tcp_stats: dict[str, Any] = {}
            if start < n_tcp:
                self._run_tcp_syn(sink, PortSet(tcp=self.ports.tcp), start)
                tcp_stats = self.engine_stats
            if not self._cancel.is_set():
                self._run_udp(sink, max(0, start - n_tcp))
                self.engine_stats = {**tcp_stats, "udp": self.engine_stats}
            return
        self._run_tcp_syn(sink, self.ports, self._plan.start)

    def _run_udp(self, sink: Any, start: int) -> None:
        """The UDP part (engine.udp): its verdicts go after the TCP ports' in the index space."""
        from ..net.ratectl import rate_plan
        from ..probes.records import RecordBuffer
        from .udp import UdpEngine

        cfg, tmpl = self.config, self.config.template
        builder = self._builder
        assert builder is not None
        state = self.engine_state
        secret = bytes.fromhex(state["udp_secret"]) if "udp_secret" in state else None
        out = RecordBuffer(sink.feed)
        sink.start_flusher(self.flush_failed)  # batches written off the receive thread
        engine = UdpEngine(
            targets=self.targets, ports=self.ports, out=out, seed=cfg.seed or 0,
            shard=cfg.shard, start=start,
            rate=rate_plan(cfg, loopback=self.targets.is_loopback, kind="udp"),
            retries=cfg.retries, counters=self.counters, cancel=self._cancel,
            rtt=RttEstimator(cfg.probe_timeout, tmpl.min_rtt_timeout, tmpl.max_rtt_timeout),
            source_port=state.get("udp_sport") or cfg.udp_source_port or cfg.source_port,
            secret=secret, index_offset=self.ports.count("tcp") * self.targets.size,
        )
        state["udp_secret"], state["udp_sport"] = engine.secret.hex(), engine.source_port
        self._rate_source = engine.rate_state
        try:
            engine.run()
        finally:
            sink.stop_flusher()
            out.flush()
            sink.flush()
            self.engine_stats = {**engine.stats, "udp_rounds": engine.round_log}
            self._release(engine)
            t, sid = time.monotonic() - self._t0, builder.meta.scan_id
            self.bus.publish(EngineStats(t, sid, "udp", 1, tuple(sink.peak_rss)))
            for message in engine.warnings():
                self.bus.publish(ScanWarning(t, sid, message))

    def _run_tcp_syn(self, sink: Any, ports: Any, start: int) -> None:
        from ..net.ratectl import rate_plan
        from ..probes.records import RecordBuffer
        from .syn import SynEngine

        cfg, tmpl = self.config, self.config.template
        builder = self._builder
        assert builder is not None
        # A resumed scan reuses the secret and source port, so late replies still match.
        state = self.engine_state
        secret = bytes.fromhex(state["syn_secret"]) if "syn_secret" in state else None
        out = RecordBuffer(sink.feed)
        sink.start_flusher(self.flush_failed)  # batches written off the receive thread
        engine = SynEngine(
            targets=self.targets, ports=ports, out=out, seed=cfg.seed or 0,
            shard=cfg.shard, start=start,
            rate=rate_plan(cfg, loopback=self.targets.is_loopback),
            retries=cfg.retries, counters=self.counters, cancel=self._cancel,
            rtt=RttEstimator(cfg.probe_timeout, tmpl.min_rtt_timeout, tmpl.max_rtt_timeout),
            source_port=state.get("syn_sport") or cfg.source_port, secret=secret,
        )
        self._rate_source = engine.rate_state
        state["syn_secret"], state["syn_sport"] = engine.secret.hex(), engine.source_port
        try:
            engine.run()
        finally:
            sink.stop_flusher()
            out.flush()
            sink.flush()
            self.engine_stats = engine.stats  # replies, invalid, duplicates, drops, ...
            self._release(engine)
            t, sid = time.monotonic() - self._t0, builder.meta.scan_id
            self.bus.publish(EngineStats(t, sid, "syn", 1, tuple(sink.peak_rss)))
            for message in engine.warnings():
                self.bus.publish(ScanWarning(t, sid, message))

    def _release(self, engine: Any) -> None:
        """Telemetry keeps the engine's last rate, not the engine: ``engine.rate_state``
        held the limiter, the limiter the receiver, the receiver the answered bitmap and
        the send times (4 B a probe: 52 MiB for a /15) through the end of the scan, where
        the hosts table and the report (per host) make the scan's peak RSS."""
        final = engine.rate_state()
        self._rate_source = lambda: final

    def _new_tally(self) -> Any:
        """A HostTally when memory holds only open rows (builder.hold), else None."""
        if self._builder is None or self._builder.hold != "open":
            return None
        from .hosttally import HostTally

        return HostTally(self.targets.size)

    def _connect_limits(self) -> tuple[int, RttEstimator]:
        """Connects in flight (within the fd budget) and the RTT estimator's settings."""
        cfg, tmpl = self.config, self.config.template
        concurrency = min(cfg.concurrency or tmpl.max_parallelism, fd_budget())
        rtt = RttEstimator(cfg.probe_timeout, tmpl.min_rtt_timeout, tmpl.max_rtt_timeout)
        return concurrency, rtt

    def _spawn_workers(self) -> WorkerPool | None:
        """Worker processes for a large connect scan, started at once (None: in-process)."""
        workers = self._workers()
        if self.config.method != "connect" or workers <= 1:
            return None
        from .workers import WorkerPool

        cfg = self.config
        concurrency, rtt = self._connect_limits()
        job = {
            "seed": cfg.seed or 0,
            "shard": list(cfg.shard),
            "start": self._plan.start,
            "concurrency": max(1, concurrency // workers),
            "rtt": [rtt.initial, rtt.lo, rtt.hi],
            "retries": cfg.retries,
            "scan_delay": cfg.template.scan_delay,
            "rate": None if (r := connect_rate(cfg).rate) is None else r / workers,
            "host_timeout": cfg.host_timeout,
        }
        pool = WorkerPool(
            targets=self.targets, ports=self.ports, job=job, workers=workers, cancel=self._cancel
        )
        return pool if pool.spawn_or_give_up() else None  # None: scan in this process

    def _workers(self) -> int:
        """Processes to scan with: the user's choice, else one per core for big scans.

        A connect scan is bound by kernel time inside connect(), which threads cannot
        spread over cores but processes can; small scans do not repay a process start.
        """
        if self.config.workers is not None:
            return self.config.workers
        if self.config.template.scan_delay > 0 or self.counters.total < AUTO_WORKERS_MIN_PROBES:
            return 1
        # A pinned rate that one process keeps (~80,000 connects/s here on loopback): in this
        # process, the first probe leaves at once; workers would start 0.1-0.5 s later.
        if self.config.rate is not None and self.config.rate <= ONE_PROCESS_RATE:
            return 1
        return max(1, min(os.cpu_count() or 1, 4))
