"""The report's summary: what was scanned, when, for how long, what was found, and what
changed since an earlier scan of the same targets. Plain text lines; the report escapes
them. Kept apart from the HTML so that tests read the facts, not markup."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._display import duration, when

if TYPE_CHECKING:
    from .results import ScanResult

__all__ = ["rate_summary", "summary_lines"]

_MAX_LISTED = 8  # hosts, services or changes named in one line before "… N more"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _listed(items: list[str]) -> str:
    more = len(items) - _MAX_LISTED
    return ", ".join(items[:_MAX_LISTED]) + (f", … {more:,} more" if more > 0 else "")


def rate_summary(tel: Any) -> str:
    """The send rate in force over the scan and why, from telemetry's rate_pps/rate_reason:
    ``limit 3,000 probes/s (pinned by the rate you set)``, or for an adaptive scan
    ``limit 1,000 → 24,000 probes/s (lowest …, highest …); growing … 60%, … 40% of the time``.
    """
    import pandas as pd

    from ._display import reason_text

    if "rate_pps" not in tel.columns or not len(tel):
        return "not recorded"
    limits = tel["rate_pps"].dropna().astype(float)
    reasons = (tel["rate_reason"].dropna().astype(str) if "rate_reason" in tel.columns
               else pd.Series([], dtype=str))
    counts = reasons.value_counts()
    if limits.empty:
        text = "no limit"
    elif limits.min() == limits.max():
        text = f"limit {limits.iloc[-1]:,.0f} probes/s"
    else:
        text = (f"limit {limits.iloc[0]:,.0f} → {limits.iloc[-1]:,.0f} probes/s "
                f"(lowest {limits.min():,.0f}, highest {limits.max():,.0f})")
    if len(counts) == 1:
        why = reason_text(str(counts.index[0]))
        return f"{text} ({why})" if why and why != text else text
    if len(counts) > 1:  # samples are evenly spaced in time: shares of samples are of time
        shares = ", ".join(f"{reason_text(str(r))} {n / len(reasons):.0%}"
                           for r, n in counts.items())
        return f"{text}; {shares} of the time"
    return text


def _scanned(res: ScanResult) -> str:
    ports = res.ports
    cfg = res.config
    hosts = ports["host"].nunique() if len(ports) else 0
    names = sorted(map(str, ports["host"].dropna().unique())) if hosts else []
    per = ports.groupby(["proto", "port"], observed=True).ngroups if len(ports) else 0
    protos = "/".join(sorted(map(str, ports["proto"].dropna().unique()))).upper() \
        if len(ports) else ""
    targets = " ".join(map(str, cfg.get("targets") or [])) or _listed(names)
    text = f"{targets}: {_plural(hosts, 'host')}"
    if per:
        text += f", {per:,} {protos} ports"
        spec = cfg.get("ports") or (f"top {cfg['top_ports']}" if cfg.get("top_ports") else "")
        if spec and len(str(spec)) <= 40:  # a long list says less than its count
            text += f" ({spec})"
    method = cfg.get("method")
    if method:
        text += f"; {method} scan"
    if cfg.get("timing") is not None:
        text += f", timing T{cfg['timing']}"
    if len(res.scans) > 1:
        text += f" ({len(res.scans):,} scans together)"
    return text


def _found(res: ScanResult, services: list[tuple[str, int, bool]]) -> list[tuple[str, str]]:
    ports = res.ports
    states: dict[str, int] = (
        {str(k): int(v) for k, v in ports["state"].astype(str).value_counts().items()}
        if len(ports) else {})
    n_open = states.get("open", 0)
    open_hosts = ports.loc[ports["state"].astype(str) == "open", "host"].nunique() \
        if n_open else 0
    lines = []
    hosts = res.hosts
    if len(hosts) and "state" in hosts.columns:
        up = int((hosts["state"].astype(str) == "up").sum())
        lines.append(("Hosts", f"{up:,} of {_plural(len(hosts), 'host')} up"))
    counts = [f"{n_open:,} open"] + [f"{n:,} {s}" for s, n in states.items() if s != "open"]
    found = ", ".join(counts) + (f" (open on {_plural(open_hosts, 'host')})" if n_open else "")
    lines.append(("Ports", found))
    if services:
        named = [f"{name}{'?' if g else ''} ({n:,})" for name, n, g in services]
        guessed = any(g for _, _, g in services)
        note = "; \"?\": named from the port number, a guess until service detection (-sV)" \
            if guessed else ""
        lines.append(("Services", _listed(named) + note))
    return lines


def _changes(res: ScanResult, previous: ScanResult) -> str:
    from .viz import changes

    df = changes(previous, res)
    kinds: dict[str, int] = (
        {str(k): int(v) for k, v in df["change"].astype(str).value_counts().items()}
        if len(df) else {})
    label = previous.scan_id or f"{len(previous.scans)} scans"
    head = f"against scan {label} of {when(previous.started)}: "
    if not len(df):
        return head + "no port opened or closed"
    parts = [f"{n:,} {kind}" for kind, n in kinds.items()]
    opened = [f"{h}:{int(p)}/{pr}" for h, pr, p, c in
              zip(df["host"], df["proto"], df["port"], df["change"], strict=True)
              if c == "opened" and p == p]  # p == p: not NaN (host-level rows have no port)
    text = head + ", ".join(parts)
    if opened:
        text += f"; opened: {_listed(opened)}"
    return text


def summary_lines(res: ScanResult, *, previous: ScanResult | None = None,
                  services: list[tuple[str, int, bool]] | None = None) -> list[tuple[str, str]]:
    """(label, text) pairs, in reading order: Scanned, When, Hosts, Ports, Services, Send
    rate, Changes. ``services``: (name, open ports, guessed) from the most common."""
    took = (res.ended - res.started).total_seconds() if res.ended and res.started else None
    started = when(res.started) or "not recorded"
    lines = [("Scanned", _scanned(res)),
             ("When", f"{started}, took {duration(took)}" if took is not None
              else f"{started} (not finished, or its end was not recorded)")]
    lines += _found(res, services or [])
    if len(res.telemetry):
        lines.append(("Send rate", rate_summary(res.telemetry)))
    if previous is not None:
        lines.append(("Changes", _changes(res, previous)))
    return lines
