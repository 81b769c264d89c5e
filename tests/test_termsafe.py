"""printable(): what may reach a terminal. Pure logic, so a unit test with examples."""

from __future__ import annotations

import io

import pytest

from prtip_nb._termsafe import EscapingWriter, printable


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("plain text, ünïcode, 日本", "plain text, ünïcode, 日本"),
        ("\x1b[2J", r"\x1b[2J"),
        ("title\x1b]0;pwned\x07", r"title\x1b]0;pwned\x07"),
        ("csi\x9b31m", r"csi\x9b31m"),  # the one-byte C1 form of ESC [
        ("del\x7f nul\x00", r"del\x7f nul\x00"),
        ("abc\u202edcba", r"abc\u202edcba"),  # right-to-left override
        ("a\rb", r"a\x0db"),  # a carriage return would overwrite the line
        ("tab\there", r"tab\x09here"),
    ],
)
def test_controls_become_visible_text(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_layout_newlines_and_asked_for_tabs_are_kept() -> None:
    assert printable("a\nb\x1b\n") == "a\nb\\x1b\n"
    assert printable("a\tb\n\x1b", keep="\n\t") == "a\tb\n\\x1b"
    out = io.StringIO()
    EscapingWriter(out).write("Host: x\tStatus: Up\x1b[2J\n")
    assert out.getvalue() == "Host: x\tStatus: Up\\x1b[2J\n"
