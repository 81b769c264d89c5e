"""Service names guessed from port numbers, as nmap names a port before ``-sV`` runs.

nmap prints ``80/tcp open http`` from its port table, not from what the port said. The
charts and the report do the same, and mark the name as a guess until service detection
knows better. The table is nmap's ``nmap-services`` read at run time when nmap is installed
(it is NPSL-licensed, so it is never copied into the project), else the names written beside
the hand-ranked ports of the project's own top-ports lists (about 240 well-known ports).
"""

from __future__ import annotations

import functools
from importlib import resources

from prtip_nb.targets.toplist import nmap_services_path

__all__ = ["SOURCES", "port_names", "service_name"]

SOURCES = ("auto", "nmap", "builtin")


@functools.cache
def _builtin() -> dict[tuple[str, int], str]:
    names: dict[tuple[str, int], str] = {}
    for proto in ("tcp", "udp"):
        text = resources.files("prtip_nb").joinpath(f"data/top_ports_{proto}.txt")
        for line in text.read_text("utf-8").splitlines():
            number, _, comment = line.partition("#")
            number, name = number.strip(), comment.strip()
            if number.isdigit() and name:
                names.setdefault((proto, int(number)), name.split()[0])
    return names


@functools.cache
def _nmap() -> dict[tuple[str, int], str]:
    path = nmap_services_path()
    if path is None:
        return {}
    best: dict[tuple[str, int], tuple[float, str]] = {}
    for line in path.read_text("utf-8", errors="replace").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or fields[0] == "unknown":
            continue
        port_s, _, proto = fields[1].partition("/")
        try:
            key, freq = (proto, int(port_s)), float(fields[2]) if len(fields) > 2 else 0.0
        except ValueError:
            continue
        if key not in best or freq > best[key][0]:  # one name per port: the most frequent
            best[key] = (freq, fields[0])
    return {k: name for k, (_f, name) in best.items()}


def port_names(source: str = "auto") -> dict[tuple[str, int], str]:
    """{(proto, port): name}. ``auto``: nmap's table when installed, else the project's."""
    if source not in SOURCES:
        raise ValueError(f"unknown port-name source {source!r}: use one of {', '.join(SOURCES)}")
    if source == "builtin":
        return _builtin()
    table = _nmap()
    if source == "nmap" or table:
        return table
    return _builtin()


def service_name(proto: str, port: int, *, source: str = "auto") -> str | None:
    """The usual service on ``port``/``proto`` (``http`` for 80/tcp), or None."""
    return port_names(source).get((str(proto).lower(), int(port)))
