"""nmap XML subtrees <-> rows of the inventory tables: ``<script>``, ``<os>``, ``<trace>``.

The parser hands each of these elements over whole (an ``ElementTree.Element`` built from
expat events for that element only); the writer turns rows back into the same markup, in
nmap's element and attribute order. Both directions live here so that they stay each
other's inverse. Script data is stored as described in ``results.schema`` (SCRIPT DATA).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any

from prtip_nb.interop import _xml

# --- scripts --------------------------------------------------------------------------

Tree = list[list[Any]]  # [[key or None, str | Tree], ...]


def _tree(elem: ET.Element) -> Tree:
    out: Tree = []
    for child in elem:
        if child.tag == "elem":
            out.append([child.get("key"), child.text or ""])
        elif child.tag == "table":
            out.append([child.get("key"), _tree(child)])
    return out


def _leaves(tree: Tree, prefix: str, out: list[dict[str, str]]) -> None:
    n = 0
    for key, value in tree:
        if key is None:
            n += 1
            key = str(n)  # a keyless item: its place among keyless siblings, from 1
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, list):
            _leaves(value, path, out)
        else:
            out.append({"key": path, "value": value})


def tree_leaves(tree: Tree) -> list[dict[str, str]]:
    """The ``elements`` column of a script's tree: its leaves keyed by dotted path."""
    leaves: list[dict[str, str]] = []
    _leaves(tree, "", leaves)
    return leaves


def script_row(elem: ET.Element) -> dict[str, Any]:
    """id, output, data (JSON or None) and elements of a ``<script>`` element."""
    tree = _tree(elem)
    leaves = tree_leaves(tree)
    return {
        "id": elem.get("id", ""),
        "output": elem.get("output"),
        "data": json.dumps(tree, ensure_ascii=False) if tree else None,
        "elements": leaves or None,
    }


def _tree_xml(tree: Tree, parts: list[str]) -> None:
    for key, value in tree:
        k = "" if key is None else f' key="{_xml.attr(key)}"'
        if isinstance(value, list):
            parts.append(f"<table{k}>\n")
            _tree_xml(value, parts)
            parts.append("</table>\n")
        else:
            parts.append(f"<elem{k}>{_xml.text(value)}</elem>\n")


def script_xml(id_: str, output: str | None, data: str | None) -> str:
    """A ``<script>`` element as nmap writes it."""
    head = f'<script id="{_xml.attr(id_)}" output="{_xml.attr(output or "")}"'
    if not data:
        return head + "/>"
    parts = [head, ">"]
    _tree_xml(json.loads(data), parts)
    return "".join(parts) + "</script>"


# --- os -------------------------------------------------------------------------------


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None


def os_rows(elem: ET.Element) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(os table rows, hosts columns os_portused/os_fingerprint) of an ``<os>`` element."""
    rows = []
    for m in elem.iter("osmatch"):
        classes = [
            {
                "type": c.get("type"), "vendor": c.get("vendor"), "family": c.get("osfamily"),
                "generation": c.get("osgen"), "accuracy": _int(c.get("accuracy")),
                "cpe": [(cpe.text or "") for cpe in c.iter("cpe")],
            }
            for c in m.iter("osclass")
        ]  # fmt: skip
        rows.append({"name": m.get("name", ""), "accuracy": _int(m.get("accuracy")),
                     "line": _int(m.get("line")), "classes": classes})  # fmt: skip
    used = [
        {"state": u.get("state"), "proto": u.get("proto"), "port": _int(u.get("portid"))}
        for u in elem.iter("portused")
    ]
    prints = [f.get("fingerprint", "") for f in elem.iter("osfingerprint")]
    host = {"os_portused": used, "os_fingerprint": prints or None}
    return rows, host


def os_xml(matches: Iterable[Mapping[str, Any]], host: Mapping[str, Any]) -> str:
    """An ``<os>`` element from os rows and the host's os_portused/os_fingerprint."""
    out = ["<os>"]
    for u in host.get("os_portused") or ():
        out.append(f'<portused state="{_xml.attr(u["state"])}" proto="{_xml.attr(u["proto"])}" '
                   f'portid="{u["port"]}"/>\n')  # fmt: skip
    for m in matches:
        out.append(f'<osmatch name="{_xml.attr(m["name"])}" accuracy="{m["accuracy"]}" '
                   f'line="{m["line"]}">\n')  # fmt: skip
        for c in m["classes"] or ():
            attrs = "".join(
                f' {name}="{_xml.attr(c[key])}"'
                for name, key in (("type", "type"), ("vendor", "vendor"), ("osfamily", "family"),
                                  ("osgen", "generation"), ("accuracy", "accuracy"))
                if c[key] is not None
            )  # fmt: skip
            cpes = "".join(f"<cpe>{_xml.text(cpe)}</cpe>" for cpe in c["cpe"] or ())
            out.append(f"<osclass{attrs}>{cpes}</osclass>\n" if cpes else f"<osclass{attrs}/>\n")
        out.append("</osmatch>\n")
    for one in host.get("os_fingerprint") or ():
        out.append(f'<osfingerprint fingerprint="{_xml.attr(one)}"/>\n')
    return "".join(out) + "</os>\n"


# --- trace ----------------------------------------------------------------------------


def trace_rows(elem: ET.Element) -> list[dict[str, Any]]:
    """trace rows (without host) of a ``<trace>`` element; a hop's rtt is milliseconds."""
    port, proto = _int(elem.get("port")), elem.get("proto")
    rows = []
    for hop in elem.iter("hop"):
        rtt = hop.get("rtt")
        try:
            rtt_ms = float(rtt) if rtt not in (None, "--") else None
        except ValueError:
            rtt_ms = None
        rows.append({"ttl": _int(hop.get("ttl")), "address": hop.get("ipaddr"),
                     "rtt_ms": rtt_ms, "hostname": hop.get("host"), "probe_port": port,
                     "probe_proto": proto})  # fmt: skip
    return rows


def trace_xml(hops: list[Mapping[str, Any]]) -> str:
    first = hops[0]
    attrs = "".join(
        f' {name}="{_xml.attr(first[key])}"'
        for name, key in (("port", "probe_port"), ("proto", "probe_proto"))
        if first[key] is not None
    )
    out = [f"<trace{attrs}>\n"]
    for h in hops:
        a = f'<hop ttl="{h["ttl"]}"'
        if h["ipaddr"] if "ipaddr" in h else h["address"]:
            a += f' ipaddr="{_xml.attr(h["address"])}"'
        if h["rtt_ms"] is not None:
            a += f' rtt="{h["rtt_ms"]:.2f}"'
        if h["hostname"]:
            a += f' host="{_xml.attr(h["hostname"])}"'
        out.append(a + "/>\n")
    return "".join(out) + "</trace>\n"
