"""The HTML report's per-host view of script results: titles, server headers, host keys
and certificate fingerprints, one row per port (from the ``scripts`` table's elements,
so imported nmap scans show the same)."""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .results import ScanResult

COLUMNS = ("port", "title", "server", "host keys", "certificate")


def _tree(data: str | None) -> list[list[Any]]:
    try:
        return json.loads(data) if data else []
    except ValueError:
        return []


def _keys(tree: list[list[Any]]) -> list[str]:
    out = []
    for _, item in tree:
        if isinstance(item, list):
            d = {k: v for k, v in item if isinstance(v, str)}
            sha = f" {d['sha256']}" if "sha256" in d else ""
            out.append(f"{d.get('type', '?')} {d.get('bits', '?')} MD5 {d.get('fingerprint', '?')}"
                       f"{sha}")
    return out


def _cert(tree: list[list[Any]]) -> str:
    d = dict((k, v) for k, v in tree if k is not None)
    subject = dict(d.get("subject") or []) if isinstance(d.get("subject"), list) else {}
    issuer = dict(d.get("issuer") or []) if isinstance(d.get("issuer"), list) else {}
    validity = dict(d.get("validity") or []) if isinstance(d.get("validity"), list) else {}
    parts = [f"CN={subject.get('commonName', '?')}", f"issuer CN={issuer.get('commonName', '?')}",
             f"until {validity.get('notAfter', '?')}"]
    for name in ("sha256", "sha1", "md5"):
        if isinstance(d.get(name), str):
            parts.append(f"{name.upper()} {d[name]}")
    return "; ".join(parts)


def facts(res: ScanResult) -> dict[str, list[dict[str, str]]]:
    """{host: [{port, title, server, host keys, certificate}, ...]} for ports that have any."""
    rows: dict[tuple[str, int], dict[str, str]] = {}
    cols = ["host", "proto", "port", "id", "output", "data"]
    for r in res.tables["scripts"].select(cols).to_pylist():
        if r["port"] is None or r["id"] not in ("http-title", "http-server-header",
                                                "ssh-hostkey", "ssl-cert"):  # fmt: skip
            continue
        row = rows.setdefault((r["host"], r["port"]), {"port": f"{r['port']}/{r['proto']}"})
        tree = _tree(r["data"])
        if r["id"] == "http-title":
            row["title"] = r["output"] or ""
        elif r["id"] == "http-server-header":
            row["server"] = r["output"] or ""
        elif r["id"] == "ssh-hostkey":
            row["host keys"] = "\n".join(_keys(tree)) or (r["output"] or "").strip()
        else:
            row["certificate"] = _cert(tree) if tree else (r["output"] or "")
    out: dict[str, list[dict[str, str]]] = {}
    for (host, _), row in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        out.setdefault(host, []).append(row)
    return out


def facts_html(res: ScanResult) -> str:
    """The section's HTML (every value escaped), or "" when no script said any of it."""
    by_host = facts(res)
    if not by_host:
        return ""
    parts = ["<h2>Per host: titles, servers, host keys, certificates</h2>"]
    for host, rows in by_host.items():
        head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
        body = "".join(
            "<tr>" + "".join(
                f"<td>{html.escape(row.get(c, '')).replace(chr(10), '<br>')}</td>"
                for c in COLUMNS) + "</tr>"
            for row in rows)  # fmt: skip
        parts.append(f"<h3 class='script-host'>{html.escape(host)}</h3>"
                     f"<table class='script-facts'><tr>{head}</tr>{body}</table>")
    return "".join(parts)
