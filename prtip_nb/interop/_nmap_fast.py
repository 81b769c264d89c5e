"""The fast path of the nmap XML reader: a ``<ports>`` section read by one regex.

Why: expat with a Python callback per element costs ~1 µs per tag, and a port row has three
tags; a 1M-row file then takes 4-5 s in callbacks alone. nmap writes the common port
element in one fixed shape, which ``re.findall`` reads in C, about 3x faster.

Exactness: the regex is a sub-grammar of XML (attribute values without ``&`` or ``<``, so
no entities to decode; attributes in nmap's order). Any ``<`` in the section that does not
start a port element of that shape is matched by the last alternative, and then the caller
hands the whole section to expat instead. So a section is either read entirely by this
grammar or entirely by the XML parser, and both give the same rows.
"""

from __future__ import annotations

import re
from operator import itemgetter
from typing import Any

import pyarrow.compute as pc

from prtip_nb.results import _convert as cv

_V = r'[^"<&]*'  # an attribute value with no entity to decode
_V1 = r'[^"<&]+'  # a non-empty one: product="" goes to expat, which keeps it as ""
# nmap's other <service> attributes, captured together as one text per row (see
# service_columns: few distinct texts, parsed once each). Only these: one without a column
# (proto, rpcnum, lowver, highver: RPC grinding), or an empty one, sends the section to
# expat, as does product/version/extrainfo out of nmap's order.
_OTHER = "hostname|ostype|devicetype|servicefp|tunnel|method|conf"

PORT = re.compile(
    r'<port protocol="([a-z]+)" portid="(\d+)">'
    rf'<state state="({_V})" reason="({_V})" reason_ttl="(\d+)"(?: reason_ip="{_V}")?\s*/>'
    rf'(?:<service name="({_V})"(?: product="({_V1})")?(?: version="({_V1})")?'
    rf'(?: extrainfo="({_V1})")?((?: (?:{_OTHER})="{_V1}")*)\s*'
    r"(?:/>|>((?:<cpe>[^<&]*</cpe>)*)</service>))?"
    r"</port>"
    r"|(<)"  # any other markup: this section is not for the fast path
)
EXTRAPORTS = re.compile(
    rf'\s*<extraports state="({_V})" count="(\d+)"\s*'
    rf'(?:/>|>(\s*(?:<extrareasons(?: [a-z_]+="{_V}")*\s*/>\s*)*)</extraports>)'
)
_REASONS = re.compile(rf'<extrareasons((?: [a-z_]+="{_V}")*)\s*/>')
_ATTR = re.compile(rf' ([a-z_]+)="({_V})"')
#: Row tuple positions, for ``operator.itemgetter``.
FIELDS = ("proto", "port", "state", "reason", "ttl", "service", "product", "version", "extrainfo",
          "other", "cpe")  # fmt: skip
#: The columns that ``service_columns`` makes of the "other" and "cpe" fields.
SERVICE_COLUMNS = {"hostname": "service_hostname", "ostype": "ostype",
                   "devicetype": "devicetype", "servicefp": "servicefp", "tunnel": "tunnel",
                   "method": "method", "conf": "conf"}  # fmt: skip
_STRAY = itemgetter(len(FIELDS))


Extra = tuple[str, int, list[dict[str, str]]]


def read_section(text: str) -> tuple[list[tuple[str, ...]], list[Extra]] | None:
    """(port rows, extraports (state, count, extrareasons attributes)) of the text inside
    ``<ports>…</ports>``, or None when the section holds anything the regex does not read
    exactly."""
    extra = []
    pos = 0
    while m := EXTRAPORTS.match(text, pos):
        reasons = [dict(_ATTR.findall(r[1])) for r in _REASONS.finditer(m[3] or "")]
        extra.append((m[1], int(m[2]), reasons))
        pos = m.end()
    rows = PORT.findall(text, pos)
    if "<" in set(map(_STRAY, rows)):
        return None
    return rows, extra


def service_columns(rows: list[tuple[str, ...]]) -> dict[str, Any]:
    """The "other" attributes and the cpe list of the rows' services, as Arrow arrays.

    Each is one text per row with few distinct values (` method="table" conf="3"`), so
    Arrow dictionary-encodes the texts in C and only the distinct ones are parsed here; the
    columns are then a ``take`` of the parsed values. An all-empty field costs one scan.
    """
    out: dict[str, Any] = {}
    for field in ("other", "cpe"):
        values = list(map(itemgetter(FIELDS.index(field)), rows))
        if not any(values):
            continue
        encoded = pc.dictionary_encode(cv.strings(values))
        words = encoded.dictionary.to_pylist()
        if field == "cpe":
            lists = [w[5:-6].split("</cpe><cpe>") if w else None for w in words]
            out["cpe"] = cv.string_lists(lists).take(encoded.indices)
            continue
        parsed = [dict(_ATTR.findall(w)) for w in words]
        for p in parsed:  # conf is a number 0-10 in nmap's files; other text is none
            if "conf" in p and not (p["conf"].isdigit() and int(p["conf"]) < 256):
                p["conf"] = None
        for attr, column in SERVICE_COLUMNS.items():
            if any(attr in p for p in parsed):
                got = cv.plain_strings([p.get(attr) for p in parsed])
                out[column] = got.take(encoded.indices)
    return out


def column(rows: list[tuple[str, ...]], name: str) -> list[Any]:
    """One field of the rows; an absent optional attribute ('') is None."""
    values: list[Any] = list(map(itemgetter(FIELDS.index(name)), rows))
    if name == "reason" and "" in values:  # reason="": none given (written for nmap 4 files)
        return [v or None for v in values]
    if name in ("proto", "port", "state", "reason"):
        return values
    if name == "ttl":  # reason_ttl="0": nmap saw no TTL (connect scans), so unknown
        seen = set(values)
        if "0" not in seen:
            return values
        return [None] * len(values) if seen == {"0"} else [v if v != "0" else None for v in values]
    if not any(values):
        return [None] * len(values)
    return [v or None for v in values]
