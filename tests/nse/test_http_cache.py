"""The scripts' shared HTTP cache: one GET per page, however many scripts read it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import prtip_nb as pn
from prtip_nb.nse.context import HttpResponse, ScriptError
from prtip_nb.nse.httpcache import HttpCache

HOST, PORT = "127.0.0.1", 8080  # an HTTP port by number: the rules pick it without -sV
PAGE = b"<html><title>one fetch</title></html>"


@pytest.fixture
def counting_server(netns: None) -> Iterator[Counter[tuple[str, str]]]:
    seen: Counter[tuple[str, str]] = Counter()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, body: bytes) -> None:
            seen[(self.command, self.path)] += 1
            time.sleep(0.3)  # slow enough that the scripts' requests overlap
            self.send_response(200 if self.path == "/" else 404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            self._reply(PAGE if self.path == "/" else b"no")

        def do_HEAD(self) -> None:  # noqa: N802
            self._reply(PAGE)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((HOST, PORT), Handler)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


def test_scripts_reading_one_page_fetch_it_once(counting_server: Counter[tuple[str, str]]) -> None:
    ids = ["http-title", "http-server-header", "http-favicon", "http-headers", "http-robots.txt"]
    res = pn.scan(HOST, ports=str(PORT), scripts=ids)
    out = dict(zip(res.scripts["id"], res.scripts["output"], strict=True))
    assert out["http-title"] == "one fetch"
    assert out["http-server-header"].startswith("BaseHTTP/")
    assert "(Request type: HEAD)" in out["http-headers"]
    # title and server-header both read GET /: the server saw it once
    assert counting_server[("GET", "/")] == 1, counting_server
    assert counting_server[("GET", "/favicon.ico")] == 1
    assert counting_server[("HEAD", "/")] == 1


def _reply(body: bytes) -> HttpResponse:
    return HttpResponse("HTTP/1.1", 200, "OK", [("Server", "x")], body)


def test_waiters_share_a_fetch_and_get_their_own_cut() -> None:
    async def main() -> tuple[list[HttpResponse], list[int]]:
        cache, caps = HttpCache(), []

        async def fetch(cap: int) -> HttpResponse:
            caps.append(cap)
            await asyncio.sleep(0.05)
            return _reply(b"x" * 1000)

        key = (HOST, 80, False, "/")
        got = await asyncio.gather(cache.get(key, 0, fetch), cache.get(key, 10, fetch),
                                   cache.get(key, 5000, fetch))  # fmt: skip
        got.append(await cache.get(key, 100, fetch))  # after: from the cache
        assert (cache.fetches, cache.hits) == (1, 3)
        return got, caps

    got, caps = asyncio.run(main())
    assert caps == [256 << 10]  # a headers-only asker fetches the body for the others
    assert [len(r.body) for r in got] == [0, 10, 1000, 100]
    assert [r.truncated for r in got] == [True, True, False, True]


def test_a_failed_leader_leaves_the_waiters_to_fetch() -> None:
    async def main() -> int:
        cache, calls = HttpCache(), []

        async def slow(cap: int) -> HttpResponse:
            calls.append("slow")
            await asyncio.sleep(10)
            return _reply(b"never")

        async def quick(cap: int) -> HttpResponse:
            calls.append("quick")
            return _reply(b"ok")

        key = (HOST, 80, False, "/")
        leader = asyncio.create_task(cache.get(key, 100, slow))
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(cache.get(key, 100, quick))
        await asyncio.sleep(0.01)
        leader.cancel()  # its script's budget ran out
        r = await waiter
        assert r.body == b"ok" and calls == ["slow", "quick"]

        async def not_http(cap: int) -> HttpResponse:
            calls.append("bad")
            raise ScriptError("not an HTTP reply: 'SSH-2.0'")

        bad = (HOST, 22, False, "/")
        for _ in range(2):  # the same bytes every time: asked once
            with pytest.raises(ScriptError, match="not an HTTP reply"):
                await cache.get(bad, 100, not_http)
        return calls.count("bad")

    assert asyncio.run(main()) == 1
