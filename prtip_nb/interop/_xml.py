"""Escaping text for XML 1.0 attribute values and character data.

XML 1.0 forbids most control characters even as character references, and a banner can
hold any byte: those become ``\\xNN`` text (as nmap writes them in service fingerprints).
In attributes, tab/newline/CR become character references so that attribute-value
normalisation does not turn them into spaces on the way back in.
"""

from __future__ import annotations

_TEXT = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;"}
for _c in (*range(0x20), 0xFFFE, 0xFFFF):
    if _c not in (0x9, 0xA, 0xD):
        _TEXT[_c] = f"\\x{_c:02x}" if _c < 0x100 else f"\\u{_c:04x}"
_ATTR = {**_TEXT, ord('"'): "&quot;", 0x9: "&#x9;", 0xA: "&#xa;", 0xD: "&#xd;"}
#: RE2 (pyarrow.compute) pattern of the characters that ``attr`` changes.
NEEDS_ESCAPE = r'[&<>"\x00-\x1f\x{FFFE}\x{FFFF}]'


def text(value: str) -> str:
    """``value`` as XML character data."""
    return value.translate(_TEXT)


def attr(value: object) -> str:
    """``value`` (any object, via str) as the inside of a double-quoted attribute value."""
    return str(value).translate(_ATTR)

