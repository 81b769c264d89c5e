"""The ProRT-IP report's scenarios, as commands for prtip-nb and for nmap.

Each scenario scans the lab that ``prtip_nb.profile`` starts inside its private network
namespace (127.0.0.1 and ::1 of that namespace only).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    name: str
    ports: str
    n_ports: int
    target: str = "127.0.0.1"
    rate: int | None = None
    service: bool = False

    def syn_available(self) -> bool:
        return importlib.util.find_spec("prtip_nb.engine.syn") is not None

    def method_flag(self) -> str:
        # The report profiles SYN scans; until this install has them, connect scans stand in
        # (the result's "method" column says which ran).
        return "-sS" if self.syn_available() else "-sT"

    def prtip_cmd(self) -> list[str]:
        cmd = [sys.executable, "-m", "prtip_nb.cli", "scan", self.method_flag(), "-p", self.ports,
               self.target, "--no-progress", "-T4"]
        if self.target == "::1":
            cmd.append("-6")
        if self.rate is not None:
            cmd += ["--rate", str(self.rate)]
        if self.service:
            cmd.append("-sV")
        return cmd

    def nmap_cmd(self, nmap: str) -> list[str]:
        cmd = [nmap, self.method_flag(), "-p", self.ports, "-n", "-Pn", "-T4", self.target]
        if self.target == "::1":
            cmd.append("-6")
        if self.rate is not None:
            cmd += ["--min-rate", str(self.rate), "--max-rate", str(self.rate)]
        if self.service:
            cmd.append("-sV")
        return cmd


#: The rows of the ProRT-IP profiling report (memory table, plus 65K and the rate limit).
REPORT: tuple[Scenario, ...] = (
    Scenario("syn-100", "1-100", 100),
    Scenario("syn-1k", "1-1000", 1000),
    Scenario("syn-10k", "1-10000", 10000),
    Scenario("syn-65k", "1-65535", 65535),
    Scenario("service-4", "80,443,8080,8443", 4, service=True),
    Scenario("ipv6-1k", "1-1000", 1000, target="::1"),
    Scenario("rate-50k", "1-65535", 65535, rate=50000),
)
SMALL: tuple[Scenario, ...] = REPORT[:2]

BY_NAME = {s.name: s for s in REPORT}


def resolve(scenarios: str | list[str] | tuple[Scenario, ...]) -> tuple[Scenario, ...]:
    """``"report"``, ``"small"``, a list of names, or Scenario objects."""
    if scenarios == "report":
        return REPORT
    if scenarios == "small":
        return SMALL
    if isinstance(scenarios, str):
        scenarios = [scenarios]
    out = []
    for item in scenarios:
        if isinstance(item, Scenario):
            out.append(item)
        elif item in BY_NAME:
            out.append(BY_NAME[item])
        else:
            raise ValueError(
                f"unknown profile scenario {item!r}; known: report, small, {', '.join(BY_NAME)}"
            )
    return tuple(out)
