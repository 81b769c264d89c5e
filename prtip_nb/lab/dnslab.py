"""A reverse-DNS lab: dnsmasq serving PTR records for 198.51.100.0/24 behind a VethLab.

The DNS server is the lab's gateway, ``DNS_SERVER`` (198.51.100.2), in the lab's child
namespace; the scanner reaches it over the veth pair and nothing else exists. What each
address gets is set by ``DnsLab.layout`` (``default_layout()`` unless given), one of:

- ``"host"``: a ``host-record`` (PTR and A): the name is forward-confirmed;
- ``"ptr"``: a PTR record only (its name has no A record: not confirmed);
- ``"alias"``: a PTR whose name's A record is another address (not confirmed);
- ``"nx"``: nothing: dnsmasq is authoritative for the zone (``--local``) and says NXDOMAIN;
- ``"drop"``: the query is dropped (an nftables rule on the first label of its name):
  the resolver retries and gives up, a timeout.

A few IPv6 names (``V6_NAMES``) live under 2001:db8::/64 as host records.

>>> with DnsLab(up=["198.51.100.10"]) as lab:               # doctest: +SKIP
...     pn.scan("198.51.100.10", ports="80", dns_servers=[lab.server]).hosts
"""

from __future__ import annotations

import ipaddress
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from prtip_nb.lab.veth import GATEWAY4, GATEWAY6, VethLab

__all__ = ["DNS_SERVER", "DNS_SERVER6", "DOMAIN", "V6_NAMES", "DnsLab", "default_layout"]

DNS_SERVER, DNS_SERVER6 = GATEWAY4, GATEWAY6
DOMAIN = "lab.test"
PREFIX = "198.51.100."
#: IPv6 host records: address -> name.
V6_NAMES = {"2001:db8::10": f"six10.{DOMAIN}", "2001:db8::2": f"gw6.{DOMAIN}"}
START_TIMEOUT_S = 5.0


def default_layout() -> dict[int, str]:
    """The last octet -> kind of every address of the /24 (see the module docstring).

    Mostly host records, with every kind represented several times: ``.0`` and ``.255``
    too (nmap -sL resolves them like any other address)."""
    layout = {n: "host" for n in range(256)}
    for n in (3, 33, 99, 177):
        layout[n] = "ptr"
    for n in (4, 44, 144):
        layout[n] = "alias"
    for n in (5, 55, 155, 205, 255):
        layout[n] = "nx"
    for n in (6, 66, 166):
        layout[n] = "drop"
    return layout


def name_of(n: int) -> str:
    return f"h{n}.{DOMAIN}"


class DnsLab(VethLab):
    """A VethLab whose gateway runs dnsmasq with the PTR records of ``layout``.

    ``expected()`` is the truth: address -> (name or None, forward-confirmed or None).
    """

    def __init__(self, up: Sequence[str] = (), routed_up: Sequence[str] = (), *,
                 layout: Mapping[int, str] | None = None, tcp: Sequence[int] = (),
                 tag: str | None = None) -> None:
        super().__init__(up, routed_up, tcp=tcp, tag=tag)
        self.layout = dict(default_layout() if layout is None else layout)
        bad = {k for k in self.layout.values()} - {"host", "ptr", "alias", "nx", "drop"}
        if bad:
            raise ValueError(f"unknown record kinds {sorted(bad)}")
        self.server = DNS_SERVER
        self.server6 = DNS_SERVER6
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def expected(self) -> dict[str, tuple[str | None, bool | None]]:
        """address -> (the name a resolver should report, whether it is confirmed)."""
        out: dict[str, tuple[str | None, bool | None]] = {}
        for n, kind in sorted(self.layout.items()):
            addr = f"{PREFIX}{n}"
            if kind in ("nx", "drop"):
                out[addr] = (None, None)
            else:
                out[addr] = (name_of(n), kind == "host")
        for addr, name in V6_NAMES.items():
            out[str(ipaddress.ip_address(addr))] = (name, True)
        return out

    def _conf(self) -> str:
        lines = ["no-resolv", "no-hosts", "bind-interfaces", "port=53",
                 f"listen-address={DNS_SERVER}", f"listen-address={DNS_SERVER6}",
                 "local=/100.51.198.in-addr.arpa/", f"local=/{DOMAIN}/",
                 "local=/0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa/",
                 "cache-size=0", "local-ttl=60"]
        for n, kind in sorted(self.layout.items()):
            addr, name = f"{PREFIX}{n}", name_of(n)
            rev = ipaddress.ip_address(addr).reverse_pointer
            if kind in ("host", "drop"):  # a dropped query would have had an answer
                lines.append(f"host-record={name},{addr}")
            elif kind == "ptr":
                lines.append(f"ptr-record={rev},{name}")
            elif kind == "alias":
                lines.append(f"ptr-record={rev},{name}")
                lines.append(f"address=/{name}/{PREFIX}{(n + 1) % 256}")
        for addr, name in V6_NAMES.items():
            lines.append(f"host-record={name},{addr}")
        return "\n".join(lines) + "\n"

    def _drop_rules(self) -> str:
        """nftables: drop queries whose first label is a "drop" address's last octet."""
        rules = []
        for n, kind in sorted(self.layout.items()):
            if kind != "drop":
                continue
            label = str(n).encode()
            value = (bytes([len(label)]) + label).hex()
            bits = 8 * (len(label) + 1)
            # UDP header (8 bytes) + DNS header (12): the question's name at bit 160.
            rules.append(f"udp dport 53 @th,160,{bits} 0x{value} drop")
        if not rules:
            return ""
        body = "\n    ".join(rules)
        return ("table inet dnslab {\n  chain in {\n    type filter hook input priority 0;\n"
                f"    {body}\n  }}\n}}\n")

    def __enter__(self) -> DnsLab:
        super().__enter__()
        try:
            self._start_dns()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        super().close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _start_dns(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="prtip-dnslab-")
        conf = Path(self._tmp.name) / "dnsmasq.conf"
        conf.write_text(self._conf())
        drop = self._drop_rules()
        if drop:
            self.nft(drop)
        log = open(Path(self._tmp.name) / "dnsmasq.log", "wb")  # noqa: SIM115
        self.spawn(["dnsmasq", "--keep-in-foreground", f"--conf-file={conf}",
                    f"--pid-file={self._tmp.name}/dnsmasq.pid", "--user=root"],
                   stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self._wait_dns()

    def _wait_dns(self) -> None:
        """Until dnsmasq answers a PTR query for the gateway (≤ START_TIMEOUT_S)."""
        import socket

        from prtip_nb.probes import dns

        query = dns.build_query(1, ipaddress.ip_address(DNS_SERVER).reverse_pointer, dns.PTR)
        deadline = time.monotonic() + START_TIMEOUT_S
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.1)
            while time.monotonic() < deadline:
                try:
                    s.sendto(query, (DNS_SERVER, 53))
                    if dns.parse_reply(s.recv(4096)) is not None:
                        return
                except OSError:
                    time.sleep(0.05)
        log = Path(self._tmp.name if self._tmp else "/nonexistent") / "dnsmasq.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        raise RuntimeError(f"the lab's dnsmasq did not answer within {START_TIMEOUT_S} s: "
                           f"{text.strip()[-400:]}")
