"""What service detection learns: per-connection replies, per-service state, the result row.

``Reply`` is one probe connection, ``Svc`` one port's running state (shared by its
concurrent connections on one event loop, so no locks), ``ServiceResult`` what a user sees:
``row()`` gives the ports-table columns (``ResultBuilder.add_services``), ``details()`` the
rest (HTTP status/title, TLS cipher/ALPN/fingerprint/key, notes) as JSON-able data for the
``ServiceDetected`` event.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .matcher import Budget
from .servicedb import Match, Probe
from .text import escape_bytes

if TYPE_CHECKING:
    from .matcher import ReplyMatcher
    from .tls import TlsInfo

BANNER_MAX = 256  # characters of escaped banner kept
TITLE_MAX = 120
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TCPWRAPPED_S = 3.0  # closed without a byte within this: tcpwrapped (as nmap says)

_STATUS = re.compile(rb"HTTP/(\d\.\d) (\d{3})")
_SERVER = re.compile(rb"\r\n[Ss]erver:[ \t]*([^\r\n]{0,200})")
_TITLE = re.compile(rb"<title[^>]{0,100}>([^<]{0,400})", re.IGNORECASE)


def http_facts(data: bytes) -> dict[str, Any] | None:
    """Status, Server header and <title> from the start of an HTTP reply (bounded regexes)."""
    m = _STATUS.match(data)
    if m is None:
        return None
    head = data.split(b"\r\n\r\n", 1)[0]
    server = _SERVER.search(head)
    title = _TITLE.search(data)
    return {
        "http_version": m[1].decode(),
        "status": int(m[2]),
        "server": escape_bytes(server[1].strip(), TITLE_MAX) if server else None,
        "title": escape_bytes(b" ".join(title[1].split()), TITLE_MAX) if title else None,
    }


def _micros(t: datetime) -> int:
    # Microseconds since the epoch, not a datetime: the builder's converter looks only at
    # a column's first value to spot datetimes, and that row may have no certificate.
    return (t - _EPOCH) // timedelta(microseconds=1)


def first_line(data: bytes) -> str:
    return escape_bytes(data.split(b"\n", 1)[0].rstrip(b"\r"), BANNER_MAX)


@dataclass(slots=True)
class Reply:
    """One connection's exchange: the first REGEX_WINDOW bytes of the reply, and how it ended."""

    probe: Probe
    tls: bool
    data: bytearray = field(default_factory=bytearray)
    total: int = 0  # bytes received, all of them
    match: Match | None = None
    eof: bool = False
    cut: bool = False  # the connection's hard deadline ended it
    refused: bool = False
    error: str | None = None
    handshake_ok: bool = False
    elapsed: float = 0.0
    matcher: ReplyMatcher | None = None  # incremental matching state, made at the first byte


@dataclass(slots=True)
class ServiceResult:
    """What detection found on one port: ``row()`` for the ports table, ``details()`` else."""

    host: str
    port: int
    proto: str = "tcp"
    service: str | None = None
    tunnel: str | None = None  # "ssl": the service ran inside TLS (nmap's ssl/<service>)
    product: str | None = None
    version: str | None = None
    extrainfo: str | None = None
    banner: str | None = None
    tls: TlsInfo | None = None
    http: dict[str, Any] | None = None
    probe: str | None = None  # whose reply matched
    soft: bool = False
    notes: list[str] = field(default_factory=list)
    bytes_read: int = 0
    elapsed: float = 0.0
    handshakes: int = 0  # connections opened on the port (0: never checked)

    @property
    def silent(self) -> bool:
        """The port said nothing at all: no byte, no TLS handshake."""
        return self.bytes_read == 0 and self.tls is None and self.service in (None, "tcpwrapped")

    @property
    def verified(self) -> bool | None:
        """True: data or a TLS handshake came back; None: no connection was made to check."""
        return None if self.handshakes == 0 else not self.silent

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "host": self.host, "proto": self.proto, "port": self.port,
            "service": self.service, "product": self.product, "version": self.version,
            "extrainfo": self.extrainfo, "banner": self.banner, "tunnel": self.tunnel,
            "verified": self.verified, "handshakes": min(self.handshakes, 255) or None,
        }  # fmt: skip
        if self.tls is not None:
            out["tls_version"] = self.tls.version
            cert = self.tls.cert
            if cert is not None:
                out.update(
                    tls_subject=cert.subject, tls_issuer=cert.issuer, tls_san=list(cert.san),
                    tls_not_after=_micros(cert.not_after), tls_self_signed=cert.self_signed,
                )  # fmt: skip
        return out

    def details(self) -> dict[str, Any]:
        return {
            "host": self.host, "port": self.port, "proto": self.proto,
            "service": self.service, "tunnel": self.tunnel, "product": self.product,
            "version": self.version, "probe": self.probe, "soft": self.soft, "http": self.http,
            "tls": None if self.tls is None else self.tls.to_dict(),
            "notes": self.notes, "bytes_read": self.bytes_read,
            "verified": self.verified, "handshakes": self.handshakes,
            "elapsed_s": round(self.elapsed, 4),
        }  # fmt: skip


class Svc:
    """One port's detection state, shared by its connections (all on one event loop)."""

    __slots__ = ("host", "port", "family", "end", "read", "capped", "chain_aborted", "refused",
                 "wrapped", "tls_tried", "tls", "banner", "http", "match", "match_tls", "soft",
                 "soft_tls", "cut_null", "notes", "budget", "timeouts", "handshakes")  # fmt: skip

    def __init__(self, host: str, port: int, end: float) -> None:
        self.host, self.port, self.end = host, port, end
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.read = 0
        self.capped = self.chain_aborted = self.refused = self.wrapped = False
        self.tls_tried = self.match_tls = self.soft_tls = self.cut_null = False
        self.tls: TlsInfo | None = None
        self.banner: str | None = None
        self.http: dict[str, Any] | None = None
        self.match: Match | None = None
        self.soft: Match | None = None
        self.notes: list[str] = []
        self.budget = Budget()  # regex CPU time, over all this port's replies
        self.timeouts: dict[str, None] = {}  # rules that ran out of time, in order, once
        self.handshakes = 0  # connections opened (LZR's count of handshakes to identify)

    def budget_left(self, now: float) -> bool:
        return now < self.end and not self.capped

    def take(self, r: Reply, *, null_probe: bool = False) -> bool:
        """Learn from a finished reply; True when detection of this port is over."""
        if null_probe:
            if r.data and self.banner is None:
                self.banner = first_line(bytes(r.data))
            self.cut_null = self.cut_null or (r.cut and r.total > 0)
        if self.http is None and r.data.startswith(b"HTTP/"):
            self.http = http_facts(bytes(r.data))
        if r.refused:
            self.refused = True
            return True
        if r.match is not None:
            if not r.match.soft:
                self.match, self.match_tls = r.match, r.tls
                return True
            if self.soft is None:
                self.soft, self.soft_tls = r.match, r.tls
        if null_probe and not r.tls and r.eof and r.total == 0 and r.elapsed < TCPWRAPPED_S:
            self.wrapped = True
            return True
        return self.capped or self.chain_aborted

    def result(self, elapsed: float) -> ServiceResult:
        if self.timeouts:
            self.notes.append("regex timeout: " + ", ".join(self.timeouts))
        if self.budget.exhausted:
            self.notes.append(f"regex budget of {self.budget.limit * 1e3:.0f} ms CPU spent: "
                              "matching stopped")  # fmt: skip
        m = self.match or self.soft
        in_tls = self.match_tls if self.match is not None else self.soft_tls
        res = ServiceResult(self.host, self.port, banner=self.banner, tls=self.tls,
                            http=self.http, bytes_read=self.read, elapsed=elapsed,
                            notes=list(self.notes), handshakes=self.handshakes)  # fmt: skip
        if m is not None:
            # Inside TLS, as nmap says it: service "http", tunnel "ssl" (printed ssl/http).
            if in_tls and m.service != "ssl":
                res.tunnel = "ssl"
            res.service, res.probe, res.soft = m.service, m.probe, m.soft
            if not m.soft:
                res.product, res.version, res.extrainfo = m.product, m.version, m.info
        elif self.wrapped:
            res.service = "tcpwrapped"
        elif self.tls is not None or self.chain_aborted:
            res.service = "ssl"
        if self.capped:
            res.notes.append("read cap reached: stopped reading")
        if self.chain_aborted:
            res.notes.append("TLS handshake over 100 kB (certificate chain): aborted")
        if self.cut_null:
            res.notes.append("banner cut at the connection deadline")
        if self.refused:
            res.notes.append("connection refused during detection")
        return res
