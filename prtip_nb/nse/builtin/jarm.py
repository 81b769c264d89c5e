"""jarm: the JARM TLS server fingerprint (Salesforce, 2020), from its published description.

THE METHOD. Ten ClientHellos, each on a new TCP connection, differ in the version offered
(TLS 1.1, 1.2, 1.3), the cipher suites (69, or 64 without TLS 1.3's) and their order
(forward, reverse, top half, bottom half, middle out), GREASE, the ALPN list (all, or only
the rare ones) and its order, and the supported_versions extension. From each ServerHello
JARM keeps the chosen cipher, the version, the chosen ALPN and the extension types in the
order the server sent them; a refusal (an alert, anything but a ServerHello) counts as
empty. The fingerprint is 62 hex digits: for each hello, the cipher's position in a fixed
list (two digits, ``00`` when empty) and a letter for the version (``a`` for SSL 3.0 to
``e`` for TLS 1.3's 0x0304, ``0`` when empty); then the first 32 hex digits of the SHA-256
of every ALPN and extension list, concatenated.

QUIRKS KEPT, so that the fingerprint equals the reference implementation's (salesforce/jarm,
and pyjarm, which ports it; ``tests/nse/test_jarm.py`` compares against pyjarm):

- the full ALPN list sends "spdy/3" and "h2" as one entry (a missing comma in the reference),
  so a reversed list keeps them together;
- the server name sent is the target as scanned (here its IP address);
- the reply is judged on its first 1,484 bytes at fixed offsets; a malformed extension
  block makes the whole hello count as empty;
- a hello that times out makes the whole fingerprint zeros, as do ten empty hellos (a port
  that does not speak TLS: ``000...0``).

BUDGET. Two hellos at a time; each waits at most ``jarm.timeout`` seconds (script argument;
default the engine's read timeout, 5 s) and never past the run's deadline; each reads at
most 1,484 bytes (the whole run under 16 KiB). A tarpit costs one wait and gives zeros, as
in the reference; when the run's budget (``--script-timeout``) ends a wait first, the run
is an error row instead (nothing was learnt about the server).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from prtip_nb.nse.api import Output, Script
from prtip_nb.nse.context import TLS_PORTS, Context

ZERO = "0" * 62
READ_MAX = 1484  # what the reference reads of each reply, and judges
CONCURRENCY = 2  # hellos in flight on one port (pyjarm's default)


def _units(hexes: str) -> tuple[bytes, ...]:
    raw = bytes.fromhex(hexes)
    return tuple(raw[i:i + 2] for i in range(0, len(raw), 2))


#: The 69 suites offered, in the method's order ("forward").
ALL_CIPHERS = _units(
    "0016 0033 0067 c09e c0a2 009e 0039 006b c09f c0a3 009f 0045 00be 0088 00c4 009a"
    " c008 c009 c023 c0ac c0ae c02b c00a c024 c0ad c0af c02c c072 c073 cca9 1302 1301"
    " cc14 c007 c012 c013 c027 c02f c014 c028 c030 c060 c061 c076 c077 cca8 1305 1304"
    " 1303 cc13 c011 000a 002f 003c c09c c0a0 009c 0035 003d c09d c0a1 009d 0041 00ba"
    " 0084 00c0 0007 0004 0005"
)
#: Without TLS 1.3's suites (0x13xx): the "invalid" TLS 1.3 hello.
NO_TLS13_CIPHERS = tuple(c for c in ALL_CIPHERS if c[0] != 0x13)
#: A cipher's code in the fingerprint is its 1-based position here: the suites in numeric
#: order, TLS 1.3's last. One the server picks outside the list is 70 (0x46).
HASH_ORDER = tuple(sorted(NO_TLS13_CIPHERS)) + tuple(sorted(c for c in ALL_CIPHERS
                                                            if c[0] == 0x13))  # fmt: skip
GREASE = tuple(bytes([x, x]) for x in range(0x0A, 0x100, 0x10))  # RFC 8701: 0x0a0a ... 0xfafa


def _alpn(*names: bytes) -> tuple[bytes, ...]:
    return tuple(bytes([len(n)]) + n for n in names)


ALPN_ALL = (*_alpn(b"http/0.9", b"http/1.0", b"http/1.1", b"spdy/1", b"spdy/2"),
            b"".join(_alpn(b"spdy/3", b"h2")), *_alpn(b"h2c", b"hq"))  # fmt: skip
ALPN_RARE = _alpn(b"http/0.9", b"http/1.0", b"spdy/1", b"spdy/2", b"spdy/3", b"h2c", b"hq")

#: Extensions sent as they are (RFC 7627, 6066, 5746, 8422, 5077, 8446 4.2.3 and 4.2.9).
_FIXED_EXTS = bytes.fromhex(
    "0017 0000"  # extended_master_secret
    " 0001 0001 01"  # max_fragment_length: 512
    " ff01 0001 00"  # renegotiation_info
    " 000a 000a 0008 001d 0017 0018 0019"  # supported_groups: x25519, P-256, P-384, P-521
    " 000b 0002 0100"  # ec_point_formats: uncompressed
    " 0023 0000"  # session_ticket
)
_SIG_ALGS = bytes.fromhex("000d 0014 0012 0403 0804 0401 0503 0805 0501 0806 0601 0201")
_PSK_MODES = bytes.fromhex("002d 0002 0101")


class Hello(NamedTuple):
    """One of the ten ClientHellos."""

    version: str  # "1.1", "1.2" or "1.3"
    ciphers: tuple[bytes, ...]
    order: str  # of the ciphers: forward, reverse, top, bottom, middle
    grease: bool
    alpns: tuple[bytes, ...]
    supported: str | None  # supported_versions: "1.2" (up to 1.2), "1.3", or not sent
    ext_order: str  # of the ALPN and supported_versions lists: forward or reverse


HELLOS = (
    Hello("1.2", ALL_CIPHERS, "forward", False, ALPN_ALL, "1.2", "reverse"),
    Hello("1.2", ALL_CIPHERS, "reverse", False, ALPN_ALL, "1.2", "forward"),
    Hello("1.2", ALL_CIPHERS, "top", False, ALPN_ALL, None, "forward"),
    Hello("1.2", ALL_CIPHERS, "bottom", False, ALPN_RARE, None, "forward"),
    Hello("1.2", ALL_CIPHERS, "middle", True, ALPN_RARE, None, "reverse"),
    Hello("1.1", ALL_CIPHERS, "forward", False, ALPN_ALL, None, "forward"),
    Hello("1.3", ALL_CIPHERS, "forward", False, ALPN_ALL, "1.3", "reverse"),
    Hello("1.3", ALL_CIPHERS, "reverse", False, ALPN_ALL, "1.3", "forward"),
    Hello("1.3", NO_TLS13_CIPHERS, "forward", False, ALPN_ALL, "1.3", "forward"),
    Hello("1.3", ALL_CIPHERS, "middle", True, ALPN_ALL, "1.3", "reverse"),
)
#: (record layer version, client_version): a TLS 1.3 hello looks like TLS 1.2 (RFC 8446 4.1.2).
_VERSIONS = {"1.1": (b"\x03\x02", b"\x03\x02"), "1.2": (b"\x03\x03", b"\x03\x03"),
             "1.3": (b"\x03\x01", b"\x03\x03")}  # fmt: skip


def reorder(items: Sequence[bytes], order: str) -> list[bytes]:
    """The method's orders: the back half past the middle ("bottom"), the front half
    reversed with the middle item first ("top"), or alternating outward from the middle,
    the back side first ("middle")."""
    n, mid = len(items), len(items) // 2
    if order == "forward":
        return list(items)
    if order == "reverse":
        return list(items[::-1])
    if order == "bottom":
        return list(items[mid + n % 2:])
    if order == "top":
        return ([items[mid]] if n % 2 else []) + reorder(items[::-1], "bottom")
    if order == "middle":
        out = [items[mid]] if n % 2 else []
        lo = mid if n % 2 else mid - 1  # the item just left of the back side's first
        for i in range(1, mid + 1):
            out += [items[lo + i], items[mid - i]]
        return out
    raise ValueError(f"unknown order {order!r}")


def _vec16(body: bytes) -> bytes:
    return struct.pack(">H", len(body)) + body


def client_hello(h: Hello, server_name: str, *, rand: Callable[[int], bytes] = os.urandom,
                 grease: Callable[[], bytes] | None = None) -> bytes:  # fmt: skip
    """The record carrying hello ``h`` (``rand``/``grease`` drawn as given, for tests)."""
    pick = grease or (lambda: random.choice(GREASE))
    record_version, client_version = _VERSIONS[h.version]
    suites = reorder(h.ciphers, h.order)
    if h.grease:
        suites.insert(0, pick())
    name = server_name.encode()
    exts = pick() + b"\x00\x00" if h.grease else b""
    exts += b"\x00\x00" + _vec16(_vec16(b"\x00" + _vec16(name)))  # server_name (RFC 6066 3)
    exts += _FIXED_EXTS
    exts += b"\x00\x10" + _vec16(_vec16(b"".join(reorder(h.alpns, h.ext_order))))
    exts += _SIG_ALGS
    share = (pick() + b"\x00\x01\x00" if h.grease else b"") + b"\x00\x1d\x00\x20" + rand(32)
    exts += b"\x00\x33" + _vec16(_vec16(share))  # key_share: x25519, a random "key"
    exts += _PSK_MODES
    if h.version == "1.3" or h.supported == "1.2":
        top = 4 if h.supported == "1.3" else 3
        versions = reorder([bytes([3, v]) for v in range(1, top + 1)], h.ext_order)
        body = (pick() if h.grease else b"") + b"".join(versions)
        exts += b"\x00\x2b" + struct.pack(">HB", len(body) + 1, len(body)) + body
    body = (client_version + rand(32) + b"\x20" + rand(32) + _vec16(b"".join(suites))
            + b"\x01\x00" + _vec16(exts))  # fmt: skip
    handshake = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"\x16" + record_version + _vec16(handshake)


class _Empty(Exception):
    """The reply counts as an empty hello ("|||")."""


def parse_reply(data: bytes) -> tuple[str, str, str, str] | None:
    """(cipher hex, version hex, ALPN, extension types) from a reply's first bytes, as the
    method reads them at fixed offsets; None when the hello counts as empty."""
    data = data[:READ_MAX]
    try:
        if data[0] != 22 or data[5] != 2:  # not a handshake record holding a ServerHello
            return None
        sid = data[43]
        cipher, version = data[sid + 44:sid + 46].hex(), data[9:11].hex()
        return (cipher, version, *_extensions(data, sid))
    except (IndexError, _Empty):
        return None


def _extensions(data: bytes, sid: int) -> tuple[str, str]:
    at = sid + 47  # the extensions' length, after cipher and compression
    try:
        if data[at] == 11:  # no extensions: a Certificate message follows
            return "", ""
    except IndexError:
        return "", ""
    if data[at + 3:at + 6] == b"\x0e\xac\x0b" or data[82:85] == b"\x0f\xf0\x0b":
        return "", ""  # two shapes of a reply without extensions, as the method tests them
    pos = at + 2
    end = pos + int.from_bytes(data[at:at + 2], "big") - 1
    types: list[bytes] = []
    alpn: str | None = None
    while pos < end:
        size_bytes = data[pos + 2:pos + 4]
        if not size_bytes:
            raise _Empty  # the reply ended inside the block
        size = int.from_bytes(size_bytes, "big")
        types.append(data[pos:pos + 2])
        if types[-1] == b"\x00\x10" and alpn is None:
            if size == 0:
                raise _Empty
            try:  # list length (2), name length (1), the name
                alpn = data[pos + 7:pos + 4 + size].decode()
            except UnicodeDecodeError:
                raise _Empty from None
        pos += 4 + size
    return alpn or "", "-".join(t.hex() for t in types)


def _cipher_code(cipher: str) -> str:
    if not cipher:
        return "00"
    codes = [c.hex() for c in HASH_ORDER]
    return f"{codes.index(cipher) + 1 if cipher in codes else len(codes) + 1:02x}"


def _version_code(version: str) -> str:
    # The last digit of the version: 0x0300 is "a" ... 0x0304 "e". A digit past 5 makes the
    # reference fail; here it counts as empty.
    minor = version[3:4]
    return "abcdef"[int(minor)] if minor in ("0", "1", "2", "3", "4", "5") else "0"


def fingerprint(replies: Sequence[tuple[str, str, str, str] | None]) -> str:
    """The 62-digit fingerprint of the ten hellos' results (None: empty)."""
    if all(r is None for r in replies):
        return ZERO
    head, tail = "", ""
    for r in replies:
        cipher, version, alpn, exts = r or ("", "", "", "")
        head += _cipher_code(cipher) + _version_code(version)
        tail += alpn + exts
    return head + hashlib.sha256(tail.encode()).hexdigest()[:32]


class _Timeout(Exception):
    """A hello waited its whole time: the method's fingerprint is then zeros."""


async def _probe(ctx: Context, h: Hello, wait: float) -> tuple[str, str, str, str] | None:
    loop = asyncio.get_running_loop()
    end = loop.time() + wait
    # A wait cut short by the run's budget proves nothing about the server: that timeout
    # is the run's (an error row), not the method's (zeros).
    cut = wait >= ctx.time_left()
    try:
        conn = await ctx.connect(tls=False, timeout=wait)
    except TimeoutError:
        if cut:
            raise
        raise _Timeout from None
    except OSError:
        return None  # refused, reset: this hello is empty
    buf = b""
    try:
        await conn.send(client_hello(h, ctx.host))
        while len(buf) < READ_MAX:
            # Until the first record is whole (the reference reads once; a reply split
            # across segments would otherwise be judged cut).
            chunk = await conn.recv(READ_MAX - len(buf), timeout=max(0.0, end - loop.time()))
            if not chunk:
                break
            buf += chunk
            if buf[0] != 22 or (len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[3:5])):
                break
    except TimeoutError:
        if not buf:
            if cut:
                raise
            raise _Timeout from None
    except OSError:
        pass  # reset after (or before) a reply: judge what came
    finally:
        await conn.close()
    return parse_reply(buf)


def _tls_first(t: Any) -> bool:
    return (t.tunnel == "ssl" or t.service in ("https", "ssl")
            or (t.service is None and t.port in TLS_PORTS))  # fmt: skip


class Jarm(Script):
    """The JARM fingerprint of a TLS server (62 hex digits; zeros when nothing answered
    TLS, or a hello timed out)::

        443/tcp open  https
        |_jarm: 1dd40d40d00040d0001dd40d1dd40dd5ccd273978ad18a14ab751b52670c0b

    (Debian's nginx 1.22, an EC P-256 certificate.) Data: one elem, ``fingerprint``
    (nmap XML ``<elem key="fingerprint">``), as the community ``jarm.nse``. Runs where
    TLS is spoken from the first byte (-sV's ssl tunnel, https, or a TLS port number
    without -sV). Script argument ``jarm.timeout``: seconds one hello waits (default: the
    read timeout, 5 s; the reference waits 20).
    """

    id = "jarm"
    categories = ("safe", "discovery")
    rule = staticmethod(_tls_first)
    timeout = 30.0
    max_bytes = 16 << 10  # ten replies of at most 1,484 bytes

    def __init__(self) -> None:
        self.description = self.__doc__ or ""


    async def run(self, ctx: Context) -> Output:
        arg = ctx.arg("timeout")
        try:
            wait = ctx.io_timeout if arg is None else float(arg)
        except ValueError:
            raise ValueError(f"jarm.timeout must be seconds, not {arg!r}") from None
        results: list[tuple[str, str, str, str] | None] = []
        try:
            for i in range(0, len(HELLOS), CONCURRENCY):
                tasks = [asyncio.ensure_future(_probe(ctx, h, wait))
                         for h in HELLOS[i:i + CONCURRENCY]]  # fmt: skip
                try:
                    results += await asyncio.gather(*tasks)
                finally:  # one hello timed out (or the run ended): the other stops too
                    for t in tasks:
                        t.cancel()
        except _Timeout:
            results = []
        fp = fingerprint(results) if results else ZERO
        return Output(fp, [["fingerprint", fp]])


SCRIPTS = [Jarm()]
