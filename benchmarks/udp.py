"""UDP scan benchmarks (issue 4): prtip_nb -sU against nmap -sU on one lab host.

udp-1000: ports 1-1000 of 198.51.100.2, a target namespace behind a veth pair
(prtip_nb.lab.veth) with UDP responders on 7, 53, 123, 161 and 500 and ports 900-909
dropped by nftables; the rest are closed. Both tools run with -Pn -n at their default
timing, alternately, in the same run. The ICMP rate limit of the target decides the
wall time, so the scenario runs twice, with the target's sysctls printed:

- ``unlimited``: ``net.ipv4.icmp_ratemask=0`` (no ICMP type is rate-limited): what the
  engines themselves cost;
- ``limited``: ``net.ipv4.icmp_ratelimit=10`` (one error per 10 ms per peer, burst 6;
  the kernel rounds it to jiffies) with the default mask: what adapting to a limit costs.
  Linux's default (1000 ms) would make nmap take about 1,000 s for these ports.

udp-icmp-cost: 50 closed ports with the target's default limits against the same with
``icmp_ratemask=0``, prtip_nb and nmap: the price of the rate limit itself.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .harness import Run, as_dict, nmap_path, save, summarise, timed

TARGET = "198.51.100.2"
ECHO = [7, 53, 123, 161, 500]
DROPPED = (900, 909)
SYSCTLS = ("ipv4/icmp_ratelimit", "ipv4/icmp_ratemask", "ipv4/icmp_msgs_per_sec",
           "ipv4/icmp_msgs_burst")
_SERVICE = textwrap.dedent(
    """
    import selectors, socket, sys
    sel = selectors.DefaultSelector()
    for port in map(int, sys.argv[2].split(",")):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((sys.argv[1], port))
        sel.register(s, selectors.EVENT_READ)
    print("READY", flush=True)
    while True:
        for key, _ in sel.select():
            data, addr = key.fileobj.recvfrom(4096)
            key.fileobj.sendto(data or b"\\n", addr)
    """
)
_OPEN = re.compile(r"^(\d+)/udp\s+open\s", re.M)
_CLOSED = re.compile(r"Not shown: (\d+) closed")


@contextmanager
def udp_lab(sysctls: dict[str, str]) -> Iterator[dict[str, str]]:
    """The lab with ``sysctls`` (paths under /proc/sys/net) set in the target namespace;
    yields every ICMP sysctl of the target as it ended up."""
    from prtip_nb.lab.veth import VethLab

    with VethLab(tag="ub") as lab:
        for path, value in sysctls.items():
            lab.target("sh", "-c", f"echo '{value}' > /proc/sys/net/{path}")
        lab.nft(f"table inet b {{\n  chain i {{\n    type filter hook input priority 0;\n"
                f"    udp dport {DROPPED[0]}-{DROPPED[1]} drop\n  }}\n}}\n")
        svc = lab.spawn([sys.executable, "-c", _SERVICE, TARGET, ",".join(map(str, ECHO))],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert svc.stdout is not None
        if svc.stdout.readline().strip() != "READY":
            raise RuntimeError("the lab's UDP services did not start")
        seen = {p: lab.target("cat", f"/proc/sys/net/{p}").strip() for p in SYSCTLS}
        yield seen


def _pair(ports: str, runs: int, truth: set[int], closed: int | None = None
          ) -> tuple[list[Run], dict[str, bool]]:
    """Both tools ``runs`` times; exact: the open ports are ``truth`` (and ``closed``
    ports are reported closed, when given)."""
    nmap = nmap_path()
    ours = ["prtip-nb", "scan", "-sU", "-p", ports, TARGET, "-Pn", "-n", "--no-progress"]
    theirs = [nmap, "-sU", "-p", ports, "-n", "-Pn", TARGET]
    results: list[Run] = []
    exact = {"prtip_nb": True, "nmap": True}
    for _ in range(runs):
        for cmd, tool in ((ours, "prtip_nb"), (theirs, "nmap")):
            out: list[str] = []
            r = timed(cmd, tool, timeout=1800, capture=out)
            r.open_ports = {int(p) for p in _OPEN.findall(out[0])}
            exact[tool] &= r.open_ports == truth
            if closed is not None:
                m = _CLOSED.search(out[0])
                exact[tool] &= m is not None and int(m[1]) == closed
            results.append(r)
            print(f"  {tool:9s} {r.wall_s:8.2f} s  {r.peak_rss_bytes / 2**20:6.1f} MiB  "
                  f"open={sorted(r.open_ports)}", flush=True)
    return results, exact


def udp_1000(runs: int = 3) -> dict[str, Any]:
    variants = {
        "unlimited": {"ipv4/icmp_ratemask": "0"},
        "limited": {"ipv4/icmp_ratelimit": "10"},
    }
    summary: dict[str, Any] = {"runs": runs}
    payload: dict[str, Any] = {"scenario": "udp-1000", "summary": summary}
    for name, sysctls in variants.items():
        with udp_lab(sysctls) as seen:
            print(f"  -- {name}: target sysctls {seen}", flush=True)
            results, exact = _pair("1-1000", runs, set(ECHO), closed=1000 - len(ECHO) - 10)
        s: dict[str, Any] = dict(summarise(results, "prtip_nb", "nmap"))
        s.update(sysctls=seen, exact=exact["prtip_nb"], nmap_exact=exact["nmap"])
        summary[name] = s
        payload[name] = [as_dict(r) for r in results]
        print(f"  {name}: prtip_nb {s['prtip_nb_median_s']:.2f} s, nmap "
              f"{s['nmap_median_s']:.2f} s, ratio {s['ratio']:.2f}, peak RSS "
              f"{s['prtip_nb_peak_rss_mib']:.1f} / {s['nmap_peak_rss_mib']:.1f} MiB",
              flush=True)
    summary["exact"] = all(summary[n]["exact"] for n in variants)
    print(f"  saved {save('udp-1000', payload)}")
    return payload


def udp_icmp_cost(runs: int = 1) -> dict[str, Any]:
    """50 closed ports (20001-20050): the target's default ICMP limits against none."""
    summary: dict[str, Any] = {"runs": runs}
    payload: dict[str, Any] = {"scenario": "udp-icmp-cost", "summary": summary}
    for name, sysctls in (("default", {}), ("ratemask=0", {"ipv4/icmp_ratemask": "0"})):
        with udp_lab(sysctls) as seen:
            print(f"  -- {name}: target sysctls {seen}", flush=True)
            results, exact = _pair("20001-20050", runs, set(), closed=50)
        summary[name] = {
            "sysctls": seen,
            "prtip_nb_s": statistics.median(r.wall_s for r in results if r.tool == "prtip_nb"),
            "nmap_s": statistics.median(r.wall_s for r in results if r.tool == "nmap"),
            "exact": exact["prtip_nb"], "nmap_exact": exact["nmap"],
        }
        print(f"  {name}: prtip_nb {summary[name]['prtip_nb_s']:.2f} s, nmap "
              f"{summary[name]['nmap_s']:.2f} s", flush=True)
        payload[name] = [as_dict(r) for r in results]
    summary["exact"] = all(summary[n]["exact"] for n in ("default", "ratemask=0"))
    print(f"  saved {save('udp-icmp-cost', payload)}")
    return payload
