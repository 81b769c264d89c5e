"""The ``prtip-nb scan`` command line a stored config stands for: the ``scan`` table's
``args`` and the nmap XML's ``<nmaprun args>``.

Apart from the XML writer (``_nmap_writer``) because every scan's result builds its
``scan`` row from it: importing the writer (xml.etree, the inventory and TLS helpers) cost
4-10 ms of each scan, which never writes XML unless asked (-oX).
"""

from __future__ import annotations

from typing import Any

from prtip_nb.config import upgrade_json

__all__ = ["asked", "command_line", "is_discovery"]


def is_discovery(cfg: dict[str, Any]) -> bool:
    """True for a ping sweep's config: ours (``ping_only``, or ``extra.discovery`` in one
    stored before that field) or an imported ``-sn``."""
    if cfg.get("source") == "nmap-xml":
        return not cfg.get("scaninfo") and any(
            w in ("-sn", "-sP") for w in str(cfg.get("args") or "").split())
    return upgrade_json(cfg).get("ping_only") is True


def asked(cfg: dict[str, Any]) -> Any:
    """The PortSet a prtip_nb scan asked for (unprefixed ports are UDP in a -sU scan)."""
    from prtip_nb.targets import parse_ports

    return parse_ports(cfg.get("ports"), top_ports=cfg.get("top_ports"),
                       default_proto="udp" if cfg.get("method") == "udp" else "tcp")


def command_line(cfg: dict[str, Any]) -> str:
    """The ``prtip-nb scan`` command line that a prtip_nb config stands for."""
    from prtip_nb.errors import PortSpecError

    words = ["prtip-nb", "scan"]
    if is_discovery(cfg):
        words.append("-sn")
    elif upgrade_json(cfg).get("list_only") is True:
        words.append("-sL")
    else:
        try:
            udp = bool(asked(cfg).udp)
        except (PortSpecError, TypeError, ValueError):
            udp = False
        method = cfg.get("method")
        if method != "udp":
            words.append("-sS" if method == "syn" else "-sT")
        if udp or method == "udp":
            words.append("-sU")
        if cfg.get("ports"):
            words += ["-p", str(cfg["ports"])]
        if cfg.get("top_ports"):
            words += ["--top-ports", str(cfg["top_ports"])]
    return " ".join(words + [str(t) for t in cfg.get("targets") or ()])
