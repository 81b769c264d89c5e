"""``Lab``: a set of local target services whose ground truth is known exactly.

    with Lab(host="127.0.0.1", tcp=50, http=8080, https=8443, ssh=2222, smtp=2525, ftp=2121,
             udp_echo=5353, closed=5, base_port=20000) as lab:
        lab.truth        # the PORTS schema as a DataFrame: what a perfect scan would report
        lab.open_ports   # {"tcp": [...], "udp": [...]}

``hostile={"endless": 0, "slow": 0, "bigchain": 0, "wrapped": 0, "redos": 0}`` adds the
services a scanner must survive (``lab/hostile.py``; ``lab.hostile`` maps kind to port).

A service argument of ``None`` leaves the service out; a port of ``0`` lets the kernel pick a
free one (use that on a shared loopback, where fixed ports can clash with other tenants).
``closed`` ports are bound but never listened on: the kernel answers SYNs there with RST,
and no one else can bind them while the lab runs, so "closed" is ground truth too.

Options are checked before anything is bound; a failed bind closes whatever had already
been bound and raises ``ConfigError``. pandas and pyarrow are imported only by the
properties that need them, so the lab stays cheap to import and to run in its own process.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import resource
import socket
import ssl
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from prtip_nb.errors import ConfigError, PrtipError
from prtip_nb.lab.loop import EventLoop
from prtip_nb.lab.services import KINDS, bind, serve

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from prtip_nb.lab.hostile import HostileServer
    from prtip_nb.lab.tlscert import LabCert

#: The demo's standard layout; ``Lab.defaults()`` builds a lab from it.
DEFAULT_LAYOUT: Mapping[str, Any] = MappingProxyType(
    {
        "host": "127.0.0.1",
        "tcp": 20,
        "http": 8080,
        "https": 8443,
        "ssh": 2222,
        "smtp": 2525,
        "ftp": 2121,
        "udp_echo": 5353,
        "closed": 5,
        "base_port": 20000,
    }
)
SERVICES = ("http", "https", "ssh", "smtp", "ftp", "udp_echo")  # one port each
FD_MARGIN = 64  # descriptors left for the rest of the process

_HINT_NETNS = "or run the lab in a private network namespace (prtip_nb.lab.run_in_private_netns)"


class _Port(NamedTuple):
    kind: str  # a KINDS key, or "closed"
    proto: str
    port: int


class Lab:
    """Local services with known ground truth; a context manager. See the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        tcp: int | Sequence[int] | None = None,
        http: int | None = None,
        https: int | None = None,
        ssh: int | None = None,
        smtp: int | None = None,
        ftp: int | None = None,
        udp_echo: int | None = None,
        closed: int | Sequence[int] | None = None,
        base_port: int = 20000,
        idle_timeout: float = 30.0,
        hostile: Mapping[str, int] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host = _check_host(host)
        self.family = 6 if ":" in self.host else 4
        given = dict(http=http, https=https, ssh=ssh, smtp=smtp, ftp=ftp, udp_echo=udp_echo)
        self._services = {k: _check_port(k, v) for k, v in given.items() if v is not None}
        self._tcp = _check_ports("tcp", tcp)
        self._closed = _check_ports("closed", closed)
        self._base_port = _check_port("base_port", base_port)
        if not idle_timeout > 0:
            raise ConfigError("idle_timeout must be > 0 seconds", token=str(idle_timeout))
        self._idle_timeout = float(idle_timeout)
        # Hostile services (lab/hostile.py): kind -> port, for service-detection tests.
        self._hostile_spec = {k: _check_port(k, v) for k, v in (hostile or {}).items()}
        self._hostile: HostileServer | None = None
        self._check_layout()
        self._loop: EventLoop | None = None
        self._held: list[socket.socket] = []  # closed ports: bound, never listened on
        self._ports: list[_Port] | None = None  # kept after stop() for the truth
        self.cert: LabCert | None = None
        #: A PEM file with the certificate and key https serves; None: a fresh one at start.
        self._tls_cert = tls_cert

    @classmethod
    def defaults(cls, host: str | None = None, *, ephemeral: bool = False, **overrides: Any) -> Lab:
        """A lab with ``DEFAULT_LAYOUT``. ``ephemeral=True`` makes every port kernel-picked."""
        layout = dict(DEFAULT_LAYOUT)
        if ephemeral:
            layout.update({k: 0 for k in SERVICES}, base_port=0)
        if host is not None:
            layout["host"] = host
        layout.update(overrides)
        return cls(**layout)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Lab:
        """Bind every port, then serve them on one background thread. Idempotent."""
        if self._loop is not None:
            return self
        bound: list[tuple[_Port, socket.socket]] = []  # each socket lands here as it is made
        extra: list[_Port] = []  # hostile ports: their HostileServer owns the sockets
        loop: EventLoop | None = None
        try:
            tls = self._tls_context() if "https" in self._services else None
            for name, port in self._services.items():
                bound.append(self._bind(name, KINDS[name].proto, port))
            for name, spec in (("tcp", self._tcp), ("closed", self._closed)):
                if isinstance(spec, tuple):
                    for port in spec:
                        bound.append(self._bind(name, "tcp", port))
            for name, spec in (("tcp", self._tcp), ("closed", self._closed)):
                if isinstance(spec, int):
                    self._bind_run(name, spec, bound)
            loop = EventLoop(name=f"prtip-lab {self.host}", idle_timeout=self._idle_timeout)
            for entry, sock in bound:
                if entry.kind == "closed":
                    self._held.append(sock)
                else:
                    serve(loop, entry.kind, sock, tls)
            loop.start()
            if self._hostile_spec:
                from prtip_nb.lab.hostile import HostileServer

                self._hostile = HostileServer(self.host, self._hostile_spec).start()
                extra.extend(_Port(k, "tcp", p) for k, p in self._hostile.ports)
        except BaseException:
            if loop is not None:
                loop.stop()
            for _, sock in bound:
                sock.close()
            self._held.clear()
            raise
        self._loop = loop
        self._ports = sorted([*(e for e, _ in bound), *extra], key=lambda e: (e.proto, e.port))
        return self

    def stop(self) -> None:
        """Close every socket and end the service thread (within about a second)."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.stop(timeout=1.0)
        hostile, self._hostile = self._hostile, None
        if hostile is not None:
            hostile.stop()
        for sock in self._held:
            sock.close()
        self._held.clear()

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._loop is not None and self._loop.running

    @property
    def connections(self) -> int:
        """Connections being served right now (a gauge, for tests and demos)."""
        return self._loop.connections if self._loop is not None else 0

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        ports = self._ports or []
        return f"<Lab {self.host} {state}, {len(ports)} ports>"

    # -- ground truth -------------------------------------------------------------------

    @property
    def open_ports(self) -> dict[str, list[int]]:
        """Open ports by protocol: ``{"tcp": [...], "udp": [...]}``, both keys always."""
        out: dict[str, list[int]] = {"tcp": [], "udp": []}
        for e in self._layout():
            if e.kind != "closed":
                out[e.proto].append(e.port)
        return out

    @property
    def closed_ports(self) -> list[int]:
        """TCP ports held closed (bound, not listening)."""
        return [e.port for e in self._layout() if e.kind == "closed"]

    @property
    def tcp_ports(self) -> list[int]:
        """The plain TCP listeners."""
        return [e.port for e in self._layout() if e.kind == "tcp"]

    @property
    def services(self) -> dict[str, int]:
        """Port of each named service that runs, e.g. ``{"http": 8080, "udp_echo": 5353}``."""
        return {e.kind: e.port for e in self._layout() if e.kind in SERVICES}

    @property
    def hostile(self) -> dict[str, int]:
        """Port of each hostile service (``hostile=`` at construction), by kind."""
        return {e.kind: e.port for e in self._layout() if e.kind in self._hostile_spec}

    @property
    def table(self) -> pa.Table:
        """The ground truth as a pyarrow Table of ``schema.PORTS``, scan_id ``"lab"``."""
        from prtip_nb.lab.truth import truth_table

        return truth_table(self.host, self.family, self._layout(), self.cert)

    @property
    def truth(self) -> pd.DataFrame:
        """The ground truth as a DataFrame; every column a ``pd.ArrowDtype``."""
        import pandas as pd

        frame: pd.DataFrame = self.table.to_pandas(types_mapper=pd.ArrowDtype)
        return frame

    # -- internals ----------------------------------------------------------------------

    def _layout(self) -> list[_Port]:
        if self._ports is None:
            raise PrtipError("the lab has not been started: call start() or use `with Lab(...)`")
        return self._ports

    def _tls_context(self) -> ssl.SSLContext:
        from prtip_nb.lab.tlscert import load_cert, make_cert, server_context

        self.cert = make_cert(self.host) if self._tls_cert is None else load_cert(self._tls_cert)
        return server_context(self.cert)

    def _bind(self, name: str, proto: str, port: int) -> tuple[_Port, socket.socket]:
        try:
            sock = bind(self.host, port, proto, listen=name != "closed")
        except OSError as exc:
            raise self._bind_error(name, proto, port, exc) from exc
        return _Port(name, proto, sock.getsockname()[1]), sock

    def _bind_run(self, name: str, count: int, into: list[tuple[_Port, socket.socket]]) -> None:
        """Bind ``count`` ports from base_port up, skipping ports in use; all ephemeral if 0."""
        if self._base_port == 0:
            for _ in range(count):
                into.append(self._bind(name, "tcp", 0))
            return
        todo = count
        for port in range(self._base_port, 65536):  # bounded by the port space
            if todo == 0:
                return
            try:
                sock = bind(self.host, port, "tcp", listen=name != "closed")
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:  # someone else's port: skip it
                    continue
                raise self._bind_error(name, "tcp", port, exc) from exc
            into.append((_Port(name, "tcp", port), sock))
            todo -= 1
        if todo:
            raise ConfigError(
                f"only {count - todo} free TCP ports from {self._base_port} to 65535 "
                f"for {name}={count}",
                hint="lower base_port, or pass base_port=0 for kernel-picked ports",
            )

    def _bind_error(self, name: str, proto: str, port: int, exc: OSError) -> ConfigError:
        where = f"{self.host} port {port}/{proto} ({name})"
        if exc.errno == errno.EADDRINUSE:
            fix = (
                f"put 0 for {port} in {name}=[...]"
                if name in ("tcp", "closed")
                else f"pass {name}=0"
            )
            return ConfigError(
                f"{where} is already in use",
                token=str(port),
                hint=f"{fix} to let the kernel pick a free port, {_HINT_NETNS}",
            )
        if exc.errno == errno.EADDRNOTAVAIL:
            return ConfigError(
                f"{where}: {self.host} is not an address of this network namespace",
                token=self.host,
                hint="in a fresh namespace, bring lo up first (prtip_nb.lab.netns.lo_up)",
            )
        if exc.errno == errno.EACCES:
            return ConfigError(
                f"{where}: ports below 1024 need root or CAP_NET_BIND_SERVICE",
                token=str(port),
                hint="choose a port of 1024 or more, or 0",
            )
        return ConfigError(f"{where}: cannot bind: {exc.strerror or exc}", token=str(port))

    def _check_layout(self) -> None:
        explicit: dict[tuple[str, int], str] = {}
        for name, port in self._services.items():
            _claim(explicit, (KINDS[name].proto, port), name)
        for name, port in self._hostile_spec.items():
            _claim(explicit, ("tcp", port), name)
        for name, spec in (("tcp", self._tcp), ("closed", self._closed)):
            if isinstance(spec, tuple):
                for port in spec:
                    _claim(explicit, ("tcp", port), name)
        runs = sum(s for s in (self._tcp, self._closed) if isinstance(s, int))
        if self._base_port and runs > 65536 - self._base_port:
            raise ConfigError(
                f"{runs} ports do not fit between base_port {self._base_port} and 65535",
                hint="lower base_port, or pass base_port=0",
            )
        needed = len(self._services) + runs
        needed += sum(len(s) for s in (self._tcp, self._closed) if isinstance(s, tuple))
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and needed + FD_MARGIN > soft:
            raise ConfigError(
                f"the lab needs {needed} sockets but RLIMIT_NOFILE allows {soft} descriptors",
                hint="raise it (ulimit -n) or ask for fewer ports",
            )


def _claim(seen: dict[tuple[str, int], str], key: tuple[str, int], name: str) -> None:
    if key[1] == 0:  # kernel-picked ports never collide
        return
    if key in seen:
        raise ConfigError(
            f"port {key[1]}/{key[0]} is given to both {seen[key]} and {name}", token=str(key[1])
        )
    seen[key] = name


def _check_host(host: object) -> str:
    text = str(host) if isinstance(host, ipaddress.IPv4Address | ipaddress.IPv6Address) else host
    if not isinstance(text, str):
        raise ConfigError(f"lab host must be an IP address string, not {type(host).__name__}")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(
            "lab host must be an IP address literal",
            token=text,
            hint="e.g. 127.0.0.1 or ::1; the lab resolves no names",
        ) from None
    return str(addr)


def _check_port(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(
            f"{name} must be a port number 0..65535 (0: the kernel picks), not {value!r}",
            token=repr(value),
        )
    return value


def _check_ports(name: str, value: object) -> int | tuple[int, ...] | None:
    """``None``, a count of ports (int), or an explicit list of ports (tuple)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a count or a list of ports, not {value!r}")
    if isinstance(value, int):
        if not 0 <= value <= 65535:
            raise ConfigError(f"{name}={value}: a count of ports is 0..65535", token=str(value))
        return value
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return tuple(_check_port(f"{name} port", v) for v in value)
    raise ConfigError(f"{name} must be a count or a list of ports, not {value!r}")
