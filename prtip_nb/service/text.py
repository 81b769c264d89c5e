"""Text at the edges of service detection: C escapes in, printable escapes out, templates.

Everything a service sends is attacker-controlled. ``escape_bytes`` is the one door through
which its bytes become text anywhere in prtip_nb (banners, product/version fields, TLS
names, HTTP titles): printable ASCII stays, the rest becomes ``\\xNN``, and the result is
truncated to a stated length.
"""

from __future__ import annotations

import re

#: Longest product/version/info value kept, after escaping.
FIELD_MAX = 120

_ESCAPES = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\", "a": b"\a",
            "f": b"\f", "v": b"\v"}  # fmt: skip


def unescape(text: str) -> bytes:
    """C-style escapes (``\\r \\n \\t \\0 \\xNN \\\\``) to bytes; other characters as Latin-1."""
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "\\" or i + 1 == n:
            out += ch.encode("latin-1")
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2 : i + 4]):
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        elif nxt in _ESCAPES:
            out += _ESCAPES[nxt]
            i += 2
        else:  # an unknown escape stands for the character itself, as in nmap's files
            out += nxt.encode("latin-1")
            i += 2
    return bytes(out)


_PRINTABLE = bytes(range(0x20, 0x7F))


def escape_bytes(data: bytes, limit: int | None = None) -> str:
    """Printable ASCII as is, everything else (and the backslash) as ``\\xNN``.

    What a service sends is attacker-controlled: escaped, it can no longer carry control
    sequences into a terminal, or markup into a report. ``limit`` truncates the *result*,
    never in the middle of an escape, and marks the cut with ``...``.
    """
    parts: list[str] = []
    size = 0
    for b in data:
        piece = chr(b) if b in _PRINTABLE and b != 0x5C else f"\\x{b:02x}"
        if limit is not None and size + len(piece) > limit:
            parts.append("...")
            break
        parts.append(piece)
        size += len(piece)
    return "".join(parts)


def parse_portlist(text: str) -> frozenset[int]:
    """``"80,8000-8010"`` -> the set of ports; blanks and an empty string give no ports."""
    ports: set[int] = set()
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        lo, _, hi = item.partition("-")
        first, last = int(lo), int(hi or lo)
        if not 0 <= first <= last <= 65535:
            raise ValueError(f"bad port range {item!r}")
        ports.update(range(first, last + 1))
    return frozenset(ports)


_TEMPLATE = re.compile(
    r"\$(?:(\d)|P\((\d)\)|SUBST\((\d),\"([^\"]*)\",\"([^\"]*)\"\)|I\((\d),\"([<>])\"\))"
)


def expand(template: str | None, m: re.Match[bytes]) -> str | None:
    """Fill ``$1``..``$9``, ``$P(n)``, ``$SUBST(n,"a","b")`` and ``$I(n,">")`` from ``m``."""
    if not template:
        return None

    def group(n: str) -> bytes:
        i = int(n)
        if i > (m.re.groups or 0):
            return b""
        return m.group(i) or b""

    def sub(t: re.Match[str]) -> str:
        if t[1]:
            return escape_bytes(group(t[1]))
        if t[2]:
            return bytes(b for b in group(t[2]) if b in _PRINTABLE).decode("ascii")
        if t[3]:
            text = escape_bytes(group(t[3]))
            return text.replace(t[4], t[5]) if t[4] else text
        raw = group(t[6])
        return str(int.from_bytes(raw[:8], "big" if t[7] == ">" else "little")) if raw else ""

    text = " ".join(_TEMPLATE.sub(sub, template).split())  # collapse runs of blanks
    if not text:
        return None
    return text if len(text) <= FIELD_MAX else text[: FIELD_MAX - 3] + "..."
