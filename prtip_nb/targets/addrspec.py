"""The grammar of one target token: IP literals, CIDR, nmap octet ranges, hostnames.

This module only parses text; it never resolves a name (``hosts`` does that, once). A token
is turned into ``(family, first_int, last_int)`` ranges, or into a :class:`NameSpec` for a
hostname. Anything made only of digits, dots, commas, ``-``, ``*`` and ``/`` is IPv4 syntax
and must parse as such: it never falls through to DNS, where ``1.2.3`` or ``127.1`` would be
read by ``inet_aton`` as some other address.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from itertools import product

from prtip_nb.errors import TargetSpecError
from prtip_nb.targets.intervals import Interval, merge

__all__ = ["NameSpec", "Range3", "format_addr", "parse_ip", "parse_token", "split_specs"]

Range3 = tuple[int, int, int]  # (family, first, last)

HINT = (
    "valid forms: 192.168.0.1, 10.0.0.0/24, 10.0.0.1-254, 10.0-3.0.1-254, 192.168.3-5,7.1, "
    "10.0.0.1-10.0.0.9, 2001:db8::1, 2001:db8::/64, localhost"
)
BITS = {4: 32, 6: 128}
# An octet-range product like -.-.-.1 is 16M separate ranges; refuse rather than allocate.
MAX_RANGES_PER_TOKEN = 1 << 18
_OCTET_SHAPED = re.compile(r"[0-9,*-]+(?:\.[0-9,*-]+){3}(?:/.*)?", re.DOTALL)
_IPV4_CHARS = re.compile(r"[0-9.,*/-]+")
_DOTTED_QUAD = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_OCTET = re.compile(r"[0-9]{1,3}")
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


@dataclass(frozen=True, slots=True)
class NameSpec:
    """A hostname to resolve, with an optional CIDR prefix (``scanme.example/24``)."""

    name: str
    prefix: int | None
    token: str


def split_specs(text: str) -> list[str]:
    """Split one string into target tokens.

    Targets are separated by whitespace. Inside a whitespace-free word a comma also separates
    targets, except when the word is IPv4-octet-shaped (four dot-separated fields of digits,
    ``,``, ``-`` or ``*``, optionally ``/prefix``): there commas are nmap octet lists, so
    ``192.168.3-5,7.1`` is one target. ``10.0.0.1,10.0.0.2`` has seven fields, so it is two.
    Empty pieces (``a,,b``) are ignored.
    """
    out: list[str] = []
    for word in text.split():
        if _OCTET_SHAPED.fullmatch(word):
            out.append(word)
        else:
            out.extend(part for part in word.split(",") if part)
    return out


def format_addr(family: int, value: int) -> str:
    """IP text for an integer address."""
    if family == 4:
        return socket.inet_ntoa(value.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


def parse_ip(text: str) -> tuple[int, int] | None:
    """``(family, int)`` of a plain IPv4 or IPv6 literal, or None. Strict: no shorthand."""
    if ":" in text:
        try:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
        except (OSError, ValueError):
            return None
    if not _DOTTED_QUAD.fullmatch(text):
        return None
    try:
        octets = [_octet_value(o, text) for o in text.split(".")]
    except TargetSpecError:
        return None
    return 4, int.from_bytes(bytes(octets), "big")


def _bad(token: str, reason: str, hint: str = HINT) -> TargetSpecError:
    return TargetSpecError(f"bad target {token!r}: {reason}", token=token, hint=hint)


def parse_token(token: str) -> list[Range3] | NameSpec:
    """Ranges for an address token, or a :class:`NameSpec` for a hostname."""
    body, slash, prefix_s = token.partition("/")
    prefix: int | None = None
    if slash:
        if not re.fullmatch(r"[0-9]{1,3}", prefix_s):
            what = "is missing" if prefix_s == "" else f"{prefix_s!r} is not a number"
            raise _bad(token, f"the prefix length after '/' {what}")
        prefix = int(prefix_s)
    if ":" in body:
        return _parse_v6(token, body, prefix)
    if _IPV4_CHARS.fullmatch(body):
        return _parse_v4(token, body, prefix)
    return NameSpec(_check_hostname(token, body), prefix, token)


def apply_prefix(token: str, family: int, value: int, prefix: int | None) -> Range3:
    """The CIDR block ``value/prefix``; host bits are masked, as nmap does."""
    bits = BITS[family]
    if prefix is None:
        return family, value, value
    if prefix > bits:
        raise _bad(token, f"prefix /{prefix} is longer than /{bits} for IPv{family}")
    host = (1 << (bits - prefix)) - 1
    first = value & ~host
    return family, first, first | host


def _parse_v6(token: str, body: str, prefix: int | None) -> list[Range3]:
    if "%" in body:
        raise _bad(token, "IPv6 scope ids (%eth0) are not supported", "use a global address")
    if "-" in body:
        return [_full_range(token, body, prefix, 6)]
    parsed = parse_ip(body)
    if parsed is None or parsed[0] != 6:
        raise _bad(token, "not a valid IPv6 address")
    return [apply_prefix(token, 6, parsed[1], prefix)]


def _full_range(token: str, body: str, prefix: int | None, family: int) -> Range3:
    # masscan's "first-last" form with two whole addresses.
    first_s, _, last_s = body.partition("-")
    first, last = parse_ip(first_s), parse_ip(last_s)
    if prefix is not None or first is None or last is None or first[0] != last[0]:
        raise _bad(token, f"not a valid IPv{family} address or range")
    if first[1] > last[1]:
        raise _bad(token, "reversed range: the first address is after the last")
    return family, first[1], last[1]


def _parse_v4(token: str, body: str, prefix: int | None) -> list[Range3]:
    if body.count(".") == 6 and body.count("-") == 1 and "," not in body and "*" not in body:
        return [_full_range(token, body, prefix, 4)]
    parts = body.split(".")
    if len(parts) != 4:
        raise _bad(token, f"an IPv4 address has 4 dot-separated octets, not {len(parts)}")
    octets = [_octet_ranges(token, part, n) for n, part in enumerate(parts, 1)]
    if prefix is not None:
        if any(len(o) != 1 or o[0][0] != o[0][1] for o in octets):
            raise _bad(token, "a /prefix cannot be combined with octet ranges")
        value = int.from_bytes(bytes(o[0][0] for o in octets), "big")
        return [apply_prefix(token, 4, value, prefix)]
    return _octet_product(token, octets)


def _octet_value(text: str, token: str) -> int:
    if not _OCTET.fullmatch(text):
        raise _bad(token, f"octet {text!r} is not a number 0-255")
    if len(text) > 1 and text[0] == "0":
        # inet_aton reads 010 as octal 8; nmap reads it as 10. Refuse the ambiguity.
        raise _bad(token, f"octet {text!r} has a leading zero (octal in some tools)")
    value = int(text)
    if value > 255:
        raise _bad(token, f"octet {value} is out of range 0-255")
    return value


def _octet_ranges(token: str, text: str, n: int) -> tuple[Interval, ...]:
    out: list[Interval] = []
    for item in text.split(","):
        if item in ("-", "*"):
            out.append((0, 255))
            continue
        lo_s, dash, hi_s = item.partition("-")
        if not dash:
            v = _octet_value(item, token)
            out.append((v, v))
            continue
        lo = 0 if lo_s == "" else _octet_value(lo_s, token)
        hi = 255 if hi_s == "" else _octet_value(hi_s, token)
        if lo > hi:
            raise _bad(token, f"reversed range {item!r} in octet {n}", f"valid form: {hi}-{lo}")
        out.append((lo, hi))
    return merge(out)


def _octet_product(token: str, octets: list[tuple[Interval, ...]]) -> list[Range3]:
    # Trailing full octets (0-255) fold into each range, so 10.0-3.-.- is ONE range and
    # 10.0.0.1-254 is one range, whatever the number of addresses.
    m = 3
    while m >= 0 and octets[m] == ((0, 255),):
        m -= 1
    if m < 0:
        return [(4, 0, (1 << 32) - 1)]
    shift = 8 * (3 - m)
    fill = (1 << shift) - 1
    heads = [[v for lo, hi in octets[i] for v in range(lo, hi + 1)] for i in range(m)]
    count = len(octets[m])
    for h in heads:
        count *= len(h)
    if count > MAX_RANGES_PER_TOKEN:
        raise _bad(
            token,
            f"the octet ranges make {count} separate address ranges (limit {MAX_RANGES_PER_TOKEN})",
            "split it into CIDR blocks, or list fewer octet values",
        )
    out: list[Range3] = []
    for values in product(*heads):
        base = 0
        for i, v in enumerate(values):
            base |= v << (8 * (3 - i))
        for lo, hi in octets[m]:
            out.append((4, base | lo << shift, base | hi << shift | fill))
    return out


def _check_hostname(token: str, name: str) -> str:
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise _bad(token, "not a valid hostname") from None
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise _bad(token, "not an IP address, range, CIDR block or valid hostname")
    try:
        socket.inet_aton(name)
    except OSError:
        return name
    # inet_aton accepted it (0x7f.1, 127.1, ...): shorthand that would silently change target.
    raise _bad(token, "ambiguous IPv4 shorthand; write the full dotted quad, like 127.0.0.1")
