"""Run ``nmap -sS`` (the accuracy oracle) and read every port's state from its XML."""

from __future__ import annotations

import subprocess
import tempfile
import xml.etree.ElementTree as ET

from prtip_nb.targets import parse_ports


def nmap_states(nmap: str, host: str, ports: str, *extra: str) -> dict[int, str]:
    """{port: state} for every port of ``ports``, as ``nmap -sS`` sees them on ``host``."""
    with tempfile.NamedTemporaryFile(suffix=".xml") as out:
        cmd = [nmap, "-sS", "-n", "-Pn", "-p", ports, "-oX", out.name, *extra,
               *(["-6"] if ":" in host else []), host]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        root = ET.parse(out.name).getroot()
    states: dict[int, str] = {}
    rest: list[str] = []
    for host_el in root.iter("host"):
        for port in host_el.iter("port"):
            states[int(port.get("portid", "0"))] = port.find("state").get("state")  # type: ignore[union-attr]
        rest += [e.get("state", "") for e in host_el.iter("extraports")]
    assert len(set(rest)) <= 1, f"nmap folded several states: {rest}"
    for _proto, port in parse_ports(ports):
        if port not in states:
            assert rest, f"nmap reported nothing for port {port}"
            states[port] = rest[0]
    return states


def nmap_grep_states(nmap: str, targets: list[str], ports: str, *extra: str
                     ) -> dict[tuple[str, int], str]:
    """{(host, port): state} from ``nmap -sS -oG -`` over several hosts: the ports nmap
    lists (with ``--open``, the open ones; folded states are not listed)."""
    out = subprocess.run([nmap, "-sS", "-n", "-Pn", "-p", ports, *extra, "-oG", "-", *targets],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    states: dict[tuple[str, int], str] = {}
    for line in out.splitlines():
        if "Ports:" not in line:
            continue
        host = line.split()[1]
        for item in line.split("Ports:")[1].split("\t")[0].split(","):
            port, state = item.strip().split("/")[:2]
            states[(host, int(port))] = state
    return states
