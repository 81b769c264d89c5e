"""A self-contained HTML report of a scan: summary, open ports, telemetry.

Every value is HTML-escaped (banners come from hostile services). No JavaScript and no
network fetches: the file opens anywhere.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .results import ScanResult

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px}
th{background:#f0f0f0}h1{font-size:1.4em}.muted{color:#777}
"""


def report(res: ScanResult, path: str | os.PathLike[str]) -> Path:
    """Write ``res`` as one HTML file at ``path`` and return the path."""
    summary = res.summary()
    open_ports = res.open_ports
    cols = [c for c in ("host", "hostname", "proto", "port", "state", "reason", "rtt_ms")
            if c in open_ports.columns]
    tel = res.telemetry
    cfg = res.config
    started = res.started.isoformat() if res.started else "?"
    ended = res.ended.isoformat() if res.ended else "?"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>prtip_nb scan {html.escape(str(res.scan_id))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>prtip_nb scan {html.escape(str(res.scan_id))}</h1>",
        "<p class='muted'>"
        f"targets {html.escape(' '.join(cfg.get('targets', [])))} · "
        f"ports {html.escape(str(cfg.get('ports') or 'top 1000'))} · "
        f"method {html.escape(str(cfg.get('method')))} · {html.escape(started)} → "
        f"{html.escape(ended)}</p>",
        "<h2>Hosts</h2>",
        summary.to_html(index=False, escape=True, na_rep=""),
        f"<h2>Open ports ({len(open_ports)})</h2>",
        open_ports[cols].to_html(index=False, escape=True, na_rep=""),
    ]
    if len(tel):
        last = tel.iloc[-1]
        parts.append(
            "<h2>Telemetry</h2><p>"
            f"{int(last['sent'])} probes sent in {float(last['t']):.2f} s; "
            f"peak RSS {int(tel['rss_bytes'].max()) / 2**20:.1f} MiB; "
            f"peak rate {float(tel['pps'].max()):,.0f} probes/s</p>"
        )
    parts.append("</body></html>\n")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
