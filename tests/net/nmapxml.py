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
