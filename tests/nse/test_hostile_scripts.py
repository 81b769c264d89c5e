"""Scripts facing hostile servers stay inside their budgets, and the scan finishes.

Servers made here (in the suite's private namespace, on the ports the scripts' rules pick
without -sV): a tarpit that accepts and never speaks, an HTTP reply whose headers never
end, a 10 MB title, a TLS port that closes in the middle of the handshake, and the lab's
TLS server with a ~1 MiB certificate chain. Each script run has 2 s (--script-timeout);
every run must end as a result or an error row, and the whole scan within a bound that
counts the waves the per-host limit allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

import prtip_nb as pn
from prtip_nb.lab.hostile import HostileServer

HOST = "127.0.0.1"
BUDGET_S = 2.0


async def _tarpit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)
    writer.close()


async def _endless_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)
    writer.write(b"HTTP/1.1 200 OK\r\nServer: endless\r\n")
    with contextlib.suppress(OSError):
        for i in range(200_000):  # bounded: ~6 MB of headers at most
            writer.write(b"X-Endless-%d: %s\r\n" % (i, b"a" * 16))
            await writer.drain()
    writer.close()


async def _huge_title(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)
    body = b"<html><title>" + b"T" * (10 << 20) + b"</title></html>"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n"
                 % len(body))
    with contextlib.suppress(OSError):
        writer.write(body)
        await writer.drain()
    writer.close()


async def _close_mid_handshake(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
    await reader.read(64)  # part of a ClientHello, then gone
    writer.close()


@contextlib.contextmanager
def _servers(layout: dict[int, object]) -> Iterator[None]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    servers: list[asyncio.AbstractServer] = []

    async def main() -> None:
        for port, handler in layout.items():
            servers.append(await asyncio.start_server(handler, HOST, port, reuse_address=True))
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


def test_hostile_servers_stay_in_budget(netns: None, root: None) -> None:
    layout = {80: _endless_header, 8080: _huge_title, 8000: _tarpit, 443: _close_mid_handshake}
    chain = HostileServer(HOST, {"bigchain": [8443]}).start()
    try:
        with _servers(layout):
            t0 = time.monotonic()
            res = pn.scan(HOST, ports="80,443,8000,8080,8443", method="connect",
                          scripts="http-title,http-headers,http-server-header,ssl-cert,banner",
                          script_timeout=BUDGET_S)  # fmt: skip
            took = time.monotonic() - t0
    finally:
        chain.stop()
    rows = {(r["port"], r["id"]): r for r in res.tables["scripts"].to_pylist()}
    print(f"\n{took:.1f} s; " + "; ".join(f"{p} {i}: {(r['output'] or '')[:50]!r}"
                                          for (p, i), r in sorted(rows.items())))
    assert res.ports["state"].astype(str).eq("open").sum() == 5
    # 5 ports x up to 5 scripts, 4 at once per host: at most 7 waves of 2 s, plus the scan.
    assert took < 7 * BUDGET_S + 10, took
    # The endless header: kept as far as the cap, the Server header still read.
    assert rows[(80, "http-server-header")]["output"] == "endless"
    # The 10 MB title: the body stops at 256 KiB, so no closing tag is seen.
    title = rows.get((8080, "http-title"))
    assert title is None or len(title["output"]) < 1000
    # The tarpit: the HTTP scripts time out as error rows; banner says nothing.
    assert "ERROR" in rows[(8000, "http-title")]["output"]
    assert "timed out" in rows[(8000, "http-title")]["data"]
    assert (8000, "banner") not in rows
    # TLS closed mid-handshake and the ~1 MiB chain: an error row or nothing, never a hang.
    for port in (443, 8443):
        r = rows.get((port, "ssl-cert"))
        assert r is None or "ERROR" in r["output"], r
