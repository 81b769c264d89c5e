"""Service and version detection on many ports at once: ``ServiceScanner``.

The per-port engine is ``detect.Detector`` (probes, TLS, bounds); this module schedules it:
``concurrency`` services at once on one asyncio loop (a loop of its own, in a helper thread
when the caller already runs one, as a notebook does), cancellation through a
``threading.Event``, results handed to ``on_result`` as they come.

Tarpits: a host where nearly every probed port is open is a suspect. Its first
``TARPIT_SAMPLE`` services run, with one connection deadline each; if ``TARPIT_SILENT`` of
them said nothing at all, the host is flagged and its remaining ports are skipped.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable

from ..config import fd_budget
from .detect import DEADLINE_S, PROBE_PARALLEL, READ_CAP, Detector
from .outcome import ServiceResult
from .servicedb import ServiceDB

MAX_CONCURRENCY = 256  # services at once, by default
TARPIT_MIN_PORTS = 100
TARPIT_SAMPLE = 32
TARPIT_SILENT = 0.9


class _Host:
    """Tarpit bookkeeping for one host."""

    __slots__ = ("suspect", "started", "done", "silent", "verdict", "deferred")

    def __init__(self, suspect: bool) -> None:
        self.suspect = suspect
        self.started = self.done = self.silent = 0
        self.verdict: bool | None = None if suspect else False  # True: a tarpit
        self.deferred: list[tuple[str, int]] = []


class ServiceScanner(Detector):
    """Detect services on many (host, port) pairs at once; see the module docstring."""

    def __init__(
        self,
        *,
        db: ServiceDB | None = None,
        intensity: int = 7,
        deadline: float = DEADLINE_S,
        service_timeout: float | None = None,
        concurrency: int | None = None,
        read_cap: int = READ_CAP,
        cancel: threading.Event | None = None,
        on_result: Callable[[ServiceResult], None] | None = None,
        suspects: Iterable[str] | None = None,
    ) -> None:
        super().__init__(db=db, intensity=intensity, deadline=deadline,
                         service_timeout=service_timeout, read_cap=read_cap)  # fmt: skip
        if concurrency is None:  # each service holds up to 1 + PROBE_PARALLEL sockets
            concurrency = min(MAX_CONCURRENCY, fd_budget() // (PROBE_PARALLEL + 1))
        self.concurrency = max(1, concurrency)
        self.cancel = cancel
        self.on_result = on_result
        self.suspects = None if suspects is None else set(suspects)
        self.tarpits: list[str] = []

    # -- many services --------------------------------------------------------------------
    def scan(self, targets: Iterable[tuple[str, int]]) -> list[ServiceResult]:
        """Blocking. Runs its own event loop, in a helper thread if this one has a loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run(targets))
        box: list[list[ServiceResult] | BaseException] = []

        def main() -> None:
            try:
                box.append(asyncio.run(self.run(targets)))
            except BaseException as exc:  # re-raised in the caller's thread
                box.append(exc)

        t = threading.Thread(target=main, name="prtip-services", daemon=True)
        t.start()
        t.join()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    async def run(self, targets: Iterable[tuple[str, int]]) -> list[ServiceResult]:
        """Detect every target; returns what was found (so far, if cancelled)."""
        queue = deque((str(h), int(p)) for h, p in targets)
        counts = Counter(h for h, _ in queue)
        hosts = {
            h: _Host(h in self.suspects if self.suspects is not None else n >= TARPIT_MIN_PORTS)
            for h, n in counts.items()
        }
        results: list[ServiceResult] = []
        left = [len(queue)]
        wake = asyncio.Event()

        def finish(hs: _Host, r: ServiceResult) -> None:
            results.append(r)
            left[0] -= 1
            if self.on_result is not None:
                self.on_result(r)
            if hs.verdict is None:
                hs.done += 1
                hs.silent += r.silent
                if hs.done >= min(TARPIT_SAMPLE, counts[r.host]):
                    hs.verdict = hs.silent >= TARPIT_SILENT * hs.done
                    if hs.verdict:
                        self.tarpits.append(r.host)
                    queue.extend(hs.deferred)
                    hs.deferred.clear()
            wake.set()

        async def worker() -> None:
            while left[0] > 0:
                if not queue:
                    wake.clear()
                    await wake.wait()
                    continue
                host, port = queue.popleft()
                hs = hosts[host]
                if hs.verdict is None and hs.started >= TARPIT_SAMPLE:
                    hs.deferred.append((host, port))  # wait for the sample's verdict
                    continue
                if hs.verdict:
                    note = f"skipped: {host} answers on nearly every port and says nothing"
                    finish(hs, ServiceResult(host, port, notes=["tarpit", note]))
                    continue
                hs.started += 1
                # A suspect's sample gets one connection deadline each, not a full service
                # budget: a tarpit then costs at most ~deadline x sample / concurrency.
                budget = self.deadline if hs.verdict is None else None
                try:
                    r = await self.detect(host, port, budget=budget)
                except Exception as exc:  # one port's surprise must not end the others
                    r = ServiceResult(host, port, notes=[f"detection failed: {exc!r}"])
                finish(hs, r)

        workers = [asyncio.create_task(worker()) for _ in range(min(self.concurrency, left[0]))]
        watch = asyncio.create_task(self._watch_cancel(workers)) if self.cancel else None
        try:
            await asyncio.gather(*workers)
        except asyncio.CancelledError:
            if self.cancel is None or not self.cancel.is_set():
                raise
        finally:
            if watch is not None:
                watch.cancel()
        return results

    async def _watch_cancel(self, workers: list[asyncio.Task[None]]) -> None:
        assert self.cancel is not None
        while not self.cancel.is_set():
            await asyncio.sleep(0.05)
        for w in workers:
            w.cancel()


def detect_services(
    targets: Iterable[tuple[str, int]], **options: object
) -> list[ServiceResult]:
    """Blocking convenience: ``ServiceScanner(**options).scan(targets)``."""
    return ServiceScanner(**options).scan(targets)  # type: ignore[arg-type]

