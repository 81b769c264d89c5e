"""Top-ports rankings: the project's own list, or nmap's when it is installed.

The shipped lists (``prtip_nb/data/top_ports_{tcp,udp}.txt``) are the project's own ranking;
their header explains where they come from. nmap's ``nmap-services`` is NPSL-licensed, so it
is never copied into the project, only read at run time when the caller asks for it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from prtip_nb.errors import PortSpecError

__all__ = ["SOURCES", "nmap_services_path", "port_ranking", "top_ports_list"]

SOURCES = ("builtin", "nmap")
PROTOS = ("tcp", "udp")
# nmap looks in $NMAPDIR first, then its install prefix; we follow the same order.
_NMAP_DIRS = ("/usr/share/nmap", "/usr/local/share/nmap")


def _check_proto(proto: str) -> str:
    p = proto.lower() if isinstance(proto, str) else proto
    if p not in PROTOS:
        raise PortSpecError(
            f"unknown protocol {proto!r}", token=str(proto), hint="valid form: 'tcp' or 'udp'"
        )
    return p


def nmap_services_path() -> Path | None:
    """Path of an installed nmap's ``nmap-services`` file, or None."""
    dirs = [os.environ["NMAPDIR"]] if os.environ.get("NMAPDIR") else []
    for d in [*dirs, *_NMAP_DIRS]:
        path = Path(d) / "nmap-services"
        if path.is_file():
            return path
    return None


def _data_text(name: str) -> str:
    """A file of ``prtip_nb/data``: read from the package's folder when it is one (an
    install or a checkout), else through importlib.resources (a zipped package). The
    folder first because importlib.resources loads zipfile on import: ~2 ms of every
    CLI scan's start, whose default ports are these lists."""
    path = Path(__file__).resolve().parent.parent / "data" / name
    if path.is_file():
        return path.read_text("utf-8")
    from importlib import resources

    return resources.files("prtip_nb").joinpath(f"data/{name}").read_text("utf-8")


@functools.cache
def _builtin(proto: str) -> tuple[int, ...]:
    text = _data_text(f"top_ports_{proto}.txt")
    ports: list[int] = []
    for line in text.splitlines():
        item = line.split("#", 1)[0].strip()
        if item:
            ports.append(int(item))
    return tuple(ports)


@functools.cache
def _nmap(proto: str) -> tuple[int, ...]:
    path = nmap_services_path()
    if path is None:
        raise PortSpecError(
            "nmap is not installed: its nmap-services file was not found in $NMAPDIR, "
            + " or ".join(_NMAP_DIRS),
            token="nmap",
            hint="install nmap (apt-get install nmap) or use source='builtin'",
        )
    rows: list[tuple[float, int]] = []
    seen: set[int] = set()
    for line in path.read_text("utf-8", errors="replace").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 3:
            continue
        port_s, _, p = fields[1].partition("/")
        try:
            port, freq = int(port_s), float(fields[2])
        except ValueError:
            continue
        if p == proto and port not in seen and 0 <= port <= 65535:
            seen.add(port)
            rows.append((-freq, port))
    # Most open-frequent first, ties by port number: nmap's own --top-ports order.
    return tuple(port for _, port in sorted(rows))


def port_ranking(proto: str = "tcp", *, source: str = "builtin") -> tuple[int, ...]:
    """The full ranking for ``proto``, most common first (cached after the first read)."""
    proto = _check_proto(proto)
    if source == "builtin":
        return _builtin(proto)
    if source == "nmap":
        return _nmap(proto)
    raise PortSpecError(
        f"unknown top-ports source {source!r}",
        token=str(source),
        hint="valid form: source='builtin' or source='nmap'",
    )


def top_ports_list(n: int, proto: str = "tcp", *, source: str = "builtin") -> tuple[int, ...]:
    """The first ``n`` ports of the ranking, in rank order."""
    ranking = port_ranking(proto, source=source)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(ranking):
        raise PortSpecError(
            f"top_ports={n!r} is out of range: the {source} {proto} ranking has "
            f"{len(ranking)} ports",
            token=str(n),
            hint=f"valid form: an integer from 1 to {len(ranking)}, like top_ports=100",
        )
    return ranking[:n]
