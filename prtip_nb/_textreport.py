"""The nmap-like text report of a scan (``prtip-nb scan``, ``read``, ``resume``): one block
per host, its open (or all rare-state) ports, OS and traceroute lines, then totals.

Works on the Arrow tables and never imports pandas, so the CLI stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import __version__
from ._termsafe import printable
from .osdetect import text as os_text

if TYPE_CHECKING:
    from .results import ScanResult

__all__ = ["REPORT_HOSTS", "format_report", "memory_line", "report_chunks"]

FOLD_OVER = 25  # nmap lists a state's ports one by one up to about this many


def format_report(res: ScanResult, *, only_open: bool = False, elapsed: float | None = None) -> str:
    """nmap-like text: one block per host, open (or all rare-state) ports, then totals."""
    return "".join(report_chunks(res, only_open=only_open, elapsed=elapsed))


REPORT_HOSTS = 4096  # hosts per chunk of report_chunks


def report_chunks(res: ScanResult, *, only_open: bool = False,
                  elapsed: float | None = None) -> Iterator[str]:
    """format_report's text in pieces of REPORT_HOSTS hosts, to write as they come: a /15's
    131K host dicts and their ~800K lines at once cost ~200 MiB at the end of the scan.

    Works on the Arrow tables: comparisons use Arrow scalars built without ``pa.scalar``
    (which would import pandas — see results/_convert.py), so the CLI stays light. The rows
    are ordered by (host, port) once and each host's block is a slice: filtering the table
    once per host cost ~1.5 ms a host (0.4 s for a /24).
    """
    import pyarrow.compute as pc

    from .results._convert import scalar_str

    ports = res.tables["ports"]
    states = ports["state"].cast("string")
    lines = [f"prtip-nb {__version__} scan {res.scan_id}"]
    hosts_t = res.tables["hosts"]
    n_hosts = hosts_t.num_rows
    with_services = ports.num_rows and ports["service"].null_count < ports.num_rows
    if n_hosts > 1 and not with_services:
        blocks = _host_blocks(ports, hosts_t, only_open)
    else:
        blocks = None
    os_lines = _os_lines(res)
    traces = _trace_lines(res)  # --traceroute: host -> its TRACEROUTE lines
    scripted = None
    if res.tables["scripts"].num_rows:
        from .nse.text import by_host, interleave

        scripted = by_host(res.tables["scripts"].to_pylist())
    pending: tuple[int, str] | None = None  # (first line, host) of the last host's block

    def end_block() -> None:
        """nmap's order: port scripts under their rows, OS lines, host scripts, TRACEROUTE."""
        if pending is None:
            return
        start, host = pending
        if scripted is not None:
            lines[start:] = interleave(lines[start:], scripted.get(host))
        lines.extend(traces.get(host, ()))

    for i, h in _host_rows(hosts_t):
        end_block()
        pending = None
        if i and i % REPORT_HOSTS == 0:
            yield printable("\n".join(lines) + "\n")
            lines = []
        name = f"{h['hostname']} ({h['host']})" if h.get("hostname") else h["host"]
        pending = (len(lines), h["host"])
        lines.append(f"\nScan report for {name}")
        lines.append(f"Host is {h['state']} ({h['reason']}).")
        if h.get("pseudo_services"):  # engine.svstage: a SYN-ACK on every port, no services
            lines.append(f"Pseudo-services: {h['pseudo_reason']}; its ports are not services.")
        if blocks is not None:
            folded, shown_rows = blocks(i)
            if folded:
                lines.append(folded)
            if shown_rows:
                lines.append(f"{'PORT':<12}{'STATE':<15}REASON")
                lines.extend(shown_rows)
            else:
                lines.append("No open ports." if only_open else "No ports to show.")
            lines.extend(os_lines(h))
            continue
        mine = pc.equal(ports["host"], scalar_str(h["host"])) if n_hosts > 1 else None
        rows = ports if mine is None else ports.filter(mine)
        st = states if mine is None else states.filter(mine)
        counts = sorted(pc.value_counts(st).to_pylist(), key=lambda c: -c["counts"])
        if only_open:
            keep = pc.equal(st, scalar_str("open"))
        elif counts and counts[0]["values"] != "open" and counts[0]["counts"] > FOLD_OVER:
            # Like nmap: fold the most common state, unless it is "open" or rare.
            common = counts[0]["values"]
            lines.append(f"Not shown: {counts[0]['counts']} {common} ports")
            keep = pc.not_equal(st, scalar_str(common))
        else:
            keep = None
        shown = rows if keep is None else rows.filter(keep)
        if shown.num_rows and shown["service"].null_count < shown.num_rows:
            lines.extend(_service_lines(shown))  # -sV ran: nmap's SERVICE and VERSION columns
        elif shown.num_rows:
            lines.append(f"{'PORT':<12}{'STATE':<15}REASON")
            order = pc.sort_indices(shown["port"])
            cols = shown.take(order).select(["proto", "port", "state", "reason"]).to_pydict()
            for proto, port, state, reason in zip(
                cols["proto"], cols["port"], cols["state"], cols["reason"], strict=True
            ):
                lines.append(f"{f'{port}/{proto}':<12}{state:<15}{reason}")
        else:
            lines.append("No open ports." if only_open else "No ports to show.")
        lines.extend(os_lines(h))
    end_block()
    if not n_hosts:
        lines.append("\nNo host answered.")
    n_open = int(pc.sum(pc.equal(states, scalar_str("open"))).as_py() or 0)
    took = f" in {elapsed:.2f} s" if elapsed is not None else ""
    lines.append(f"\nDone: {n_hosts} host(s), {ports.num_rows} port rows, {n_open} open{took}.")
    lines.append(memory_line(res))
    # Fields of imported files and hostnames are not escaped at their source, as banners
    # are: a terminal escape sequence among them must reach the screen as text.
    yield printable("\n".join(lines) + "\n")


def _os_lines(res: ScanResult) -> Callable[[dict[str, Any]], list[str]]:
    """host row -> nmap's OS lines for it (-O ran), or no lines."""
    rows = res.tables["os"].to_pylist() if res.tables["os"].num_rows else []
    if not rows and "os_fingerprint" not in res.tables["hosts"].column_names:
        return lambda h: []
    by_host: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_host.setdefault(r["host"], []).append(r)
    guess = res.meta is not None and bool(res.meta.config.get("osscan_guess"))
    return lambda h: os_text.host_lines(h, by_host.get(h["host"], []), guess=guess)


def _trace_lines(res: ScanResult) -> dict[str, list[str]]:
    if not res.tables["trace"].num_rows:
        return {}
    from .engine.tracestage import trace_lines

    return trace_lines(res.tables["trace"])


def _indices(idx: Any) -> Any:
    """numpy indices as an Arrow array for ``take`` (a numpy argument would import pandas)."""
    import pyarrow as pa

    return pa.Array.from_buffers(pa.int64(), len(idx), [None, pa.py_buffer(idx.astype("i8"))])


def _host_rows(hosts: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, row dict) of every hosts row, REPORT_HOSTS rows converted at a time."""
    for start in range(0, hosts.num_rows, REPORT_HOSTS):
        for j, row in enumerate(hosts.slice(start, REPORT_HOSTS).to_pylist()):
            yield start + j, row


def _host_blocks(ports: Any, hosts: Any, only_open: bool) -> Any:
    """``block(i)`` -> (the "Not shown" line or "", the port lines) of host ``i``: every
    host's rows in one sort, states counted in one bincount."""
    import numpy as np
    import pyarrow.compute as pc

    from .results._convert import values

    # No to_numpy() here: it imports pandas (+34 MiB, 0.3 s) in pyarrow 26 (_convert.values).
    n_hosts = hosts.num_rows
    r = values(pc.index_in(ports["host"], value_set=hosts["host"].combine_chunks()),
               fill=n_hosts).astype(np.int64)
    st = ports["state"].combine_chunks()
    names = st.dictionary.to_pylist()
    code = values(st.indices).astype(np.int64)
    k = len(names)
    counts = np.bincount(r * k + code, minlength=(n_hosts + 1) * k).reshape(n_hosts + 1, k)
    # What each host shows: open only, or everything but its most common state when that
    # is common (nmap's "Not shown: N closed ports").
    top = counts.argmax(axis=1)
    fold = (counts[np.arange(n_hosts + 1), top] > FOLD_OVER) & (
        np.array([names[t] for t in top]) != "open")
    if only_open:
        opened = names.index("open") if "open" in names else -1
        show = code == opened
    else:
        show = ~(fold[r] & (code == top[r]))
    idx = np.flatnonzero(show)
    port = values(ports["port"]).astype(np.int64)[idx]
    idx = idx[np.lexsort((port, r[idx]))]
    bounds = np.searchsorted(r[idx], np.arange(n_hosts + 2))
    table = ports.select(["proto", "port", "state", "reason"])
    # CHUNKED: the lines of REPORT_HOSTS hosts at a time (block() is called in host order);
    # a /15's 262K lines and their Python row values at once cost ~60 MiB at the end.
    cache: dict[str, Any] = {"chunk": -1, "text": [], "at": 0}

    def lines_of(i: int) -> list[str]:
        chunk = i // REPORT_HOSTS
        if cache["chunk"] != chunk:
            lo = int(bounds[chunk * REPORT_HOSTS])
            hi = int(bounds[min((chunk + 1) * REPORT_HOSTS, n_hosts + 1)])
            shown = table.take(_indices(idx[lo:hi])).to_pydict()
            cache.update(chunk=chunk, at=lo, text=[
                f"{f'{p}/{pr}':<12}{s:<15}{why}" for pr, p, s, why in zip(
                    shown["proto"], shown["port"], shown["state"], shown["reason"], strict=True)])
        at = cache["at"]
        return list(cache["text"][bounds[i] - at:bounds[i + 1] - at])

    def block(i: int) -> tuple[str, list[str]]:
        folded = ""
        if fold[i] and not only_open:
            folded = f"Not shown: {int(counts[i, top[i]])} {names[top[i]]} ports"
        return folded, lines_of(i)

    return block


def _service_lines(shown: Any) -> list[str]:
    """PORT STATE REASON SERVICE VERSION rows; VERSION is "product version (extrainfo)"."""
    import pyarrow.compute as pc

    names = ["proto", "port", "state", "reason", "service", "tunnel", "product", "version",
             "extrainfo"]  # fmt: skip
    rows = shown.take(pc.sort_indices(shown["port"])).select(names).to_pylist()
    out = [f"{'PORT':<12}{'STATE':<14}{'REASON':<14}{'SERVICE':<16}VERSION"]
    for r in rows:
        version = " ".join(x for x in (r["product"], r["version"]) if x)
        if r["extrainfo"]:
            version = f"{version} ({r['extrainfo']})".strip()
        where = f"{r['port']}/{r['proto']}"
        service = r["service"] or ""
        if r["tunnel"] and service:  # as nmap prints it: ssl/http
            service = f"{r['tunnel']}/{service}"
        out.append(f"{where:<12}{r['state']:<14}{r['reason'] or '':<14}{service:<16}"
                   f"{version}".rstrip())  # fmt: skip
    return out


def memory_line(res: ScanResult) -> str:
    """Peak RSS of this process and of each worker process (their sum is the scan's cost)."""
    import json

    from .engine.telemetry import peak_rss_bytes

    workers: list[int] = []
    events = res.tables["events"]
    kinds = events["kind"].cast("string").to_pylist()
    for kind, payload in zip(kinds, events["payload"].to_pylist(), strict=True):
        if kind == "EngineStats" and payload:
            workers = json.loads(payload).get("worker_peak_rss_bytes", [])
    line = f"Memory: peak RSS {peak_rss_bytes() / 2**20:.1f} MiB"
    if workers:
        line += f" + {len(workers)} workers {' + '.join(f'{w / 2**20:.1f}' for w in workers)} MiB"
        line += f" = {(peak_rss_bytes() + sum(workers)) / 2**20:.1f} MiB"
    return line


def format_sweep(res: ScanResult, elapsed: float) -> str:
    """nmap's ``-sn`` text: a report line for each host that is up, then the totals."""
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
