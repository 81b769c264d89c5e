"""The report's "What changed" section: given an earlier scan of the same targets, the
changes a person acts on, most important first: an executive summary in sentences, then
new and gone hosts, ports opened and closed, services changed, and the TLS certificates
that have expired or expire soon. Facts come from ``interop.diff`` (one row per change);
``change_facts`` returns them as plain text for tests, ``changes_html`` as HTML."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._display import when

if TYPE_CHECKING:
    import pandas as pd

    from .results import ScanResult

__all__ = ["change_facts", "changes_html", "expiring_certificates"]

_SECTIONS = (  # (change kinds, heading), in the order a reader acts on them
    (("new-host",), "New hosts"),
    (("gone-host",), "Hosts gone"),
    (("opened",), "Ports opened"),
    (("closed",), "Ports closed"),
    (("service-changed", "cpe-changed"), "Services changed"),
    (("script-changed", "os-changed"), "Scripts and OS changed"),
)


def _n(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def expiring_certificates(res: ScanResult, *, warn_days: int = 30,
                          now: datetime | None = None) -> pd.DataFrame:
    """Open ports of ``res`` whose certificate has expired or expires within ``warn_days``,
    soonest first, with ``days_left`` (negative: expired)."""
    import pandas as pd

    ports = res.open_ports
    if "tls_not_after" not in ports.columns:
        return pd.DataFrame(columns=["host", "port", "tls_subject", "tls_not_after", "days_left"])
    certs = ports[ports["tls_not_after"].notna()]
    now = now or datetime.now(UTC)
    days = [(pd.Timestamp(t).to_pydatetime() - now).total_seconds() / 86400
            for t in certs["tls_not_after"].astype(object)]
    out = certs.assign(days_left=days)[["host", "port", "tls_subject", "tls_not_after",
                                        "days_left"]]
    return out[out["days_left"] < warn_days].sort_values("days_left").reset_index(drop=True)


def change_facts(res: ScanResult, previous: ScanResult, *, warn_days: int = 30,
                 now: datetime | None = None) -> tuple[list[str], pd.DataFrame, pd.DataFrame]:
    """(summary sentences, the diff's rows, expiring certificates) of ``res`` against
    ``previous``."""
    from .interop.diff import diff

    rows = diff(previous, res)
    kinds = rows["change"].astype(str) if len(rows) else rows["change"]
    hosts_of = {k: sorted(set(rows.loc[kinds == k, "host"].astype(str))) for k in
                ("new-host", "gone-host")}
    count = {k: int((kinds == k).sum()) for k in
             ("opened", "closed", "service-changed", "cpe-changed", "script-changed",
              "os-changed")}
    label = previous.scan_id or f"{len(previous.scans)} earlier scans"
    lines = [f"Compared with scan {label} of {when(previous.started)}."]
    if not len(rows):
        lines.append("Nothing changed: the same hosts, the same open ports, the same services.")
    for kind, word in (("new-host", "new host"), ("gone-host", "host gone")):
        if hosts_of[kind]:
            lines.append(f"{_n(len(hosts_of[kind]), word, word.replace('host', 'hosts'))}: "
                         f"{', '.join(hosts_of[kind])}.")
    moved = [_n(count[k], f"port {k}", f"ports {k}") for k in ("opened", "closed") if count[k]]
    if moved:
        lines.append(" and ".join(moved) + " on hosts seen both times.")
    svc = count["service-changed"] + count["cpe-changed"]
    if svc:
        lines.append(f"{_n(svc, 'service')} changed (product, version or CPE).")
    other = count["script-changed"] + count["os-changed"]
    if other:
        lines.append(f"{_n(other, 'script or OS result')} changed.")
    certs = expiring_certificates(res, warn_days=warn_days, now=now)
    expired = int((certs["days_left"] < 0).sum())
    if len(certs):
        lines.append(f"{_n(len(certs), 'certificate')} expired or expiring within {warn_days} "
                     f"days ({expired:,} already expired).")
    else:
        lines.append(f"No certificate expires within {warn_days} days.")
    return lines, rows, certs


def changes_html(res: ScanResult, previous: ScanResult, *, warn_days: int = 30) -> str:
    """The section as HTML: the summary as a list, then one table per kind of change."""
    lines, rows, certs = change_facts(res, previous, warn_days=warn_days)
    parts = ["<h2 id='changes'>What changed since the last scan</h2><ul class='changes'>"]
    parts += [f"<li>{html.escape(line)}</li>" for line in lines]
    parts.append("</ul>")
    kinds = rows["change"].astype(str) if len(rows) else rows["change"]
    for group, heading in _SECTIONS:
        part = rows[kinds.isin(group)]
        if len(part):
            shown: Any = part.astype({"port": "object"}).fillna("")
            parts += [f"<h3>{heading} ({len(part):,})</h3>",
                      shown.to_html(index=False, escape=True, na_rep="")]
    if len(certs):
        shown = certs.assign(days_left=certs["days_left"].round(1),
                             tls_not_after=certs["tls_not_after"].astype(str).str[:16])
        parts += [f"<h3>Certificates expired or expiring within {warn_days} days "
                  f"({len(certs):,})</h3>", shown.to_html(index=False, escape=True, na_rep="")]
    return "".join(parts)
