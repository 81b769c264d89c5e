"""Read an installed nmap's ``nmap-service-probes`` at run time, translating PCRE to ``re``.

nmap's database is NPSL-licensed: prtip_nb never ships it, and reads it only from where an
nmap package put it, when a user asks (``load_nmap_service_probes()``).

Translation (``translate_pcre``) covers what the file uses: ``m|...|s`` / ``m=...=i`` with
any delimiter, ``(?<name>`` groups, ``\\z``/``\\Z``, ``\\h``, ``\\R``, ``\\x{..}``, ``\\Q..\\E``,
``\\e``, ``\\cX`` and POSIX classes (``[[:alpha:]]``). Possessive quantifiers and atomic groups
pass through (Python 3.11+ has them). A rule that cannot be translated or compiled, or that
``regexguard.risk`` judges catastrophic, or (with ``measure``) that runs too long on
hostile input, is skipped; ``db.skipped`` lists each one with its line and reason.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from .regexguard import hostile_inputs, risk, worst_time
from .servicedb import LazyRegex, Probe, Rule, ServiceDB, Skipped
from .text import parse_portlist, unescape

DEFAULT_PATH = "/usr/share/nmap/nmap-service-probes"
#: ``measure=MEASURE_S`` skips rules slower than this on hostile input (CPU time). Not the
#: default any more: ``matcher.RULE_TIMEOUT_S`` stops any search that runs long, so a slow
#: rule costs a bounded time instead of its identifications. Measured here (nmap 7.93,
#: ``regex``): four TCP rules over it (22-150 ms); with ``re`` the worst reached 228 ms.
MEASURE_S = 0.020

_POSIX = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": " \\t\\n\\r\\f\\v", "xdigit": "0-9a-fA-F", "punct": "!-/:-@\\[-`{-~",
    "print": " -~", "graph": "!-~", "cntrl": "\\x00-\\x1f\\x7f", "word": "\\w", "blank": " \\t",
}  # fmt: skip
_SIMPLE = {"z": r"\Z", "Z": r"(?=\n?\Z)", "h": r"[ \t]", "H": r"[^ \t]",
           "R": r"(?:\r\n|\n|\r)", "e": r"\x1b"}  # fmt: skip
_IN_CLASS = {"h": r" \t", "e": r"\x1b"}
_UNSUPPORTED = set("KXCGgNpPuUlL")
_QUANTIFIER = re.compile(r"\{\d+(?:,\d*)?\}")


class Untranslatable(ValueError):
    """A PCRE construct with no Python ``re`` equivalent."""


def translate_pcre(pattern: str) -> str:
    """PCRE (as nmap writes it) to Python ``re`` syntax; raises ``Untranslatable``."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt == "x" and pattern.startswith("{", i + 2):
                end = pattern.find("}", i + 3)
                if end < 0:
                    raise Untranslatable("unterminated \\x{...}")
                code = int(pattern[i + 3 : end] or "0", 16)
                if code > 0xFF:
                    raise Untranslatable(f"\\x{{{code:x}}} is not a byte")
                out.append(f"\\x{code:02x}")
                i = end + 1
                continue
            if nxt == "Q":
                end = pattern.find("\\E", i + 2)
                end = n if end < 0 else end
                out.append(re.escape(pattern[i + 2 : end]))
                i = end + 2
                continue
            if nxt == "c" and i + 2 < n:
                out.append(f"\\x{ord(pattern[i + 2].upper()) ^ 0x40:02x}")
                i += 3
                continue
            if nxt == "k" and pattern.startswith("<", i + 2):
                end = pattern.find(">", i + 3)
                if end < 0:  # find's -1 once sent i back to 0: a loop until MemoryError
                    raise Untranslatable("unterminated \\k<name>")
                out.append(f"(?P={pattern[i + 3 : end]})")
                i = end + 1
                continue
            if nxt in _UNSUPPORTED:
                raise Untranslatable(f"\\{nxt} has no Python equivalent")
            table = _IN_CLASS if in_class else _SIMPLE
            out.append(table.get(nxt, "\\" + nxt))
            i += 2
            continue
        if in_class:
            if ch == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                name = pattern[i + 2 : end] if end > 0 else ""
                negated = name.startswith("^")
                if negated or name not in _POSIX:
                    raise Untranslatable(f"POSIX class [:{name}:] not translated")
                out.append(_POSIX[name])
                i = end + 2
                continue
            if ch == "[":
                out.append("\\[")  # literal inside a class; Python warns about nested sets
            elif ch == "]" and not _class_start(out):
                in_class = False
                out.append(ch)
            else:
                out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            out.append(ch)
            if pattern.startswith("^", i + 1):
                out.append("^")
                i += 1
            if pattern.startswith("]", i + 1):  # a leading ] is a literal in both dialects
                out.append("\\]")
                i += 1
            i += 1
            continue
        if ch == "{" and not _QUANTIFIER.match(pattern, i):
            # PCRE reads a "{" that opens no {m}, {m,} or {m,n} as a literal; ``regex``
            # would take "\\d+{x" for a broken quantifier (nmap lines like "^\\d+{infopark").
            out.append("\\{")
            i += 1
            continue
        if ch == "(" and pattern.startswith("(?<", i) and pattern[i + 3 : i + 4] not in "=!":
            out.append("(?P<")
            i += 3
            continue
        if ch == "(" and re.match(r"\(\?[imsx-]+\)", pattern[i:]) and i > 0:
            raise Untranslatable("inline flags in the middle of the pattern")
        out.append(ch)
        i += 1
    if in_class:
        raise Untranslatable("unterminated character class")
    return "".join(out)


def _class_start(out: list[str]) -> bool:
    # "[]" and "[^]" never end at once: the ] right after the opening bracket is a literal.
    return bool(out) and (out[-1] == "[" or (out[-1] == "^" and len(out) > 1 and out[-2] == "["))


def _delimited(text: str, start: int) -> tuple[str, int]:
    """The body of ``<d>...<d>`` starting at ``text[start]`` (the delimiter), and the end."""
    delim = text[start]
    end = text.find(delim, start + 1)
    if end < 0:
        raise ValueError(f"unterminated {delim}...{delim}")
    return text[start + 1 : end], end + 1


def _version_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        if text.startswith("cpe:", i):
            _body, i = _delimited(text, i + 4)
            if i < len(text) and text[i] == "a":
                i += 1
            continue
        key = text[i]
        body, i = _delimited(text, i + 1)
        fields[key] = body
    return fields


def _rule(line: str, where: str, soft: bool, measure: float | None) -> Rule:
    _kw, service, rest = line.split(None, 2)
    if not rest.startswith("m"):
        raise ValueError("match without m<delim>pattern<delim>")
    body, i = _delimited(rest, 1)
    flags = 0
    while i < len(rest) and rest[i] in "is":
        flags |= re.IGNORECASE if rest[i] == "i" else re.DOTALL
        i += 1
    translated = translate_pcre(body).encode("latin-1")
    why = risk(translated, flags)
    if why is not None:
        raise Untranslatable(why)
    # Compiled when first tried: risk() above has parsed it, and regex takes 3.9 s for all.
    regex = LazyRegex(translated, flags)
    if measure is not None:
        took = worst_time(regex, hostile_inputs(translated, flags))
        if took > measure:
            raise Untranslatable(f"slow on hostile input ({took * 1e3:.0f} ms)")
    f = _version_fields(rest[i:])
    return Rule(service, regex, f.get("p"), f.get("v"), f.get("i"), soft, where)


#: Longest line read whole (nmap's longest is about 2.5 KB); a longer one is skipped.
MAX_LINE = 1 << 16
#: What a malformed line can raise while it is parsed: each means "skip this line".
_MALFORMED = (ValueError, re.error, UnicodeEncodeError, OverflowError, IndexError, KeyError,
              RecursionError)  # fmt: skip


def _lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(number, text) of each line that is not blank or a comment; text None: too long."""
    # Latin-1 maps every byte to one character: patterns stay byte-exact.
    with path.open(encoding="latin-1", newline="\n") as fh:
        number = 0
        for raw in iter(lambda: fh.readline(MAX_LINE + 1), ""):
            number += 1
            if len(raw) > MAX_LINE and not raw.endswith("\n"):
                while (rest := fh.readline(MAX_LINE)) and not rest.endswith("\n"):
                    pass  # skip the rest of the line without holding it
                yield number, None
                continue
            line = raw.strip()
            if line and not line.startswith("#"):
                yield number, line


def load_nmap_service_probes(
    path: str | Path = DEFAULT_PATH, *, measure: float | None = None
) -> ServiceDB:
    """nmap's probe database as a ``ServiceDB``; ``db.skipped`` says what was left out.

    ``measure``: time every rule on hostile inputs (CPU time) and skip those slower than
    this many seconds (loading then takes ~12 s of CPU, not ~3.4 s: every rule is compiled
    and timed). Off by default: the matcher's per-search timeout is the bound that holds
    whatever the input.
    """
    path = Path(path)
    probes: list[Probe] = []
    skipped: list[Skipped] = []
    exclude: frozenset[int] = frozenset()
    probe: Probe | None = None
    for number, line in _lines(path):
        where = f"{path.name}:{number}"
        keyword, _, arg = (line or "").partition(" ")
        try:
            if line is None:
                raise ValueError(f"longer than {MAX_LINE} bytes")
            if keyword == "Probe":
                proto, name, spec = arg.split(None, 2)
                payload, _end = _delimited(spec, 1)
                probe = Probe(name, unescape(payload), proto.lower())
                probes.append(probe)
            elif keyword == "Exclude":
                exclude = parse_portlist(arg.replace("T:", "").split("U:")[0].strip(", "))
            elif probe is None:
                raise ValueError(f"{keyword} before the first Probe")
            elif probe.proto != "tcp":
                continue  # UDP probes: service detection here is TCP only
            elif keyword in ("match", "softmatch"):
                probe.rules.append(_rule(line, where, keyword == "softmatch", measure))
            elif keyword == "ports":
                probe.ports = parse_portlist(arg)
            elif keyword == "sslports":
                probe.sslports = parse_portlist(arg)
            elif keyword == "rarity":
                probe.rarity = int(arg)
            elif keyword == "totalwaitms":
                probe.wait_ms = int(arg)
            elif keyword == "fallback":
                probe.fallback = tuple(x.strip() for x in arg.split(","))
        except _MALFORMED as exc:
            skipped.append(Skipped(where, f"{type(exc).__name__}: {exc}"))
            if not isinstance(exc, Untranslatable):  # untranslatable rules are expected
                warnings.warn(f"{path}, line {number}: skipped a malformed line "
                              f"({type(exc).__name__}: {exc})", stacklevel=2)
    # nmap's SSLSessionReq only says "ssl"; prtip_nb then needs a real handshake to go on.
    ssl_ports = frozenset().union(*(p.sslports for p in probes))
    probes.append(Probe("TLSHandshake", tls=True, rarity=1, ports=ssl_ports))
    return ServiceDB(probes, skipped, exclude=exclude)
