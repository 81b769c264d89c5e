"""Real Debian daemons as lab targets (tests/probes/test_real_daemons.py, benchmarks/sv.py).

Each daemon runs in the foreground on its usual port of 127.0.0.1, configured (keys,
certificate, pid files) from a temporary directory, in its own session so that teardown
kills it and its children. Only inside a private network namespace: these are real
servers, and ``start_daemons`` refuses to run anywhere else.

``start_daemons(tmp)`` starts the installed ones and yields ``{name: port}`` for those that
answered within 10 s. Ports below 1024 need root.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from prtip_nb.errors import ConfigError
from prtip_nb.lab.netns import in_private_netns

HOST = "127.0.0.1"
#: name -> (binary, port). One nginx serves both "nginx" (HTTP) and "nginx-tls" (HTTPS).
DAEMONS = {
    "nginx": ("nginx", 80),
    "nginx-tls": ("nginx", 443),
    "sshd": ("/usr/sbin/sshd", 22),
    "redis": ("redis-server", 6379),
    "exim": ("exim4", 25),
    "vsftpd": ("vsftpd", 21),
    "dnsmasq": ("dnsmasq", 53),
    "memcached": ("memcached", 11211),
}
#: Started only when named (the odd-ports lab): an rsync daemon and Dovecot's IMAP.
MORE = {
    "rsync": ("rsync", 873),
    "dovecot": ("/usr/sbin/dovecot", 143),
}
#: The Debian packages behind them (the Makefile's APT_PACKAGES installs these as root).
PACKAGES = ("nginx", "openssh-server", "redis-server", "exim4-daemon-light", "vsftpd", "dnsmasq",
            "memcached", "rsync", "dovecot-imapd")
START_TIMEOUT_S = 10.0


def installed(name: str) -> bool:
    binary = {**DAEMONS, **MORE}[name][0]
    if binary.startswith("/"):
        return os.access(binary, os.X_OK)
    return shutil.which(binary) is not None


def _nginx_conf(tmp: Path, http: Sequence[int], https: Sequence[int]) -> str:
    listen = [f"listen {HOST}:{p};" for p in http] + [f"listen {HOST}:{p} ssl;" for p in https]
    return f"""
daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/b; proxy_temp_path {tmp}/p; fastcgi_temp_path {tmp}/f;
  uwsgi_temp_path {tmp}/u; scgi_temp_path {tmp}/s;
  server {{
    {" ".join(listen)}
    ssl_certificate {tmp}/cert.pem; ssl_certificate_key {tmp}/key.pem;
    location / {{ default_type text/html; return 200 "<title>real nginx</title>"; }}
  }}
}}
"""


def _commands(tmp: Path, http: Sequence[int], https: Sequence[int],
              port: Mapping[str, int]) -> dict[str, list[str]]:  # fmt: skip
    from prtip_nb.lab.tlscert import make_cert

    cert = make_cert(HOST)  # self-signed, CN=prtip-lab.test: the TLS truth is known
    (tmp / "cert.pem").write_bytes(cert.cert_pem)
    fd = os.open(tmp / "key.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert.key_pem)
    (tmp / "nginx.conf").write_text(_nginx_conf(tmp, http, https))
    if not (tmp / "hostkey").exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "hostkey")],
                       check=True)  # fmt: skip
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    (tmp / "sshd_config").write_text(
        f"Port {port['sshd']}\nListenAddress {HOST}\nHostKey {tmp}/hostkey\n"
        f"PidFile {tmp}/sshd.pid\n"
        "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
    )
    Path("/var/run/vsftpd/empty").mkdir(parents=True, exist_ok=True)
    # Anonymous login to a read-only root with one file (the ftp-anon script's truth).
    (tmp / "ftp").mkdir(mode=0o755, exist_ok=True)
    (tmp / "ftp" / "readme.txt").write_text("prtip lab\n")
    (tmp / "vsftpd.conf").write_text(
        f"listen=YES\nlisten_ipv6=NO\nlisten_address={HOST}\nlisten_port={port['vsftpd']}\nbackground=NO\n"
        f"anonymous_enable=YES\nanon_root={tmp}/ftp\nno_anon_password=YES\n"
        "local_enable=YES\nsecure_chroot_dir=/var/run/vsftpd/empty\n"
        "seccomp_sandbox=NO\npasv_enable=YES\npasv_address=127.0.0.1\n"
    )
    (tmp / "rsyncd.conf").write_text(
        f"pid file = {tmp}/rsyncd.pid\nuse chroot = no\n[pub]\npath = {tmp}/ftp\nread only = yes\n"
    )
    (tmp / "dovecot.conf").write_text(_dovecot_conf(tmp, port["dovecot"]))
    return {
        "nginx": ["nginx", "-c", f"{tmp}/nginx.conf", "-p", f"{tmp}/", "-e", f"{tmp}/nginx.err"],
        "sshd": ["/usr/sbin/sshd", "-D", "-e", "-f", f"{tmp}/sshd_config"],
        "redis": ["redis-server", "--port", str(port["redis"]), "--bind", HOST, "--save", "",
                  "--appendonly", "no", "--daemonize", "no", "--dir", str(tmp)],
        # Debian's exim configuration listens on 127.0.0.1 and ::1 only.
        "exim": ["exim4", "-bdf", "-oX", str(port["exim"]), "-oP", f"{tmp}/exim.pid"],
        "vsftpd": ["vsftpd", f"{tmp}/vsftpd.conf"],
        "dnsmasq": ["dnsmasq", "--keep-in-foreground", f"--port={port['dnsmasq']}",
                    f"--listen-address={HOST}",
                    "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
                    f"--pid-file={tmp}/dnsmasq.pid"],
        "memcached": ["memcached", "-u", "nobody", "-l", HOST, "-p", str(port["memcached"]),
                      "-U", "0"],
        "rsync": ["rsync", "--daemon", "--no-detach", f"--address={HOST}",
                  f"--port={port['rsync']}", f"--config={tmp}/rsyncd.conf"],
        "dovecot": ["/usr/sbin/dovecot", "-F", "-c", f"{tmp}/dovecot.conf"],
    }  # fmt: skip


def _dovecot_conf(tmp: Path, port: int) -> str:
    """IMAP only, no TLS, its runtime and log files under ``tmp``; nobody logs in."""
    return f"""
base_dir = {tmp}/dovecot
state_dir = {tmp}/dovecot-state
log_path = {tmp}/dovecot.log
protocols = imap
listen = {HOST}
ssl = no
auth_mechanisms = plain
passdb {{
  driver = static
  args = password=nothing-works-here-{os.getpid()}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def _answers(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@contextmanager
def start_daemons(
    tmp: Path,
    names: Sequence[str] | None = None,
    *,
    http: Sequence[int] = (80,),
    https: Sequence[int] = (443,),
    ports: Mapping[str, int] | None = None,
) -> Iterator[dict[str, int]]:
    """Start the installed daemons among ``names`` (default: all of ``DAEMONS``; ``MORE``
    when named); yield {name: port} of those that came up. ``http``/``https``: the ports
    nginx listens on; ``ports``: other daemons' ports instead of their usual ones."""
    if os.environ.get("PRTIP_NB_NETNS") != "1" and not in_private_netns():
        raise ConfigError(
            "real daemons start only inside a private network namespace",
            hint="run under scripts/in-netns (make test / make bench do)",
        )
    wanted = [n for n in (names or list(DAEMONS)) if installed(n)]
    port = {n: p for n, (_, p) in {**DAEMONS, **MORE}.items()} | dict(ports or {})
    commands = _commands(tmp, http, https, port)
    procs: list[subprocess.Popen[bytes]] = []
    up: dict[str, int] = {}
    try:
        for name in dict.fromkeys(n.removesuffix("-tls") for n in wanted):
            with open(tmp / f"{name}.log", "wb") as log:
                procs.append(subprocess.Popen(commands[name], stdout=log, stderr=log,
                                              stdin=subprocess.DEVNULL,
                                              start_new_session=True))  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        extra = {"nginx": list(http), "nginx-tls": list(https)}
        for name in wanted:
            listen = extra.get(name, [port[name]])
            if all(_answers(p, deadline) for p in listen):
                up[name] = listen[0]
        yield up
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
