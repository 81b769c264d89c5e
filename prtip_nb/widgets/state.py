"""``PanelState``: everything the scan panel shows, as a plain object with no widget in it.

The form's values and their errors, the running ``Scan``, its progress, the live series
(throughput and memory) and the open ports found so far. A view ``observe``s it and is
called with the names of what changed: ``"form"``, ``"status"``, ``"progress"``,
``"series"``, ``"ports"``. Changes from the scan are batched so that views are called at
most ``RENDER_INTERVAL`` apart (10 times a second), except for the scan's end, which is
always delivered at once. Tests drive this object directly, with no browser.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engine.events import (
    Event,
    PortFound,
    Progress,
    ScanCancelled,
    ScanCompleted,
    ScanFailed,
    Subscription,
)
from ..engine.telemetry import ProcessTree
from ..errors import PortSpecError, PrtipError, ScanError, SpecError, TargetSpecError
from . import validate

if TYPE_CHECKING:
    from ..engine.scan import Scan
    from ..results import ScanResult

Listener = Callable[["PanelState", frozenset[str]], None]
ALL = frozenset({"form", "status", "progress", "series", "ports"})
#: Open ports the panel keeps for its table: the first found (shown sorted). The count
#: covers every one; ``panel.result.open_ports`` has them all. BOUNDED AT SCALE: a /17
#: finds 65K open ports. Sorting them all again at each render (10 a second) cost 60 ms a
#: render, and a PortFound event for each cost the scan's flush path ~10 us an open port
#: (building, queueing, the dispatcher's callback, the garbage collector's passes): once
#: the table is full the panel stops listening for PortFound, so a big scan builds none,
#: and counts from Progress (benchmarks/panel.py, panel-scale).
TABLE_ROWS = 200
_TERMINAL = {ScanCompleted: "completed", ScanCancelled: "cancelled", ScanFailed: "failed"}


class ScanInterrupted(KeyboardInterrupt):
    """The kernel was interrupted during ``wait()``: the scan is cancelled, what it found is
    kept. Still a KeyboardInterrupt (Run All stops there), but IPython shows its one line
    rather than a traceback into ``threading``."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook for custom tracebacks
        return [f"{type(self).__name__}: {self}"]


@dataclass(frozen=True)
class OpenPort:
    host: str
    proto: str
    port: int
    reason: str
    t: float  # seconds into the scan when it was found


@dataclass
class Series:
    """The live charts' points: one per Progress event (the poller's cadence, ~4 Hz)."""

    t: list[float] = field(default_factory=list)
    pps: list[float] = field(default_factory=list)  # probes sent per second since last point
    # Resident memory and CPU share (100 = one core) of the process tree: this kernel and
    # its child processes (a connect scan's workers, a LocalCluster's Dask workers).
    rss_mib: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    limit: list[float | None] = field(default_factory=list)  # send rate in force (None: none)
    reason: list[str] = field(default_factory=list)  # why that rate (net.ratectl's words)


class PanelState:
    """The scan panel's state and actions: ``set``, ``start``, ``stop``, ``wait``, ``result``."""

    RENDER_INTERVAL = 0.1
    ETA_WINDOW = 0.5  # seconds of recent progress the ETA extrapolates from (2 poller ticks)

    def __init__(
        self,
        targets: str = "127.0.0.1",
        ports: str = "",
        *,
        method: str = "connect",
        rate: float | str | None = None,
        timing: int = 3,
        service: bool = False,
        **options: Any,
    ) -> None:
        self.fields = tuple(f for f in validate.FIELDS
                            if f != "service" or validate.has_service_option())
        values = dict(targets=targets, ports=ports, method=method, rate=rate, timing=timing,
                      service=service)
        self.values: dict[str, Any] = {f: values[f] for f in self.fields}
        self.errors: dict[str, str] = {}  # field -> the message its value raises
        self._problems: dict[str, SpecError] = {}
        self.options = options  # more ScanConfig options, e.g. max_retries=1
        self.status = "idle"  # idle, running, stopping, completed, cancelled, failed
        self.message = ""
        self.progress: Progress | None = None
        self.series = Series()
        self.open_ports: list[OpenPort] = []  # the table's: the first TABLE_ROWS, sorted
        self.open_count = 0  # every open port found so far
        self._table_keys: list[tuple[str, str, int]] = []  # open_ports' sort keys
        self.scan: Scan | None = None
        self.runs = 0
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()
        self._pending: set[str] = set()
        self._last_emit = 0.0
        self._last_point = (0.0, 0)  # (elapsed, sent) of the previous Progress
        self._tree: ProcessTree | None = None  # sampled at each Progress (memory, CPU)
        self._last_cpu = (0.0, 0.0)  # (monotonic, cpu seconds) of the previous sample
        self._recent: deque[tuple[float, int, int]] = deque(maxlen=64)  # (elapsed, done, sent)
        self._sub: Subscription | None = None
        self._ended = threading.Event()
        self._ended.set()
        # Set once the views have been called with the scan's end: wait() returns only then,
        # so what it returns and what the panel shows agree.
        self._shown = threading.Event()
        self._shown.set()
        for name in self.fields:
            self._check(name)

    # -- observing ---------------------------------------------------------------------
    def observe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unobserve(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _changed(self, aspects: set[str] | frozenset[str], *, force: bool = False) -> None:
        with self._lock:
            self._pending |= aspects
            now = time.monotonic()
            if not self._pending or (not force and now - self._last_emit < self.RENDER_INTERVAL):
                return
            pending, self._pending = frozenset(self._pending), set()
            self._last_emit = now
        for listener in list(self._listeners):
            listener(self, pending)

    # -- the form ----------------------------------------------------------------------
    def _check(self, name: str) -> str | None:
        exc = validate.problem(name, self.values[name])
        if exc is None:
            self.errors.pop(name, None)
            self._problems.pop(name, None)
            return None
        self.errors[name], self._problems[name] = str(exc), exc
        return str(exc)

    def set(self, name: str, value: Any) -> str | None:
        """Change one field; return its error message (None if valid). Views show it."""
        if name not in self.fields:
            raise KeyError(f"no field {name!r}; fields: {', '.join(self.fields)}")
        self.values[name] = value
        error = self._check(name)
        self._changed({"form"}, force=True)
        return error

    @property
    def valid(self) -> bool:
        return not self.errors

    def scan_options(self) -> dict[str, Any]:
        """The form as ``Scan`` keyword arguments (targets and ports included)."""
        v = self.values
        opts: dict[str, Any] = {**self.options, "method": v["method"], "timing": int(v["timing"]),
                                "rate": validate.parse_rate(v["rate"])}
        if "service" in self.fields:
            opts["service"] = bool(v["service"])
        return {"targets": str(v["targets"]).split(), "ports": str(v["ports"]).strip() or None,
                **opts}

    # -- the scan ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.scan is not None and not self._ended.is_set()

    def start(self) -> Scan:
        """Start a scan of the form's values on a background thread and return it.

        Raises ``SpecError`` (its message also under the field) if the form is not valid
        or a hostname does not resolve, and ``ScanError`` if a scan is still running.
        """
        from ..engine.scan import Scan

        if self.running:
            raise ScanError("a scan is still running: stop it first, or use another panel")
        for name in self.fields:
            self._check(name)
        if self._problems:
            self._changed({"form"}, force=True)
            raise next(iter(self._problems.values()))
        try:
            scan = Scan(**self.scan_options())  # resolves hostnames: once, here
        except SpecError as exc:
            name = _field_of(exc)
            self.errors[name], self._problems[name] = str(exc), exc
            self._changed({"form"}, force=True)
            raise
        with self._lock:
            self.scan, self.runs = scan, self.runs + 1
            self.progress, self.series, self.open_ports = None, Series(), []
            self.open_count, self._table_keys = 0, []
            self._last_point = (0.0, 0)
            self._tree = ProcessTree()
            self._last_cpu = (time.monotonic(), self._tree.sample()[1])
            self._recent.clear()
            self.status, self.message = "running", ""
            self._ended.clear()
            self._shown.clear()
        types = (Progress, PortFound, ScanCompleted, ScanCancelled, ScanFailed)
        self._sub = scan.subscribe(self._on_event, types)
        try:
            scan.start()
        except BaseException as exc:
            self._finish("failed", f"could not start: {exc}")
            raise
        self._changed(ALL, force=True)
        return scan

    def stop(self) -> None:
        """Cancel the running scan; it ends within a second and keeps what it found."""
        with self._lock:  # not after _finish: a cancelled scan must not read "stopping"
            if self.scan is None or not self.running:
                return
            self.scan.cancel()
            self.status = "stopping"
        self._changed({"status"}, force=True)

    def wait(self, timeout: float | None = None) -> ScanResult:
        """Block until the scan ends and the panel has shown it; return the result.

        Interrupting (Ctrl-C, the kernel's interrupt) cancels the scan and waits for its
        threads and sockets to close before re-raising.
        """
        if self.scan is None:
            raise ScanError("no scan yet: call start() (or press Start) first")
        try:
            res = self.scan.wait(timeout)
        except KeyboardInterrupt:
            self.stop()
            self._shown.wait(5.0)
            raise ScanInterrupted(self._interrupted_text()) from None
        self._shown.wait(5.0 if timeout is None else timeout)
        return res

    def _interrupted_text(self) -> str:
        p = self.progress
        try:
            rows = self.result.tables["ports"].num_rows
        except Exception:  # the message must not fail: it is all the user sees
            rows = None
        kept = f"{rows:,} port rows kept in panel.result" if rows is not None else \
            "what it found is in panel.result"
        done = f" ({p.done:,} of {p.total:,} ports done)" if p is not None else ""
        return f"scan cancelled by the interrupt; {kept}{done}"

    @property
    def eta(self) -> float | None:
        """Seconds left: the probes without a verdict, plus the retries they are expected
        to need (at the scan's retry ratio so far), at the send rate.

        The send rate is the pinned rate in force (``--rate``) unless the scan has sent
        clearly less on average (a machine that cannot keep up); otherwise the rate sent
        over the last half second (not the mean since the start, which start-up drags
        down), at most the rate limit. None before a rate is known."""
        p = self.progress
        if p is None:
            return None
        if p.done >= p.total:
            return 0.0
        with self._lock:
            points = list(self._recent)
        recent = None
        if len(points) >= 2:
            t_now, _done, sent_now = points[-1]
            base = points[0]
            for point in reversed(points[:-1]):
                base = point
                if t_now - point[0] >= self.ETA_WINDOW:
                    break
            dt, ds = t_now - base[0], sent_now - base[2]
            if dt > 0 and ds > 0:
                recent = ds / dt
        limit = p.rate_limit
        if limit and p.rate_reason == "pinned":
            # The pinned rate, unless the scan has been clearly slower over a second or
            # more (a machine that cannot keep up): a brief stall does not move the ETA.
            mean = p.sent / p.elapsed if p.elapsed > 0 else 0.0
            rate = mean if p.elapsed >= 1.0 and mean < 0.8 * limit else limit
        elif recent is None:
            return None
        else:
            # A burst (catching up after a stall) outruns the limit only briefly: the rest
            # of the scan goes at most at the rate in force.
            rate = min(recent, limit) if limit else recent
        retries = self.scan.counters.retries if self.scan is not None else 0
        first = max(1, p.sent - retries)  # probes sent once so far
        return (p.total - p.done) * (1.0 + retries / first) / rate

    @property
    def result(self) -> ScanResult:
        """What the scan found so far (a snapshot while it runs); empty before any scan."""
        if self.scan is None or self.scan.scan_id is None:
            from ..results import ScanResult

            return ScanResult({})
        return self.scan.result

    def close(self) -> None:
        """Stop any scan and drop every listener (the panel was closed)."""
        self.stop()
        self._listeners.clear()

    # -- events from the scan (on the EventBus's dispatcher thread) ----------------------
    def _on_event(self, ev: Event) -> None:
        try:
            if isinstance(ev, Progress):
                self._on_progress(ev)
                self._changed({"progress", "series"})
            elif isinstance(ev, PortFound):
                if ev.state == "open":
                    if not self.add_open(OpenPort(ev.host, ev.proto, ev.port, ev.reason,
                                                  ev.t)) and self._sub is not None:
                        # The table is full: the count comes from Progress from now on,
                        # and the scan need not build a PortFound per open port for us.
                        self._sub.narrow((Progress, *_TERMINAL))
                    self._changed({"ports"})
            else:
                kind = _TERMINAL.get(type(ev), "failed")
                text = getattr(ev, "error", "") if kind == "failed" else ""
                self._finish(kind, text)
        except Exception as exc:  # never let the bus detach the panel: show the error
            self.message = f"panel error: {exc!r}"

    def add_open(self, port: OpenPort) -> bool:
        """Count an open port and keep it for the table (in (host, proto, port) order) if
        the table is not full yet; False once it is full."""
        with self._lock:
            self.open_count += 1
            keys = self._table_keys
            if len(keys) >= TABLE_ROWS:
                return False
            key = (port.host, port.proto, port.port)
            i = bisect.bisect(keys, key)
            keys.insert(i, key)
            self.open_ports.insert(i, port)
            return len(keys) < TABLE_ROWS

    def _on_progress(self, ev: Progress) -> None:
        with self._lock:
            self.progress = ev
            # Both count up to the scan's own count: the events received (exact while the
            # table fills, so the table and its count agree) and the scan's counter (ahead
            # of the events by a flush; alone once the panel stops listening).
            self.open_count = max(self.open_count, ev.open)
            if not self._recent or ev.elapsed > self._recent[-1][0]:
                self._recent.append((ev.elapsed, ev.done, ev.sent))
            last_t, last_sent = self._last_point
            dt = ev.elapsed - last_t
            if dt <= 0:
                return
            self.series.t.append(round(ev.elapsed, 3))
            self.series.pps.append((ev.sent - last_sent) / dt)
            rss, cpu = self._usage()
            self.series.rss_mib.append(rss / 2**20)
            self.series.cpu.append(cpu)
            self.series.limit.append(ev.rate_limit)
            self.series.reason.append(ev.rate_reason)
            self._last_point = (ev.elapsed, ev.sent)

    def _usage(self) -> tuple[int, float]:
        """(RSS bytes, CPU %) of the process tree now; CPU since the previous call."""
        if self._tree is None:
            self._tree = ProcessTree()
        rss, cpu_s, _n = self._tree.sample()
        now = time.monotonic()
        last_t, last_cpu = self._last_cpu
        self._last_cpu = (now, cpu_s)
        cpu = (cpu_s - last_cpu) / (now - last_t) * 100 if now > last_t else 0.0
        return rss, round(cpu, 1) + 0.0

    def _finish(self, status: str, message: str) -> None:
        scan = self.scan
        with self._lock:
            if scan is not None:
                final = scan.progress
                if status in ("completed", "cancelled"):
                    done = scan.counters.done + scan.counters.skipped
                    final = dataclasses.replace(final, done=min(final.total, done))
                self._on_progress(final)
                self.progress = final
            self.status, self.message = status, message
            self._ended.set()
        if scan is not None and self._sub is not None:
            scan.bus.unsubscribe(self._sub)
        try:
            self._changed(ALL, force=True)
        finally:
            self._shown.set()


def _field_of(exc: PrtipError) -> str:
    """Which form field a Scan() error belongs under."""
    if isinstance(exc, TargetSpecError):
        return "targets"
    if isinstance(exc, PortSpecError):
        return "ports"
    text = str(exc).lower()
    for name in ("method", "rate", "timing", "service"):
        if name in text:
            return name
    return "ports" if "port" in text else "targets"
