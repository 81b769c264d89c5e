"""nmap's ``ssl-cert`` script output <-> the ``tls_*`` columns.

The columns follow the rest of prtip_nb (see ``prtip_nb.lab.truth``): subject and issuer as
RFC 4514 text (``CN=prtip-lab.test``), ``tls_san`` as plain values (``["a.test",
"127.0.0.1"]``), ``tls_not_after`` in UTC, ``tls_self_signed`` when subject equals issuer.
nmap's public-key, signature and fingerprint fields have no column and are not kept.
"""

from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from prtip_nb.interop import _xml

# nmap's attribute names and RFC 4514's short ones, in the order RFC 4514 text usually
# lists them (most specific first, the reverse of the certificate's own order).
_SHORT = {
    "commonName": "CN",
    "organizationalUnitName": "OU",
    "organizationName": "O",
    "streetAddress": "STREET",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "countryName": "C",
    "domainComponent": "DC",
    "userId": "UID",
}
_LONG = {v: k for k, v in _SHORT.items()}
_ORDER = {name: i for i, name in enumerate(_SHORT)}
# nmap's ssl-cert prints these first, in this order, then the rest (stdnse.format_name).
_NMAP_FIRST = ("commonName", "organizationName", "stateOrProvinceName", "countryName")
_SAN_EXTENSION = "X509v3 Subject Alternative Name"
_UNESCAPED_COMMA = re.compile(r"(?<!\\)[,+]")


# --- RFC 4514 -----------------------------------------------------------------------------


def _escape(value: str) -> str:
    out = re.sub(r'([\\,+"<>;])', r"\\\1", value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    return out[:-1] + "\\ " if len(out) > 1 and out.endswith(" ") else out


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def to_rfc4514(pairs: list[tuple[str, str]]) -> str:
    """nmap's (attribute, value) pairs -> ``CN=…,O=…`` (unknown attributes keep their name)."""
    ordered = sorted(pairs, key=lambda kv: _ORDER.get(kv[0], len(_ORDER)))
    return ",".join(f"{_SHORT.get(k, k)}={_escape(v)}" for k, v in ordered)


def from_rfc4514(text: str) -> list[tuple[str, str]]:
    """``CN=…,O=…`` -> nmap's (attribute, value) pairs, in nmap's display order."""
    pairs = []
    for part in _UNESCAPED_COMMA.split(text):
        key, sep, value = part.partition("=")
        if sep:
            pairs.append((_LONG.get(key.strip(), key.strip()), _unescape(value)))
    first = {k: i for i, k in enumerate(_NMAP_FIRST)}
    return sorted(pairs, key=lambda kv: (first.get(kv[0], len(first)), kv[0]))


# --- ssl-cert script element -> columns ----------------------------------------------------


def _table(elem: ET.Element | None) -> list[tuple[str, str]]:
    if elem is None:
        return []
    return [(e.get("key") or "", e.text or "") for e in elem.findall("elem")]


def _keyed(script: ET.Element, key: str) -> ET.Element | None:
    return next((t for t in script.findall("table") if t.get("key") == key), None)


def _not_after(script: ET.Element) -> int | None:
    """notAfter in µs since the epoch (nmap writes ISO 8601 in UTC, or a table of fields)."""
    validity = _keyed(script, "validity")
    if validity is None:
        return None
    try:
        for e in validity:
            if e.get("key") != "notAfter":
                continue
            if e.tag == "elem" and e.text:
                when = datetime.fromisoformat(e.text.strip())
            else:  # a table: year, month, day, hour, min, sec
                f = {k: int(v) for k, v in _table(e)}
                when = datetime(f["year"], f["month"], f["day"], f.get("hour", 0),
                                f.get("min", 0), f.get("sec", 0))  # fmt: skip
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
            return int(when.timestamp() * 1_000_000)
    except (ValueError, KeyError):
        return None  # a date nmap could not parse either: leave it out
    return None


def _san(script: ET.Element) -> list[str] | None:
    extensions = _keyed(script, "extensions")
    for ext in extensions.findall("table") if extensions is not None else ():
        fields = dict(_table(ext))
        if fields.get("name") == _SAN_EXTENSION:
            # "DNS:a.test, IP Address:127.0.0.1" -> ["a.test", "127.0.0.1"]
            return [v.partition(":")[2].strip() for v in fields.get("value", "").split(", ")]
    return None


def columns_from_script(script: ET.Element) -> dict[str, Any]:
    """The tls_* values of one ``<script id="ssl-cert">`` element (absent ones left out)."""
    subject = _table(_keyed(script, "subject"))
    issuer = _table(_keyed(script, "issuer"))
    out: dict[str, Any] = {
        "tls_subject": to_rfc4514(subject) if subject else None,
        "tls_issuer": to_rfc4514(issuer) if issuer else None,
        "tls_san": _san(script),
        "tls_not_after": _not_after(script),
    }
    if subject and issuer:
        out["tls_self_signed"] = sorted(subject) == sorted(issuer)
    return {k: v for k, v in out.items() if v is not None}


# --- columns -> ssl-cert script element -----------------------------------------------------


def _san_value(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return f"IP Address:{value}"
    except ValueError:
        return f"DNS:{value}"


def script_xml(row: Mapping[str, Any]) -> str:
    """``<script id="ssl-cert" …>`` for a ports row with TLS columns, as nmap structures it."""
    subject = from_rfc4514(row.get("tls_subject") or "")
    issuer = from_rfc4514(row.get("tls_issuer") or "")
    san = ", ".join(_san_value(v) for v in row.get("tls_san") or [])
    not_after = row.get("tls_not_after")
    when = not_after.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") if not_after else None
    lines, parts = [], []
    if subject:
        lines.append("Subject: " + "/".join(f"{k}={v}" for k, v in subject))
    if san:
        lines.append(f"Subject Alternative Name: {san}")
    if issuer:
        lines.append("Issuer: " + "/".join(f"{k}={v}" for k, v in issuer))
    if when:
        lines.append(f"Not valid after:  {when}")
    for key, pairs in (("subject", subject), ("issuer", issuer)):
        if pairs:
            elems = "".join(f'<elem key="{_xml.attr(k)}">{_xml.text(v)}</elem>' for k, v in pairs)
            parts.append(f'<table key="{key}">{elems}</table>')
    if san:
        parts.append(
            f'<table key="extensions"><table><elem key="name">{_SAN_EXTENSION}</elem>'
            f'<elem key="value">{_xml.text(san)}</elem></table></table>'
        )
    if when:
        parts.append(f'<table key="validity"><elem key="notAfter">{when}</elem></table>')
    output = _xml.attr("\n".join(lines))
    return f'<script id="ssl-cert" output="{output}">{"".join(parts)}</script>'
