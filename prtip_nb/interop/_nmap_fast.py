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

_V = r'[^"<&]*'  # an attribute value with no entity to decode
# nmap's other <service> attributes, which have no column: skipped, but only these, so that
# a product/version/extrainfo out of nmap's order sends the section to expat, not to /dev/null.
_OTHER = "ostype|hostname|devicetype|servicefp|tunnel|method|conf|proto|rpcnum|lowver|highver"

PORT = re.compile(
    r'<port protocol="([a-z]+)" portid="(\d+)">'
    rf'<state state="({_V})" reason="({_V})" reason_ttl="(\d+)"(?: reason_ip="{_V}")?\s*/>'
    rf'(?:<service name="({_V})"(?: product="({_V})")?(?: version="({_V})")?'
    rf'(?: extrainfo="({_V})")?(?: (?:{_OTHER})="{_V}")*\s*'
    r"(?:/>|>(?:<cpe>[^<&]*</cpe>)*</service>))?"
    r"</port>"
    r"|(<)"  # any other markup: this section is not for the fast path
)
EXTRAPORTS = re.compile(
    rf'\s*<extraports state="({_V})" count="(\d+)"\s*'
    rf'(?:/>|>\s*(?:<extrareasons(?: [a-z_]+="{_V}")*\s*/>\s*)*</extraports>)'
)
#: Row tuple positions, for ``operator.itemgetter``.
FIELDS = ("proto", "port", "state", "reason", "ttl", "service", "product", "version", "extrainfo")
_STRAY = itemgetter(len(FIELDS))


def read_section(text: str) -> tuple[list[tuple[str, ...]], list[tuple[str, int]]] | None:
    """(port rows, extraports (state, count)) of the text inside ``<ports>…</ports>``,
    or None when the section holds anything the regex does not read exactly."""
    extra = []
    pos = 0
    while m := EXTRAPORTS.match(text, pos):
        extra.append((m[1], int(m[2])))
        pos = m.end()
    rows = PORT.findall(text, pos)
    if "<" in set(map(_STRAY, rows)):
        return None
    return rows, extra


def column(rows: list[tuple[str, ...]], name: str) -> list[str | None]:
    """One field of the rows; an absent optional attribute ('') is None."""
    values: list[str | None] = list(map(itemgetter(FIELDS.index(name)), rows))
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
