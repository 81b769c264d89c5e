"""Issue 16: a regex-bomb lab next to a benign SSH service, nmap's probe database loaded.

Twelve lab ports send 4 KiB replies crafted for named slow rules of the installed nmap's
``nmap-service-probes`` (``prtip_nb.lab.hostile.BOMBS``, read at run time, never copied):

- ``^\\[ANGLESTATUS.*\\[XYZSTATUS.*...`` (bruker-axs, NULL probe) and
  ``^\\x16\\x03...VMware Management Interface`` (ssl, SSLSessionReq): the slowest rules the
  old ``re`` matcher let through, 150-270 ms a search; with every chunk re-matching the
  whole window, twelve such ports held the CPU for 10 s and an SSH port waited 4.6 s;
- ``^200 [...]*nntp[...]*\\r\\n$`` and ``^\\* OK ([-.\\w]+) [...]*imap[...]*\\r\\n$``
  (softmatches, NULL probe): the slowest under ``regex``, past the 20 ms search timeout.

An SSH-like banner service answers beside them. Its identification must not move by
100 ms, and the scan's CPU time stays within the matching budgets.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from prtip_nb.lab.hostile import BOMBS, HostileServer
from prtip_nb.service.matcher import SERVICE_BUDGET_S
from prtip_nb.service.nmapdb import DEFAULT_PATH, load_nmap_service_probes
from prtip_nb.service.service import ServiceScanner
from prtip_nb.service.servicedb import ServiceDB, re_flags

from ..conftest import need

HOST = "127.0.0.1"
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
HOSTILE_PORTS = 12


@pytest.fixture(scope="module")
def nmap_db() -> ServiceDB:
    need(os.path.exists(DEFAULT_PATH), "needs nmap's data files (apt-get install nmap)")
    return load_nmap_service_probes()


def _rule_lines(marker: str) -> list[str]:
    """Where the rules a bomb aims at are in the installed file: ``file:line`` sources."""
    name = os.path.basename(DEFAULT_PATH)
    with open(DEFAULT_PATH, encoding="latin-1") as fh:
        return [f"{name}:{n}" for n, line in enumerate(fh, 1)
                if line.startswith(("match ", "softmatch ")) and marker in line]  # fmt: skip


@contextlib.contextmanager
def banner_service(banner: bytes) -> Iterator[int]:
    """A listener that sends ``banner`` on accept and then waits for the client to go."""
    srv = socket.create_server((HOST, 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.sendall(banner)
            conn.settimeout(30.0)  # bounded, as every lab handler
            while conn.recv(4096):
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(2.0)
        srv.close()


def test_the_bombs_aim_at_rules_the_old_matcher_found_slow(nmap_db: ServiceDB) -> None:
    """The attack is real: the named rules are loaded, and ``re`` (what matched before) spends
    over 100 ms on one search of their bomb."""
    rules = {r.source: r for p in nmap_db.probes for r in p.rules}
    for marker in ("ANGLESTATUS", "VMware Management Interface"):
        sources = _rule_lines(marker)
        assert sources and all(s in rules for s in sources), (marker, sources)
        rule = rules[sources[0]]
        t0 = time.thread_time()
        re.compile(rule.regex.pattern, re_flags(rule.regex)).search(BOMBS[marker])
        assert time.thread_time() - t0 > 0.1, marker


@pytest.mark.serial
def test_a_regex_bomb_lab_does_not_delay_a_benign_ssh_port(
    netns: None, nmap_db: ServiceDB
) -> None:
    with banner_service(SSH_BANNER) as ssh_port:
        target = [(HOST, ssh_port)]
        ServiceScanner(db=nmap_db).scan(target)  # warm: the NULL chain's index, the pool
        alone = min(ServiceScanner(db=nmap_db).scan(target)[0].elapsed for _ in range(3))

        lab = HostileServer(HOST, {"regexbomb": [0] * HOSTILE_PORTS}).start()
        try:
            hostile = [(HOST, p) for p in lab.bombs]
            cpu0 = time.process_time()
            found = ServiceScanner(db=nmap_db).scan(hostile + target)  # SSH queued last
            cpu = time.process_time() - cpu0
        finally:
            lab.stop()

    by_port = {r.port: r for r in found}
    ssh = by_port[ssh_port]
    assert (ssh.service, ssh.product, ssh.version) == ("ssh", "OpenSSH", "9.2p1 Debian 2")
    # The SSH port's identification, with twelve regex bombs going off beside it:
    assert ssh.elapsed - alone < 0.100, (ssh.elapsed, alone)
    # The bombs past the 20 ms search timeout are named in their ports' notes.
    for port, marker in lab.bombs.items():
        if marker in ("]*nntp[", "]*imap["):
            note = next(n for n in by_port[port].notes if n.startswith("regex timeout"))
            assert any(src in note for src in _rule_lines(marker)), (marker, note)
    # Bounded CPU: each hostile service may spend SERVICE_BUDGET_S matching, and all
    # else (12 services' connections, the lab's own threads) costs far less than that.
    assert cpu < HOSTILE_PORTS * SERVICE_BUDGET_S + 1.0, cpu
    print(f"ssh alone {alone * 1e3:.1f} ms, beside the bombs {ssh.elapsed * 1e3:.1f} ms; "
          f"scan CPU {cpu:.2f} s")  # fmt: skip
