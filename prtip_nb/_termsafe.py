"""Text for a terminal: control characters from the network or from files, made visible.

Banners are escaped where they are read (``probes.text.escape_bytes``), but strings reach
text output from other doors too: imported nmap XML and masscan files, hostnames, a target
file echoed in an error message. A ``\\x1b[2J`` among them would clear the user's screen, and
worse sequences can retitle the window or, on some terminals, write into it. So every text
the CLI prints or writes (the report, -oN, -oG, diff, error messages) passes ``printable``
last: C0 and C1 controls, DEL and the bidirectional overrides (text that displays in another
order than it reads) become ``\\xNN``/``\\uNNNN``; the layout's own newlines (and, where
asked, tabs) are kept.
"""

from __future__ import annotations

import re
from typing import TextIO

__all__ = ["EscapingWriter", "printable"]

# C0 controls, DEL, C1 controls, and Unicode's bidi embedding/override/isolate controls.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, keep: str = "\n") -> str:
    """``text`` with every terminal control character escaped, except those in ``keep``."""
    if keep:
        return keep[0].join(printable(part, keep[1:]) for part in text.split(keep[0]))
    return _UNSAFE.sub(_escape, text)


class EscapingWriter:
    """A text file wrapper whose ``write`` passes ``printable`` (keeping newlines and tabs)."""

    def __init__(self, out: TextIO, keep: str = "\n\t") -> None:
        self.out, self.keep = out, keep

    def write(self, text: str) -> int:
        return self.out.write(printable(text, self.keep))

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)
