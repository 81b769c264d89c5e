"""Regenerate the nmap XML corpus of this folder with Debian's nmap, on labs of our own.

Run as root, inside a private network and mount namespace (never outside one):

    scripts/in-netns unshare --mount python tests/data/nmap/generate.py

Targets: real daemons on 127.0.0.1 of the private namespace (``lab.daemons``) and a
``VethLab`` (198.51.100.0/24, 203.0.113.0/24, 2001:db8::/64). Names come from an /etc/hosts
bind-mounted in this mount namespace only ("user" hostnames) and from a dnsmasq on
127.0.0.1 that answers the lab's PTR queries ("PTR" hostnames). Every nmap run is bounded
by ``--host-timeout`` and a subprocess timeout. The hand-written ``odd-*.xml`` files are not
made here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from prtip_nb.lab.daemons import start_daemons  # noqa: E402
from prtip_nb.lab.netns import in_private_netns  # noqa: E402
from prtip_nb.lab.veth import VethLab  # noqa: E402

UP4, UP6, ROUTED = "198.51.100.10", "2001:db8::10", "203.0.113.5"
DOWN4 = "198.51.100.99"
COMMON = ["--host-timeout", "60s", "--max-retries", "1", "-T4", "--dns-servers", "127.0.0.1"]


def nmap(name: str, *args: str) -> None:
    out = HERE / name
    cmd = ["nmap", *COMMON, *args, "-oX", str(out)]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, timeout=300, capture_output=True)
    # Tidy what would differ between machines, and nothing else.
    text = out.read_text()
    out.write_text(text.replace(str(HERE) + "/", ""))


def main() -> None:
    if os.environ.get("PRTIP_NB_NETNS") != "1" and not in_private_netns():
        sys.exit("run me under scripts/in-netns (a private network namespace)")
    with tempfile.TemporaryDirectory() as tmp:
        hosts = Path(tmp) / "hosts"
        hosts.write_text(f"127.0.0.1 localhost\n{UP4} web.lab.example.test\n"
                         f"{UP6} web6.lab.example.test\n")  # fmt: skip
        subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)
        dns = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--port=53", "--listen-address=127.0.0.1",
             "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
             f"--pid-file={tmp}/dnsmasq.pid",
             f"--host-record=web.lab.example.test,{UP4}",
             f"--host-record=router.lab.example.test,{ROUTED}",
             f"--host-record=web6.lab.example.test,{UP6}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            with start_daemons(Path(tmp), ["nginx", "nginx-tls", "sshd", "redis", "vsftpd"]):
                nmap("scripts.xml", "-sT", "-Pn", "-n", "-p", "21,22,80,443,6379",
                     "--script", "ssl-cert,ssh-hostkey,http-headers,http-title,redis-info,"
                     "ssl-enum-ciphers", "127.0.0.1")  # fmt: skip
                nmap("a-localhost.xml", "-A", "-p", "22,80,443,6379,9", "127.0.0.1")
                nmap("udp.xml", "-sU", "-sV", "-p", "53,69,123,161,500", "127.0.0.1")
            with VethLab(up=[UP4, UP6], routed_up=[ROUTED], tcp=[22, 80, 443]):
                nmap("os-trace.xml", "-sS", "-O", "--traceroute", "-v", "-p", "1,22,80,443",
                     "web.lab.example.test", ROUTED, DOWN4)  # fmt: skip
                nmap("sweep.xml", "-sn", "-v", "198.51.100.8/29", ROUTED, "203.0.113.6")
                nmap("fin.xml", "-sF", "-p", "1-100,443", UP4)
                nmap("ipv6.xml", "-6", "-sS", "-p", "22,80,443,8080", "web6.lab.example.test")
                # The lab's listeners accept and say nothing: -sV waits, the host times out.
                nmap("timedout.xml", "-6", "-sS", "-sV", "-p", "22", "--host-timeout", "5s",
                     "web6.lab.example.test")  # fmt: skip
        finally:
            dns.terminate()
            dns.wait(5)


if __name__ == "__main__":
    main()
