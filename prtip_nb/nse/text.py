"""Script output as nmap's normal output prints it, and the CLI's script options.

    80/tcp open  http    nginx 1.22.1
    |_http-title: real nginx
    | ssh-hostkey:
    |_  256 d73867ae00009ab516dd8eff4dfa49d0 (ED25519)
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import Any


def script_lines(script_id: str, output: str | None) -> list[str]:
    """One script's ``|``/``|_`` lines (nmap drops the output's final line break)."""
    text = f"{script_id}: {(output or '').rstrip(chr(10))}"
    parts = text.split("\n")
    if len(parts) == 1:
        return [f"|_{parts[0]}"]
    return [f"| {p}" for p in parts[:-1]] + [f"|_{parts[-1]}"]


def by_host(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(str(r["host"]), []).append(r)
    return out


def interleave(lines: list[str], rows: list[Mapping[str, Any]] | None) -> list[str]:
    """``lines`` of one host's report with each port's scripts under its row
    (a row starting ``<port>/<proto>``) and host scripts at the end."""
    if not rows:
        return lines
    port_rows: dict[str, list[Mapping[str, Any]]] = {}
    host_rows = []
    for r in rows:
        if r["phase"] == "port":
            port_rows.setdefault(f"{r['port']}/{r['proto']}", []).append(r)
        else:
            host_rows.append(r)
    out: list[str] = []
    for line in lines:
        out.append(line)
        head = line.split(" ", 1)[0]
        for r in port_rows.pop(head, ()):
            out.extend(script_lines(r["id"], r["output"]))
    if host_rows:
        out += ["", "Host script results:"]
        for r in host_rows:
            out.extend(script_lines(r["id"], r["output"]))
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """--script, -sC, --script-args, --script-timeout, -A on the scan command."""
    p.add_argument("--script", action="append", metavar="SCRIPTS",
                   help="run scripts after the scan (and -sV): names, categories, 'default', "
                   "expressions such as '(default or safe) and not intrusive', or a file "
                   "./mycheck.py; repeatable")  # fmt: skip
    p.add_argument("-sC", dest="default_scripts", action="store_true",
                   help="run the default scripts (--script default)")
    p.add_argument("--script-args", metavar="ARGS",
                   help="arguments for the scripts: key=value,id.key=value,...")
    p.add_argument("--script-timeout", type=float, metavar="SECONDS",
                   help="cap every script run at this many seconds")
    p.add_argument("-A", dest="aggressive", action="store_true",
                   help="nmap's -A: -sV -sC -O --traceroute")


def options(args: argparse.Namespace) -> dict[str, Any]:
    """ScanConfig options from the parsed script flags."""
    chosen = list(args.script or [])
    if args.default_scripts or args.aggressive:
        chosen.insert(0, "default")
    out: dict[str, Any] = {}
    if chosen:
        out["scripts"] = tuple(chosen)
    if args.script_args:
        out["script_args"] = args.script_args
    if args.script_timeout is not None:
        out["script_timeout"] = args.script_timeout
    if args.aggressive:
        out["service"] = True
    return out
