"""``discover()``: a ping sweep (nmap's ``-sn``) whose result is a ScanResult.

The result's ``hosts`` table has one row per target (up or down) with nmap's reason
words and the RTT; ``ports`` is empty. ``output=`` writes it as a Parquet dataset like any
scan. The probing is engine.pingsweep's (on the round engine); ``Discovery`` here gives a
sweep the lifecycle of any scan: like ``Scan`` (engine.scan) it runs on a background
thread (``start()``, ``cancel()``, ``wait()``, ``result``, ``progress``), publishes events
on an ``EventBus`` (``subscribe`` / ``events``; recorded in the result's events table) and
writes telemetry rows from the same ``Poller``. Its events: ScanStarted (method
"discovery"), StageChanged ("discovery"), HostDiscovered for each host found up (as it is
found), Progress on each tick, RetryScheduled / RateLimited (events.publish_diagnostics, as
a port scan's), ScanWarning, and ScanCompleted / ScanCancelled / ScanFailed last.

PACING. Discovery sends one to four packets a host, spread over many hosts. Beyond
loopback the rate adapts (net.ratectl) from the template's start rate
(``START_RATES["discovery"]``), which is also its floor; ``rate=`` pins it.
Retries default to 1 (one more round for silent hosts); ``max_retries=`` overrides it.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..config import ScanConfig, is_privileged
from ..errors import PrivilegeError, ScanError, TargetSpecError
from ..net.counters import Counters, RttEstimator
from ..net.ratectl import RateState, rate_plan
from ..targets import parse_targets
from .events import (
    Event,
    EventBus,
    HostDiscovered,
    Progress,
    ScanCancelled,
    ScanCompleted,
    ScanFailed,
    ScanStarted,
    ScanWarning,
    StageChanged,
    Subscription,
    publish_diagnostics,
)
from .telemetry import Poller, join_scan_thread

if TYPE_CHECKING:
    from ..results import ResultBuilder, ScanResult
    from .pingsweep import DiscoverEngine

__all__ = ["DEFAULT_RETRIES", "Discovery", "discover", "up_hosts"]

DEFAULT_RETRIES = 1


class Discovery:
    """A ping sweep on a background thread (see the module docstring).

    >>> d = Discovery("198.51.100.0/28")                      # doctest: +SKIP
    >>> d.subscribe(print, HostDiscovered)                    # doctest: +SKIP
    >>> d.start().wait().hosts                                # doctest: +SKIP
    """

    def __init__(self, targets: str | Sequence[str] | None = None, *,
                 config: ScanConfig | None = None, counters: Counters | None = None,
                 **options: Any) -> None:
        if config is None:
            config = ScanConfig(targets=() if targets is None else targets,  # type: ignore[arg-type]
                                ping_only=True, **options)
        elif targets is not None or options:
            from ..errors import ConfigError

            raise ConfigError("give either config= or targets/options, not both")
        self.config = config
        self.targets = parse_targets(list(config.targets), exclude=list(config.exclude) or None,
                                     exclude_file=config.exclude_file,
                                     input_file=config.input_file, family=config.family)
        if not self.targets:
            raise TargetSpecError("no targets to discover",
                                  hint="name hosts, e.g. 198.51.100.0/28")
        if not self.targets.is_loopback and not is_privileged():
            from ..net.pingsock import DISCOVERY_FIX

            raise PrivilegeError(f"host discovery (-sn) sends raw ICMP and TCP probes: "
                                 f"{DISCOVERY_FIX}")
        self.counters = counters if counters is not None else Counters()
        self.counters.total = self.targets.size
        #: What the engine reports about its run (replies, invalid, rounds, ...).
        self.engine_stats: dict[str, Any] = {}
        self.status = "created"
        self.bus = EventBus(record=self._record)
        self._engine: DiscoverEngine | None = None
        self._builder: ResultBuilder | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: ScanResult | None = None
        self._error: BaseException | None = None
        self._warnings: list[str] = []
        self._hosts: Any = None  # the hosts table, once the sweep has decided every host
        self._seen: tuple[int, float | None] = (0, None)
        self._t0 = 0.0
        self._t_end: float | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Discovery:
        """Start sweeping on a background thread and return self at once."""
        if self._thread is not None:
            raise ScanError("this Discovery was already started; create a new one")
        from ..results import ResultBuilder, ScanMeta, new_scan_id
        from .checkpoint import public_config

        cfg = self.config
        meta = ScanMeta(scan_id=new_scan_id(), config=public_config(cfg.to_json()),
                        started=datetime.now(UTC))
        self._builder = ResultBuilder(meta, sink=cfg.output)
        self._t0 = time.monotonic()
        self.status = "running"
        self.bus.publish(ScanStarted(0.0, meta.scan_id, self.targets.size, cfg.targets, "",
                                     "discovery"))
        self._thread = threading.Thread(target=self._run, name="prtip-discovery", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the sweep to stop; it does within 50 ms and keeps the hosts decided so far."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> ScanResult:
        """Block until the sweep ends; its result. A failure is raised as it was raised
        (a PrivilegeError, a ScanError, ...); the engine's warnings are Python warnings."""
        if self._thread is None:
            self.start()
        assert self._thread is not None
        join_scan_thread(self._thread, self.cancel, timeout, grace=2.0)
        if self._error is not None:
            raise self._error
        for message in self._warnings:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        self._warnings = []
        assert self._result is not None
        return self._result

    # -- what a caller reads -------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def scan_id(self) -> str | None:
        return None if self._builder is None else self._builder.meta.scan_id

    @property
    def result(self) -> ScanResult:
        """The final result (or, while it runs, what the result builder holds so far)."""
        if self._result is not None:
            return self._result
        if self._builder is None:
            raise ScanError("the sweep has not started; call start() first")
        return self._builder.snapshot()

    @property
    def progress(self) -> Progress:
        """A Progress event for now: hosts done, total, rate and ETA."""
        total, done, sent, _recv, n_open, _retries = self.counters.snapshot()
        end = self._t_end if self._t_end is not None else time.monotonic()
        elapsed = max(1e-9, end - self._t0) if self._t0 else 0.0
        limit = self.rate_state()
        return Progress(elapsed, self.scan_id or "", done, total, sent, n_open, elapsed,
                        done / elapsed if elapsed else 0.0, limit.rate, limit.reason)

    def rate_state(self) -> RateState:
        """The send rate in force and why, live."""
        if self._engine is not None:
            return self._engine.rate_state()
        return RateState(self.config.rate, "pinned" if self.config.rate else "")

    def subscribe(self, callback: Callable[[Event], Any],
                  types: type[Event] | tuple[type[Event], ...] | None = None) -> Subscription:
        """Call ``callback(event)`` for each event (of ``types``), on the bus's own thread."""
        return self.bus.subscribe(callback, types)

    def events(self, types: type[Event] | tuple[type[Event], ...] | None = None, *,
               maxsize: int = 1024) -> Subscription:
        """Iterate events as they happen; ends after the terminal event."""
        return self.bus.subscribe(None, types, maxsize=maxsize)

    # -- the sweep thread ------------------------------------------------------------------
    def _record(self, ev: Event) -> None:
        if self._builder is not None:
            self._builder.add_event(ev.t, ev.kind, ev.payload())

    def _tick(self) -> None:
        progress = self.progress
        self.bus.publish(progress, record=False)  # telemetry rows already record it
        self._seen = publish_diagnostics(self.bus, progress, self.counters.retries, self._seen)

    def _run(self) -> None:
        builder = self._builder
        assert builder is not None
        sid = builder.meta.scan_id
        poller = Poller(self.counters, builder, self._t0, self.config.telemetry_interval,
                        on_sample=self._tick, rate=self.rate_state)
        poller.start()
        self.bus.publish(StageChanged(0.0, sid, "discovery"))
        try:
            self._sweep(builder)
            self.status = "cancelled" if self._cancel.is_set() else "completed"
        except BaseException as exc:  # raised again by wait()
            self._error = exc
            self.status = "failed"
        finally:
            self._t_end = time.monotonic()
            poller.stop()
            terminal = self._terminal()
            self._record(terminal)  # into the events table before it is finished
            try:
                self._result = builder.finish(ended=datetime.now(UTC), hosts=self._hosts)
                self._hosts = None
            except BaseException as exc:
                if self._error is None:
                    self._error = exc
                    self.status = "failed"
                    terminal = self._terminal()
            self.bus.publish(terminal, record=False)  # last: the result is readable
            self.bus.close(timeout=0)

    def _sweep(self, builder: ResultBuilder) -> None:
        from ..probes.records import RecordBuffer
        from ..results import _convert as cv
        from ..results import schema
        from .pingsweep import DiscoverEngine, host_verdicts

        cfg, tset, tmpl = self.config, self.targets, self.config.template
        sid = builder.meta.scan_id
        records: list[bytes] = []

        def found(chunk: bytes) -> None:  # on the receive thread: publish, never wait
            records.append(chunk)
            t = time.monotonic() - self._t0
            for r in host_verdicts(tset, chunk):
                if r.state == "up":
                    self.bus.publish(HostDiscovered(t, sid, r.host, r.family, r.reason,
                                                    r.rtt_ms))

        out = RecordBuffer(found)
        engine = self._engine = DiscoverEngine(
            tset, out=out, cancel=self._cancel, counters=self.counters,
            rtt=RttEstimator(cfg.probe_timeout, tmpl.min_rtt_timeout, tmpl.max_rtt_timeout),
            retries=DEFAULT_RETRIES if cfg.max_retries is None else cfg.max_retries,
            rate=rate_plan(cfg, loopback=tset.is_loopback, kind="discovery"),
        )
        try:
            engine.run()
        finally:
            out.flush()
            self.engine_stats = dict(engine.stats)
        rows = host_verdicts(tset, b"".join(records))
        elapsed = time.monotonic() - self._t0
        up = sum(1 for r in rows if r.state == "up")
        builder.add_event(elapsed, "DiscoveryCompleted",
                          {"scan_id": sid, "hosts": len(rows), "up": up, "elapsed": elapsed,
                           **engine.stats})
        for message in engine.warnings():  # a ScanWarning event, and a warning in wait()
            self.bus.publish(ScanWarning(elapsed, sid, message))
            self._warnings.append(message)
        cols: dict[str, list[Any]] = {
            "host": [r.host for r in rows],
            "hostname": [tset.hostname(r.host) for r in rows],
            "family": [r.family for r in rows],
            "state": [r.state for r in rows],
            "reason": [r.reason for r in rows],
            "rtt_ms": [r.rtt_ms for r in rows],
            **{c: [0] * len(rows) for c in ("open", "closed", "filtered", "other")},
        }
        hosts = cv.table(cols, schema.file_schema("hosts"))
        self._hosts = hosts
        if cfg.resolve != "never" and not self._cancel.is_set():  # reverse DNS of the hosts up
            from .names import lookup, record, wanted

            names, took = lookup(cfg, wanted(cfg, hosts, tset))
            if names:
                record(builder, names, took, time.monotonic() - self._t0)
        if cfg.traceroute and not self._cancel.is_set():  # -sn --traceroute: ICMP echo probes
            from .names import up_addresses
            from .tracestage import run_traces

            hops, stats = run_traces(cfg, schema.empty("ports"), up_addresses(hosts),
                                     rtt_ms={r.host: r.rtt_ms for r in rows if r.rtt_ms})
            builder.add_rows("trace", hops)
            builder.add_event(time.monotonic() - self._t0, "TracerouteCompleted",
                              {"scan_id": sid, **stats})
        self._hosts = hosts

    def _terminal(self) -> Event:
        status = self.status
        sid, t = self.scan_id or "", (self._t_end or time.monotonic()) - self._t0
        c = self.counters
        if status == "completed":
            return ScanCompleted(t, sid, c.done, c.open, t)
        if status == "cancelled":
            return ScanCancelled(t, sid, c.done, c.open, t)
        return ScanFailed(t, sid, repr(self._error))


def discover(
    targets: str | Sequence[str],
    *,
    exclude: str | Sequence[str] = (),
    family: int | None = None,
    timing: int = 3,
    max_retries: int | None = None,
    timeout: float | None = None,
    rate: float | None = None,
    output: str | None = None,
    **options: Any,
) -> ScanResult:
    """Which of ``targets`` are up (nmap's ``-sn``); returns a ScanResult whose ``hosts``
    DataFrame has host, family, state (up/down), reason and rtt_ms for every target.

    On-link targets are found through the kernel's ARP / NDP ("arp-response",
    "nd-response"); others with ICMP echo, TCP SYN to 443, TCP ACK to 80 and ICMP
    timestamp. Needs root or CAP_NET_RAW (PrivilegeError says how) unless every target
    is one of this machine's own addresses. ``pn.Discovery`` is the same sweep on a
    background thread, with events (HostDiscovered, Progress, ...) to subscribe to.

    >>> res = discover("198.51.100.0/28")          # doctest: +SKIP
    >>> res.hosts.query("state == 'up'")           # doctest: +SKIP
    """
    return Discovery(
        targets, exclude=exclude, family=family, timing=timing, max_retries=max_retries,
        timeout=timeout, rate=rate, output=output, **options,
    ).start().wait()


def run_discovery(cfg: ScanConfig, counters: Counters | None = None) -> ScanResult:
    """Discover ``cfg``'s targets with its pacing; the result (written under cfg.output)."""
    return Discovery(config=cfg, counters=counters).start().wait()


def up_hosts(result: ScanResult) -> list[str]:
    """The addresses a discovery result found up, in its (IP) order."""
    hosts = result.tables["hosts"]
    return [h for h, s in zip(hosts["host"].to_pylist(),
                              hosts["state"].cast("string").to_pylist(), strict=True)
            if s == "up"]


# -- the command line: ``prtip-nb scan -sn`` and discovery before a port scan ----------------
def format_sweep(res: ScanResult, elapsed: float) -> str:
    """nmap's ``-sn`` text: a report line for each host that is up, then the totals."""
    from .._version import __version__

    hosts = res.tables["hosts"]
    cols = hosts.select(["host", "hostname", "state", "reason", "rtt_ms"]).to_pydict()
    lines = [f"prtip-nb {__version__} ping sweep {res.scan_id}"]
    up = 0
    for host, name, state, reason, rtt in zip(*cols.values(), strict=True):
        if state != "up":
            continue
        up += 1
        lines.append(f"Scan report for {f'{name} ({host})' if name else host}")
        latency = f" ({rtt / 1000:.6f}s latency)" if rtt is not None else ""
        lines.append(f"Host is up, received {reason}{latency}.")
    n = hosts.num_rows
    lines.append(f"Done: {n} IP address{'' if n == 1 else 'es'} ({up} host{'' if up == 1 else 's'}"
                 f" up) scanned in {elapsed:.2f} s.")
    return "\n".join(lines) + "\n"


def _sweep_config(targets: Sequence[str], options: dict[str, Any]) -> ScanConfig:
    keep = ("exclude", "exclude_file", "input_file", "family", "timing", "rate", "max_retries",
            "resolve", "dns_servers", "traceroute")
    return ScanConfig(targets=tuple(targets), ping_only=True,
                      **{k: options[k] for k in keep if options.get(k) is not None})


def cmd_ping_sweep(targets: Sequence[str], options: dict[str, Any]) -> tuple[ScanResult, str]:
    """``prtip-nb scan -sn``: (result, nmap-like text). ``options`` are the scan options
    the command line gathered; pacing, exclusions and ``output`` apply."""
    cfg = _sweep_config(targets, options)
    if options.get("output"):
        cfg = cfg.replace(output=options["output"])
    t0 = time.monotonic()
    res = discover(list(cfg.targets), exclude=cfg.exclude, family=cfg.family, timing=cfg.timing,
                   max_retries=cfg.max_retries, rate=cfg.rate, output=cfg.output,
                   exclude_file=cfg.exclude_file, input_file=cfg.input_file,
                   resolve=cfg.resolve, dns_servers=cfg.dns_servers, traceroute=cfg.traceroute)
    return res, format_sweep(res, time.monotonic() - t0)


def discover_first(targets: Sequence[str], options: dict[str, Any]) -> ScanResult | None:
    """nmap's default before a port scan: the discovery result of ``targets`` (not written
    anywhere), or None when discovery does not apply (only loopback or own addresses, or no
    raw sockets: every target is scanned, as with -Pn). A bad target spec also returns
    None: the scan reports it."""
    from ..errors import SpecError

    try:
        # No names here: the port scan that follows resolves the hosts up (one lookup each).
        cfg = _sweep_config(targets, options).replace(resolve="never", traceroute=False)
        tset = parse_targets(list(cfg.targets), exclude=list(cfg.exclude) or None,
                             exclude_file=cfg.exclude_file, input_file=cfg.input_file,
                             family=cfg.family)
    except SpecError:
        return None
    if not tset or tset.is_loopback or not is_privileged():
        return None
    return run_discovery(cfg)
