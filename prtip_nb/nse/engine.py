"""Run scripts on targets, within their budgets; produce rows of the ``scripts`` table.

One asyncio loop runs every (script, target) pair whose rule says yes. Bounds:

- ``per_port`` runs at once on one port (a small service must not see a dozen script
  connections at once), ``per_host`` on one host, ``overall`` in all. Measured on one
  host with 1,000 lab services (``-sV -sC``, the farm of benchmarks ``sc-services``, 2,000
  script rows): the script stage took 5.9 s with 4 per host (the old default: waiting on
  the host's limit while its services sat idle), 4.4 s with 32 and 3.7 s with 64 per host,
  3 per port; the scan 11.4 s -> 7.5 s, peak RSS unchanged (149 MiB);
- each run has its script's ``timeout`` (capped by ``Limits.timeout``) over the whole run,
  and its ``max_bytes`` over every byte it reads (``context.Budget``);
- a run that raises or runs out leaves an error row: output ``ERROR: Script execution
  failed``, as nmap writes it, and the reason under ``data`` (key ``error``). The scan
  goes on.

The runs share one :class:`~prtip_nb.nse.httpcache.HttpCache`: a page is fetched once
per port, however many scripts read it.

Rows come out in a stable order: host, port, then the selection's script order.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prtip_nb.interop._nmap_inventory import tree_leaves
from prtip_nb.nse.api import Output, Script, Target, as_output
from prtip_nb.nse.context import Budget, Context
from prtip_nb.nse.httpcache import HttpCache

ERROR_TEXT = "ERROR: Script execution failed (use -d to debug)"


@dataclass(frozen=True)
class Limits:
    """The engine's bounds; a script's own timeout/max_bytes apply under these caps."""

    timeout: float | None = None  # --script-timeout: caps every script's own timeout
    max_bytes: int | None = None
    per_host: int = 64
    per_port: int = 3
    overall: int = 128
    io_timeout: float = 5.0  # one read or connect, at most
    named: frozenset[str] = frozenset()  # ids selected by name: verbosity 1, as in nmap


def row(target: Target, script_id: str, phase: str, out: Output) -> dict[str, Any]:
    """One row of the ``scripts`` table (no scan_id)."""
    data = out.data
    return {
        "host": target.host,
        "proto": target.proto if phase == "port" else None,
        "port": target.port if phase == "port" else None,
        "phase": phase,
        "id": script_id,
        "output": out.text,
        "data": json.dumps(data, ensure_ascii=False) if data else None,
        "elements": tree_leaves(data) if data else None,
    }


def _host_key(host: str) -> tuple[int, Any]:
    try:
        ip = ipaddress.ip_address(host)
        return (ip.version, int(ip))
    except ValueError:
        return (9, host)


async def _run_one(s: Script, target: Target, args: Mapping[str, str], limits: Limits,
                   open_ports: Sequence[Target],
                   cache: HttpCache | None = None) -> Output | None:  # fmt: skip
    timeout = s.timeout if limits.timeout is None else min(s.timeout, limits.timeout)
    max_bytes = s.max_bytes if limits.max_bytes is None else min(s.max_bytes, limits.max_bytes)
    ctx = Context(target, s.id, args, Budget(timeout, max_bytes),
                  io_timeout=min(limits.io_timeout, timeout))  # fmt: skip
    ctx.open_ports = tuple(open_ports)
    ctx.verbosity = int(s.id in limits.named)
    ctx.http_cache = cache
    try:
        async with asyncio.timeout(timeout):
            return as_output(await s.run(ctx))
    except TimeoutError:
        return Output(ERROR_TEXT, [["error", f"timed out after {timeout:g} s"]])
    except asyncio.CancelledError:
        raise
    except (ConnectionError, EOFError, asyncio.IncompleteReadError):
        # As nmap's exception handler (nmap.new_try) closes a script whose peer hung up: no
        # output. nmap -sC prints nothing for http-title on a tcpwrapped port, where an
        # "ERROR" row here said the script had failed.
        return None
    except Exception as exc:  # a script's bug must not sink the scan: an error row
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Output(ERROR_TEXT, [["error", why[:500]]])
    finally:
        await ctx.close_all()


async def run_async(scripts: Sequence[Script], targets: Iterable[Target],
                    args: Mapping[str, str] | None = None, limits: Limits = Limits(),
                    on_row: Callable[[dict[str, Any]], None] | None = None,
                    cancel: threading.Event | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Every matching (script, target) run; returns the rows in a stable order."""
    args = dict(args or {})
    targets = list(targets)
    by_host: dict[str, list[Target]] = {}
    for t in targets:
        by_host.setdefault(t.host, []).append(t)
    jobs: list[tuple[tuple[Any, ...], Script, Target, str]] = []
    order = {s.id: i for i, s in enumerate(scripts)}
    for host, ports in by_host.items():
        for t in ports:
            for s in scripts:
                if s.phase == "port" and s.matches(t):
                    jobs.append(((_host_key(host), 0, t.port, order[s.id]), s, t, "port"))
        ht = Target(host)
        for s in scripts:
            if s.phase == "host" and s.matches(ht):
                jobs.append(((_host_key(host), 1, 0, order[s.id]), s, ht, "host"))
    overall = asyncio.Semaphore(limits.overall)
    per_host = {h: asyncio.Semaphore(limits.per_host) for h in by_host}
    per_port: dict[tuple[str, int | None], asyncio.Semaphore] = {}
    results: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    cache = HttpCache()  # one GET per (host, port, path) for every script of this run

    async def one(key: tuple[Any, ...], s: Script, t: Target, phase: str) -> None:
        port = per_port.setdefault((t.host, t.port), asyncio.Semaphore(limits.per_port))
        async with port, overall, per_host[t.host]:
            if cancel is not None and cancel.is_set():
                return
            out = await _run_one(s, t, args, limits, by_host[t.host], cache)
        if out is not None:
            r = row(t, s.id, phase, out)
            results.append((key, r))
            if on_row is not None:
                on_row(r)

    await asyncio.gather(*(one(*j) for j in jobs))
    results.sort(key=lambda kr: kr[0])
    return [r for _, r in results]


def run(scripts: Sequence[Script], targets: Iterable[Target],
        args: Mapping[str, str] | None = None, limits: Limits = Limits(),
        on_row: Callable[[dict[str, Any]], None] | None = None,
        cancel: threading.Event | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """``run_async`` from synchronous code (a thread of its own when this thread already
    runs an event loop, as a notebook's does)."""
    coro_args = (scripts, list(targets), args, limits, on_row, cancel)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_async(*coro_args))
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            box["rows"] = asyncio.run(run_async(*coro_args))
        except BaseException as exc:
            box["error"] = exc

    th = threading.Thread(target=worker, name="prtip-scripts")
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]
    return list(box["rows"])
