"""jarm equals the reference algorithm's fingerprint (pyjarm, a port of salesforce/jarm).

The ten ClientHellos are compared byte for byte with pyjarm's (its random fields pinned).
Then real servers in the suite's private namespace, on TLS port numbers so that the script
runs without -sV: nginx (Debian's OpenSSL defaults), Python ``ssl`` servers limited to TLS
1.2, to TLS 1.3, to two cipher suites, and one allowing TLS 1.0 with every suite and ALPN;
a port that answers in HTTP (not TLS), one that closes in the middle of the handshake, a
tarpit, and a TLS server with a ~1 MiB certificate chain. One prtip_nb scan and pyjarm, each
hello given 2 s, must agree on every port; a run reads at most 1,484 bytes per hello, and a
tarpit under a 1 s --script-timeout ends as an error row in about that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ssl
import struct
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import prtip_nb as pn
from prtip_nb.lab.hostile import HostileServer
from prtip_nb.nse.api import Target
from prtip_nb.nse.builtin import jarm as J
from prtip_nb.nse.context import Budget, Context

from ..conftest import need

HOST = "127.0.0.1"
WAIT_S = 2  # one hello's wait, ours (jarm.timeout) and pyjarm's


def _need_pyjarm() -> None:
    need(importlib.util.find_spec("jarm") is not None,
         "needs pyjarm, the reference: pip install pyjarm (the [dev] extra)")


def test_hellos_equal_the_reference_bytes() -> None:
    _need_pyjarm()
    from jarm.formats import V1
    from jarm.hashing.hashing import Hasher
    from jarm.packet import packet as ref

    assert len(V1) == len(J.HELLOS) == 10
    for fmt, hello in zip(V1, J.HELLOS, strict=True):
        with mock.patch.object(ref.os, "urandom", lambda n: bytes(range(n))), \
             mock.patch.object(ref.random, "choice", lambda seq: b"\x5a\x5a"):  # fmt: skip
            theirs = fmt().build_packet(dest_host="198.51.100.7", dest_port=443).build()
        ours = J.client_hello(hello, "198.51.100.7", rand=lambda n: bytes(range(n)),
                              grease=lambda: b"\x5a\x5a")  # fmt: skip
        assert ours == theirs, fmt.__name__
    assert [c.hex() for c in J.HASH_ORDER] == [c.hex() for c in Hasher.CIPHER_LIST]


def test_fingerprint_of_raw_results_equals_the_reference() -> None:
    _need_pyjarm()
    from jarm.hashing.hashing import Hasher

    raw = [("c02b", "0303", "h2", "ff01-0000-0010"), None, ("1301", "0303", "", "002b-0033"),
           ("00ff", "0302", "", ""), None, None, None, None, None, ("c030", "0303", "", "")]
    ref = ",".join("|".join(r) if r else "|||" for r in raw)
    assert J.fingerprint(raw) == Hasher.jarm(ref)
    assert J.fingerprint([None] * 10) == Hasher.jarm(",".join(["|||"] * 10)) == "0" * 62


def _server_hello(sid: bytes, cipher: str, exts: bytes | None) -> bytes:
    body = (b"\x03\x03" + bytes(range(32)) + bytes([len(sid)]) + sid + bytes.fromhex(cipher)
            + b"\x00" + (b"" if exts is None else struct.pack(">H", len(exts)) + exts))
    hs = b"\x02" + struct.pack(">I", len(body))[1:] + body
    return b"\x16\x03\x03" + struct.pack(">H", len(hs)) + hs


def test_reply_parsing_equals_the_reference() -> None:
    """ServerHellos of several shapes, whole or cut before their extensions, and other
    replies: our reading equals pyjarm's (where pyjarm follows the reference: it differs
    only on a reply cut inside the extension block)."""
    _need_pyjarm()
    from jarm.scanner.scanner import Scanner

    alpn = bytes.fromhex("0010 0005 0003 026832")  # h2
    tls13 = bytes.fromhex("002b 0002 0304 0033 0024 001d 0020") + bytes(32)
    cert = bytes.fromhex("0b000003000000")  # a Certificate right after, no extensions
    replies = [
        _server_hello(bytes(32), "c02f", alpn + bytes.fromhex("ff01 0001 00 0017 0000")),
        _server_hello(b"", "1301", tls13),
        _server_hello(bytes(range(32)), "cca9", bytes.fromhex("ff01 0001 00") + alpn),
        _server_hello(bytes(32), "0005", None) + cert,
        _server_hello(bytes(32), "abcd", b""),  # a suite outside the list
        bytes.fromhex("15030300020228"),  # an alert
        b"HTTP/1.1 400 Bad Request\r\n\r\n", b"", b"\x16\x03\x03\x00",
    ]
    replies += [replies[0][:n] for n in (10, 43, 60, 77, 78)]  # cut before the extensions
    for data in replies:
        theirs = Scanner._parse_server_hello(bytearray(data), ("probe",)).split("|")
        ours = J.parse_reply(data)
        assert (list(ours) if ours else ["", "", "", ""]) == (theirs + ["", ""])[:4], data
    assert J.parse_reply(replies[0]) == ("c02f", "0303", "h2", "0010-ff01-0017")


# -- the servers -------------------------------------------------------------------------------
def _tls(cert: Any, *, lo: ssl.TLSVersion | None = None, hi: ssl.TLSVersion | None = None,
         ciphers: str | None = None, alpn: list[str] | None = None) -> ssl.SSLContext:  # fmt: skip
    from prtip_nb.lab.tlscert import server_context

    ctx = server_context(cert)
    if ciphers:
        ctx.set_ciphers(ciphers)
    if lo:
        with warnings.catch_warnings():  # TLS 1.0 is deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = lo
    if hi:
        ctx.maximum_version = hi
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


async def _idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # A TLS server's handler: the handshake never finishes (a JARM client leaves after
    # the ServerHello), so this runs only if one does.
    writer.close()


async def _http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    with contextlib.suppress(OSError):
        await writer.drain()
    writer.close()


async def _close_mid_handshake(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:  # fmt: skip
    await reader.read(64)  # part of a ClientHello, then gone
    writer.close()


async def _tarpit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)
    writer.close()


@contextlib.contextmanager
def _servers(layout: dict[int, tuple[Any, ssl.SSLContext | None]]) -> Iterator[None]:
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _loop, _ctx: None)  # failed handshakes: expected
    started = threading.Event()
    servers: list[asyncio.AbstractServer] = []

    async def main() -> None:
        for port, (handler, ctx) in layout.items():
            servers.append(await asyncio.start_server(
                handler, HOST, port, ssl=ctx, reuse_address=True,
                ssl_handshake_timeout=5 if ctx else None))  # fmt: skip
        started.set()

    th = threading.Thread(target=lambda: (loop.run_until_complete(main()), loop.run_forever()),
                          daemon=True)  # fmt: skip
    th.start()
    assert started.wait(5)
    try:
        yield
    finally:
        for s in servers:
            loop.call_soon_threadsafe(s.close)
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)


async def _direct(port: int) -> tuple[Any, int]:
    """One run of the script on ``port`` outside a scan: (its Output, bytes it read)."""
    ctx = Context(Target(HOST, port), "jarm", {}, Budget(30, J.Jarm.max_bytes))
    try:
        return await J.Jarm().run(ctx), ctx.budget.read
    finally:
        await ctx.close_all()


def test_jarm_equals_pyjarm_on_real_servers(netns: None, root: None, tmp_path: Path) -> None:
    from prtip_nb.lab.daemons import installed, start_daemons
    from prtip_nb.lab.tlscert import make_cert

    need(installed("nginx-tls"), "needs nginx (apt-get install nginx; make test does it)")
    _need_pyjarm()
    from jarm.scanner.scanner import Scanner

    cert = make_cert(HOST)
    v12, v13, v10 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1
    layout: dict[int, tuple[Any, ssl.SSLContext | None]] = {
        465: (_idle, _tls(cert, hi=v12)),  # TLS 1.2 only
        636: (_idle, _tls(cert, lo=v13)),  # TLS 1.3 only
        853: (_idle, _tls(cert, hi=v12, alpn=["http/1.1"],
                          ciphers="ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-CHACHA20-POLY1305")),
        990: (_idle, _tls(cert, lo=v10, ciphers="ALL:@SECLEVEL=0", alpn=["h2", "http/1.1"])),
        993: (_http, None),  # not TLS: the all-zero fingerprint
        994: (_close_mid_handshake, None),
        995: (_tarpit, None),
    }
    chain = HostileServer(HOST, {"bigchain": [8443]}).start()
    with contextlib.ExitStack() as stack:
        stack.callback(chain.stop)
        up = stack.enter_context(start_daemons(tmp_path, ["nginx-tls"]))
        stack.enter_context(_servers(layout))
        assert up == {"nginx-tls": 443}, f"nginx did not come up: {tmp_path}/nginx.err"
        ports = [443, *layout, 8443]
        t0 = time.monotonic()
        res = pn.scan(HOST, ports=",".join(map(str, ports)), method="connect", scripts="jarm",
                      script_args={"jarm.timeout": str(WAIT_S)})  # fmt: skip
        ours_s = time.monotonic() - t0
        t0 = time.monotonic()
        ref = {p: Scanner.scan(HOST, p, timeout=WAIT_S, suppress=True)[0] for p in ports}
        ref_s = time.monotonic() - t0
        # The byte budget: one run against the 1 MiB chain reads at most 1,484 B a hello.
        out, read = asyncio.run(_direct(8443))
        # The run's own budget: a tarpit under --script-timeout 1 is an error row at ~1 s.
        t0 = time.monotonic()
        cut = pn.scan(HOST, ports="995", method="connect", scripts="jarm", script_timeout=1)
        cut_s = time.monotonic() - t0
    xml = res.to_nmap_xml(tmp_path / "jarm.xml").read_text()
    assert f'<elem key="fingerprint">{ref[443]}</elem>' in xml
    rows = {r["port"]: r for r in res.tables["scripts"].to_pylist() if r["id"] == "jarm"}
    print(f"\nprtip_nb scan + jarm {ours_s:.2f} s, pyjarm {ref_s:.2f} s (one port after "
          "another)\n" + "\n".join(f"  {p}: {rows[p]['output']}  {ref[p]}" for p in ports))
    assert set(rows) == set(ports)
    for p in ports:
        assert rows[p]["output"] == ref[p], p
        assert [(e["key"], e["value"]) for e in rows[p]["elements"]] == [("fingerprint", ref[p])]
    zero = "0" * 62
    tls_ports = (443, 465, 636, 853, 990)
    assert all(ref[p] != zero for p in tls_ports)
    assert len({ref[p] for p in tls_ports}) == len(tls_ports)  # five settings, five prints
    assert ref[993] == ref[994] == ref[995] == zero
    assert ref[8443] != zero and out.text == ref[8443]
    assert read <= 10 * J.READ_MAX, read
    row = cut.tables["scripts"].to_pylist()[0]
    print(f"  1 MiB chain: {read:,} bytes read in 10 hellos; tarpit, 1 s budget: "
          f"{cut_s:.2f} s, {row['output']!r} {row['data']}")
    assert row["output"].startswith("ERROR") and "timed out" in row["data"], row
    assert cut_s < 4, cut_s
    # The tarpit costs one hello's wait (the two in flight time out together), not ten.
    assert ours_s < 5 * WAIT_S + 5, ours_s
