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

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..config import ScanConfig, is_privileged
from ..errors import PrivilegeError, ScanError, TargetSpecError
from ..net.counters import Counters, RttEstimator
from ..net.ratectl import RateState, rate_plan
from ..targets import parse_targets
from .events import HostDiscovered, ScanStarted, ScanWarning, StageChanged, publish_diagnostics
from .lifecycle import Lifecycle

if TYPE_CHECKING:
    from ..results import ResultBuilder, ScanResult
    from .events import Event
    from .pingsweep import DiscoverEngine
    from .telemetry import Poller

__all__ = ["DEFAULT_RETRIES", "DISCOVER_BY_DEFAULT", "Discovered", "Discovery", "discover",
           "discover_then", "up_hosts"]

DEFAULT_RETRIES = 1


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
    return _sweep(Discovery(
        targets, exclude=exclude, family=family, timing=timing, max_retries=max_retries,
        timeout=timeout, rate=rate, output=output, **options,
    ))


def run_discovery(cfg: ScanConfig, counters: Counters | None = None) -> ScanResult:
    """Discover ``cfg``'s targets with its pacing; the result (written under cfg.output)."""
    return _sweep(Discovery(config=cfg, counters=counters))


def _sweep(sweep: Discovery) -> ScanResult:
    result = sweep.start().wait()
    for message in sweep.warnings:  # on the caller's thread, where pytest and users look
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return result


class Discovery(Lifecycle):
    """A ping sweep on the one scan lifecycle (engine.lifecycle; see the module docstring):
    ``start``, ``cancel``, ``wait``, ``result``, ``progress``, ``subscribe``/``events``, the
    poller's telemetry, like a port scan's. Its result's hosts table has every target (up
    or down); ``ports`` is empty. Give targets and options as to ``discover()``, or a
    ``ping_only`` ScanConfig as ``config=``.

    >>> d = Discovery("198.51.100.0/28")                      # doctest: +SKIP
    >>> d.subscribe(print, HostDiscovered)                    # doctest: +SKIP
    >>> d.start().wait().hosts                                # doctest: +SKIP
    """

    THREAD_NAME = "prtip-discovery"

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
        super().__init__()
        self.counters = counters if counters is not None else Counters()
        self.counters.total = self.targets.size
        #: What the engine reports about its run (replies, invalid, rounds, ...).
        self.engine_stats: dict[str, Any] = {}
        #: The engine's warnings (also ScanWarning events); ``discover()`` raises them as
        #: Python warnings on the caller's thread.
        self.warnings: list[str] = []
        self._engine: DiscoverEngine | None = None
        self._builder: ResultBuilder | None = None
        self._poller: Poller | None = None
        self._hosts: Any = None  # the hosts table, once the sweep has decided every host
        self._seen: tuple[int, float | None] = (0, None)

    @property
    def scan_id(self) -> str | None:
        return None if self._builder is None else self._builder.meta.scan_id

    def rate_state(self) -> RateState:
        """The send rate in force and why, live."""
        if self._engine is not None:
            return self._engine.rate_state()
        return RateState(self.config.rate, "pinned" if self.config.rate else "")

    # -- lifecycle hooks ------------------------------------------------------------------
    def _begin(self) -> ScanStarted:
        from ..results import ResultBuilder, ScanMeta, new_scan_id
        from .checkpoint import public_config

        cfg = self.config
        meta = ScanMeta(scan_id=new_scan_id(), config=public_config(cfg.to_json()),
                        started=datetime.now(UTC))
        self._builder = ResultBuilder(meta, sink=cfg.output)
        self._t0 = time.monotonic()
        return ScanStarted(0.0, meta.scan_id, self.targets.size, cfg.targets, "", "discovery")

    def _record(self, ev: Event) -> None:
        if self._builder is not None:
            self._builder.add_event(ev.t, ev.kind, ev.payload())

    def _tick(self) -> None:
        progress = self.progress
        self.bus.publish(progress, record=False)  # telemetry rows already record it
        self._seen = publish_diagnostics(self.bus, progress, self.counters.retries, self._seen)

    def _execute(self) -> None:
        from .telemetry import Poller

        builder = self._builder
        assert builder is not None
        self._poller = Poller(self.counters, builder, self._t0, self.config.telemetry_interval,
                              on_sample=self._tick, rate=self.rate_state)
        self._poller.start()
        self.bus.publish(StageChanged(0.0, builder.meta.scan_id, "discovery"))
        self._sweep(builder)

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
        for message in engine.warnings():  # a ScanWarning event, and a warning (_sweep)
            self.bus.publish(ScanWarning(elapsed, sid, message))
            self.warnings.append(message)
        cols: dict[str, list[Any]] = {
            "host": [r.host for r in rows],
            "hostname": [tset.hostname(r.host) for r in rows],
            "family": [r.family for r in rows],
            "state": [r.state for r in rows],
            "reason": [r.reason for r in rows],
            "rtt_ms": [r.rtt_ms for r in rows],
            **{c: [0] * len(rows) for c in ("open", "closed", "filtered", "other")},
        }
        self._hosts = hosts = cv.table(cols, schema.file_schema("hosts"))
        if cfg.resolve != "never" and not self._cancel.is_set():  # names of the hosts up
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

    def _wind_down(self) -> None:
        if self._poller is not None:
            self._poller.stop()

    def _conclude(self) -> ScanResult:
        assert self._builder is not None
        return self._builder.finish(ended=datetime.now(UTC), hosts=self._hosts)

    def _snapshot(self) -> ScanResult:
        if self._builder is None:
            raise ScanError("the sweep has not started; call start() first")
        return self._builder.snapshot()


def up_hosts(result: ScanResult) -> list[str]:
    """The addresses a discovery result found up, in its (IP) order."""
    hosts = result.tables["hosts"]
    return [h for h, s in zip(hosts["host"].to_pylist(),
                              hosts["state"].cast("string").to_pylist(), strict=True)
            if s == "up"]


# -- discovery from the options of a port scan (the CLI's -sn, and discover_then) -----------
#: The scan options a ping sweep takes from a port scan's (the rest concern ports).
SWEEP_OPTIONS = ("exclude", "exclude_file", "input_file", "family", "timing", "rate",
                 "max_retries", "resolve", "dns_servers", "traceroute")


def sweep_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options of ``discover()`` from a port scan's ``options`` (those given)."""
    return {k: options[k] for k in SWEEP_OPTIONS if options.get(k) is not None}


def _sweep_config(targets: Sequence[str], options: dict[str, Any]) -> ScanConfig:
    return ScanConfig(targets=tuple(targets), ping_only=True, **sweep_options(options))


#: Discover-then-scan, decided by ``discover_then`` for both ways in. The command line
#: discovers first unless -Pn (nmap's default, and what its users type); ``pn.scan()``
#: does only with ``discover=True``. WHY THEY DIFFER: ``pn.scan(t, p)`` is
#: ``pn.Scan(t, p).start().wait()``, and a ``Scan`` fixes its index space (and with it
#: checkpoints, shards and resume) from its targets when it is made, before any packet:
#: Python keeps "scan() scans what Scan scans", the CLI keeps nmap's command line.
DISCOVER_BY_DEFAULT = {"cli": True, "python": False}


@dataclass
class Discovered:
    """What discover-then-scan leaves to scan: ``targets`` and ``options`` for the port
    scan, and ``found``, the discovery result (None when discovery did not apply)."""

    targets: str | Sequence[str]
    options: dict[str, Any]
    found: ScanResult | None = None

    @property
    def nothing_up(self) -> bool:
        """Discovery ran and found no host up: there is no port scan to run."""
        return self.found is not None and not self.targets


def discover_then(targets: str | Sequence[str], options: dict[str, Any], *, discover: bool,
                  distributed: bool = False) -> Discovered:
    """The one place that decides discover-then-scan, for ``pn.scan`` and ``prtip-nb scan``.

    With ``discover`` (``DISCOVER_BY_DEFAULT`` says each caller's default), ping the
    targets (``discover_first``) and keep those up: their addresses become the targets
    (exclusions and -iL already applied), and every one is named (nmap's -sn then -sS
    resolves the hosts up: resolve "up" becomes "all"). Discovery does not apply, and every
    target is scanned as with -Pn, when it cannot run (loopback or own addresses only, no
    raw sockets) or to a shard: a ``shard=`` run and a scan split into shards
    (``distributed``) must see the same targets as their sibling shards, which may run on
    other machines, at other times, or on Dask workers whose network is not the caller's.
    """
    sharded = tuple(options.get("shard") or (1, 1)) != (1, 1)
    if not discover or distributed or sharded:
        return Discovered(targets, options)  # as given: the scan's config records them so
    found = discover_first([targets] if isinstance(targets, str) else list(targets), options)
    if found is None:
        return Discovered(targets, options)
    narrowed = {**options, "exclude": (), "exclude_file": None, "input_file": None}
    if narrowed.get("resolve", "up") in ("up", True):
        narrowed["resolve"] = "all"  # every target left is up: nmap names them all
    return Discovered(up_hosts(found), narrowed, found)


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
