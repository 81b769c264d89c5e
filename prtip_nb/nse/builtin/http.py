"""HTTP scripts, from RFC 9110/9112 (methods, headers, redirects), RFC 9309 (robots.txt).

Each runs on the ports NSE's ``shortport.http`` picks: the service names http/https and
their kin, or the usual HTTP port numbers when -sV did not run. Output as nmap 7.93 prints
it; where nmap has a quirk, the docstring says so.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any
from urllib.parse import urlsplit

from prtip_nb.nse.api import Output, Script
from prtip_nb.nse.context import Context, HttpResponse

HTTP_PORTS = (80, 443, 631, 7080, 8080, 8443, 8088, 5800, 3872, 8180, 8000)
HTTP_SERVICES = ("http", "https", "ipp", "http-alt", "https-alt", "vnc-http", "oem-agent",
                 "soap", "http-proxy", "caldav", "carddav", "webdav")  # fmt: skip
_TITLE = re.compile(rb"<title[^>]*>([^<]*)</title>", re.IGNORECASE)


class _Http(Script):
    ports = HTTP_PORTS
    services = HTTP_SERVICES
    timeout = 15.0

    def __init__(self) -> None:
        if self.__doc__:
            self.description = self.__doc__


async def _get(ctx: Context, path: str, method: str = "GET",
               redirects: int = 0) -> tuple[HttpResponse, str]:  # fmt: skip
    """The reply to ``path`` after following up to ``redirects`` same-host redirects;
    and the path it came from."""
    r = await ctx.http(method, path)
    for _ in range(redirects):
        loc = r.header("Location")
        if r.status not in (301, 302, 303, 307, 308) or not loc:
            break
        parts = urlsplit(loc)
        if parts.hostname not in (None, ctx.host) or (parts.port or ctx.port) != ctx.port:
            break
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        r = await ctx.http(method, path)
    return r, path


class HttpTitle(_Http):
    """The page title of the web root (the first ``<title>`` of the body, whitespace
    collapsed). A same-site redirect is followed (up to 5), as nmap does::

        |_http-title: real nginx
        |_http-title: Site doesn't have a title (text/html).
        |_http-title: Did not follow redirect to https://example.test/

    Data: ``title``; ``redirect_url`` when a redirect was not followed.
    """

    id = "http-title"
    categories = ("default", "discovery", "safe")

    async def run(self, ctx: Context) -> Output | None:
        r, path = await _get(ctx, "/", redirects=5)
        loc = r.header("Location")
        if r.status in (301, 302, 303, 307, 308) and loc:
            return Output(f"Did not follow redirect to {loc}", [["redirect_url", loc]])
        m = _TITLE.search(r.body)
        if m is None:
            ctype = r.header("Content-Type")
            text = "Site doesn't have a title"
            return Output(f"{text} ({ctype.split(';')[0]})." if ctype else f"{text}.")
        title = " ".join(m.group(1).decode("utf-8", "replace").split())
        out = [["title", title]]
        text = title
        if path != "/":
            text += f"\nRequested resource was {path}"
            out.append(["redirect_url", path])
        return Output(text, out)


class HttpServerHeader(_Http):
    """The ``Server`` header of the web root's reply::

        |_http-server-header: nginx/1.22.1

    Data: one keyless elem per distinct Server value (nmap's shape).
    """

    id = "http-server-header"
    categories = ("version",)

    async def run(self, ctx: Context) -> Output | None:
        r = await ctx.http("GET", "/", max_body=0)
        values = list(dict.fromkeys(r.header_all("Server")))
        if not values:
            return None
        return Output("\n".join(values), [[None, v] for v in values])


class HttpHeaders(_Http):
    """The headers of a HEAD request to the web root, in the server's order::

        | http-headers:
        |   Server: nginx/1.22.1
        |   Date: Sat, 05 Dec 2026 02:18:54 GMT
        |   Content-Type: text/html
        |   Content-Length: 25
        |   Connection: close
        |
        |_  (Request type: HEAD)

    nmap's quirk, kept: the text ends with a newline, and there is no structured data.
    ``http-headers.path`` picks another path.
    """

    id = "http-headers"
    categories = ("discovery", "safe")

    async def run(self, ctx: Context) -> Output | None:
        path = ctx.arg("path", "/") or "/"
        method = "HEAD"
        r = await ctx.http(method, path)
        if r.status >= 400 and r.status not in (401, 403):
            method = "GET"
            r = await ctx.http(method, path, max_body=0)
        lines = [f"  {k}: {v}" for k, v in r.headers]
        return Output("\n" + "\n".join([*lines, "  ", f"  (Request type: {method})", ""]))


RISKY = ("PUT", "DELETE", "CONNECT", "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE",
         "LOCK", "UNLOCK", "TRACE", "SEARCH")  # fmt: skip


class HttpMethods(_Http):
    """The methods the server says it supports (``Allow`` or ``Public`` of an OPTIONS
    reply); with neither, GET, HEAD, POST and OPTIONS are each tried and those answered
    with a status below 400 listed, as nmap does::

        | http-methods:
        |_  Supported Methods: GET HEAD POST OPTIONS
        | http-methods:
        |   Supported Methods: GET HEAD PUT DELETE OPTIONS
        |_  Potentially risky methods: PUT DELETE

    Data: tables ``Supported Methods`` and ``Potentially risky methods`` of keyless elems.
    As in nmap, ``Supported Methods`` shows only when verbose, which a script named in
    ``--script`` is (``-sC``/``-A`` select it by category: only risky methods show, and
    nothing when there are none).
    """

    id = "http-methods"
    categories = ("default", "safe")

    async def run(self, ctx: Context) -> Output | None:
        r = await ctx.http("OPTIONS", ctx.arg("url-path", "/") or "/", max_body=0)
        allow = r.header("Allow") or r.header("Public")
        if allow:
            methods = [m.strip().upper() for m in allow.split(",") if m.strip()]
        else:
            methods = []
            for m in ("GET", "HEAD", "POST", "OPTIONS"):
                resp = r if m == "OPTIONS" else await ctx.http(m, "/", max_body=0)
                if resp.status < 400:
                    methods.append(m)
        methods = list(dict.fromkeys(methods))
        if not methods:
            return None
        data: list[list[Any]] = []
        text = []
        if ctx.verbosity:  # as nmap: the full list only when verbose (or named in --script)
            data.append(["Supported Methods", [[None, m] for m in methods]])
            text.append(f"  Supported Methods: {' '.join(methods)}")
        risky = [m for m in methods if m in RISKY]
        if risky:
            data.append(["Potentially risky methods", [[None, m] for m in risky]])
            text.append(f"  Potentially risky methods: {' '.join(risky)}")
        if not text:
            return None  # nmap prints nothing: no risky method, and not verbose
        return Output("\n" + "\n".join(text), data)


class HttpRobots(_Http):
    """The ``Disallow`` entries of /robots.txt (RFC 9309)::

        | http-robots.txt: 2 disallowed entries
        |_/admin /private

    Nothing when there is no robots.txt or it disallows nothing. No structured data
    (nmap's neither).
    """

    id = "http-robots.txt"
    categories = ("default", "discovery", "safe")

    async def run(self, ctx: Context) -> Output | None:
        r = await ctx.http("GET", "/robots.txt")
        if r.status != 200:
            return None
        entries = []
        for line in r.body.decode("utf-8", "replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "disallow":
                value = value.split("#")[0].strip()
                if value:
                    entries.append(value)
        if not entries:
            return None
        noun = "entry" if len(entries) == 1 else "entries"
        return Output(f"{len(entries)} disallowed {noun} \n{' '.join(entries)}")


class HttpFavicon(_Http):
    """Hashes of /favicon.ico: MD5 (nmap's; named when an installed nmap's
    ``favicon-db`` knows it) and the MurmurHash3 of its base64 that Shodan indexes
    (``http.favicon.hash``)::

        |_http-favicon: Unknown favicon MD5: 6C6159652E8A579A79611AF479F63517
        |_http-favicon: nginx

    As nmap, the body is hashed whatever it is when the status is 200 (a server that
    answers every path with a page gets that page's hash). Data: ``md5`` and ``mmh3``
    (a signed 32-bit integer, as Shodan writes it).
    """

    id = "http-favicon"
    categories = ("default", "discovery", "safe")

    async def run(self, ctx: Context) -> Output | None:
        r, _ = await _get(ctx, "/favicon.ico", redirects=3)
        if r.status != 200 or not r.body:
            return None
        md5 = hashlib.md5(r.body).hexdigest().upper()
        data: list[list[Any]] = [["md5", md5]]
        try:
            import mmh3

            data.append(["mmh3", str(mmh3.hash(base64.encodebytes(r.body)))])
        except ImportError:  # optional: the MD5 is nmap's answer anyway
            pass
        name = _favicon_db().get(md5)
        return Output(name if name else f"Unknown favicon MD5: {md5}", data)


def _favicon_db() -> dict[str, str]:
    """MD5 -> name from an installed nmap's favicon database (read, never shipped)."""
    global _FAVICONS
    if _FAVICONS is None:
        _FAVICONS = {}
        for path in ("/usr/share/nmap/nselib/data/favicon-db",
                     "/usr/local/share/nmap/nselib/data/favicon-db"):  # fmt: skip
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        if line.startswith("#") or "," not in line:
                            continue
                        md5, _, name = line.strip().partition(",")
                        _FAVICONS[md5.upper()] = name
                break
            except OSError:
                continue
    return _FAVICONS


_FAVICONS: dict[str, str] | None = None

SCRIPTS = [HttpTitle(), HttpServerHeader(), HttpHeaders(), HttpMethods(), HttpRobots(),
           HttpFavicon()]  # fmt: skip
