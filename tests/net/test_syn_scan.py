"""SYN scans with real packets on the suite's private loopback, checked against nmap -sS."""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import prtip_nb as pn
from prtip_nb.engine.scan import Scan
from prtip_nb.errors import PrivilegeError
from prtip_nb.probes.cookie import CookieKey, cookie
from prtip_nb.probes.tcp import checksum
from prtip_nb.results import schema
from tests.conftest import need
from tests.net.nmapxml import nmap_states

pytestmark = pytest.mark.usefixtures("netns", "root")

OPEN = sorted({1, 65535, *random.Random(3).sample(range(2, 65535), 48)})
NMAP_FULL = ("-T4", "--max-retries", "1")


@contextlib.contextmanager
def listening(host: str, ports: list[int]) -> Iterator[list[int]]:
    """Listeners on ``ports`` (a port some other test still holds is skipped); yields every
    port listening on ``host`` now, ours and any left by others: the truth to compare."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for p in ports:
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, p))
            except OSError:
                s.close()
                continue
            s.listen(128)
            socks.append(s)
        assert len(socks) >= len(ports) - 3
        yield listeners(host)
    finally:
        for s in socks:
            s.close()


def listeners(host: str) -> list[int]:
    """TCP ports in LISTEN state on ``host`` (or the wildcard), from /proc/net/tcp{,6}."""
    want = {"127.0.0.1": ("0100007F", "00000000"),
            "::1": ("00000000000000000000000001000000", "0" * 32)}[host]
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as fh:
            for line in fh.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, port = local.split(":")
                v6_socket_for_v4 = name.endswith("6") and host == "127.0.0.1"
                if state == "0A" and (addr in want or (v6_socket_for_v4 and addr == "0" * 32)):
                    found.add(int(port, 16))
    return sorted(found)


def states(df: pd.DataFrame) -> dict[int, str]:
    return dict(zip(df["port"].astype(int), df["state"].astype(str), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_all_ports_exact_and_same_states_as_nmap(host: str, nmap: str) -> None:
    with listening(host, OPEN) as truth:
        res = pn.scan(host, ports="-", method="syn")
        theirs = nmap_states(nmap, host, "-", *NMAP_FULL)
    assert res.tables["ports"].schema.equals(schema.PORTS)
    df = res.ports
    assert len(df) == 65535 and df["port"].nunique() == 65535
    ours = states(df)
    assert sorted(p for p, s in ours.items() if s == "open") == truth
    assert ours == theirs
    assert set(df.loc[df["state"] == "closed", "reason"].astype(str)) == {"reset"}
    assert set(df.loc[df["state"] == "open", "reason"].astype(str)) == {"syn-ack"}
    assert set(df["ttl"].astype(int)) == {64}  # every row answered, with the reply's TTL
    assert df["rtt_ms"].notna().all() and (df["rtt_ms"] >= 0).all()
    assert set(df["family"].astype(int)) == {6 if ":" in host else 4}


def test_shards_partition_the_scan_and_cli_flags_reach_the_engine() -> None:
    from prtip_nb.cli import main

    with listening("127.0.0.1", OPEN) as truth:
        rows = []
        for k in (1, 2, 3):
            res = pn.scan("127.0.0.1", ports="1-6000", method="syn", shard=(k, 3), seed=11)
            rows.append(states(res.ports))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["scan", "-sS", "-p", "1-6000", "--rate", "40000", "--max-retries", "1",
                         "-T4", "--shard", "2/3", "--seed", "11", "--open", "--no-progress",
                         "127.0.0.1"])
    assert code == 0
    seen = [set(r) for r in rows]
    assert set().union(*seen) == set(range(1, 6001))
    assert sum(len(s) for s in seen) == 6000  # disjoint
    opened = sorted(p for r in rows for p, s in r.items() if s == "open")
    assert opened == [p for p in truth if p <= 6000]
    cli_open = sorted(int(line.split("/")[0]) for line in out.getvalue().splitlines()
                      if "/tcp" in line and " open " in line)
    assert cli_open == sorted(p for p, s in rows[1].items() if s == "open")


def test_source_port_flag_reaches_the_syn_and_udp_engines(tmp_path: Path) -> None:
    """-g (ScanConfig.source_port): the SYN and the UDP probes of a -sS -sU scan leave from
    it; the checkpoint records the ports the engines used."""
    import json

    from prtip_nb.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["scan", "-sS", "-sU", "-p", "T:80,U:53", "-g", "47555", "--privileged",
                     "--max-retries", "0", "--no-progress", "-o", str(tmp_path), "127.0.0.1"])
    assert code == 0
    (ck,) = tmp_path.glob("scan_id=*/_checkpoint.json")
    doc = json.loads(ck.read_text())
    assert doc["config"]["source_port"] == 47555 and "extra" not in doc["config"]
    assert (doc["engine_state"]["syn_sport"], doc["engine_state"]["udp_sport"]) == (47555, 47555)


def test_cancel_stops_within_a_second_and_keeps_what_it_found() -> None:
    with listening("127.0.0.1", OPEN):
        s = Scan("127.0.0.1", "-", method="syn", rate=2000).start()  # 33 s at this rate
        time.sleep(0.5)
        t0 = time.monotonic()
        s.cancel()
        res = s.wait(5)
        took = time.monotonic() - t0
    assert took < 1.0
    assert s.status == "cancelled"
    assert 0 < len(res.ports) < 65535


@pytest.fixture
def drop_syns() -> Iterator[str]:
    """nftables in this namespace: SYNs to 127.0.0.1:31000-31099 vanish (no reply ever)."""
    need(shutil.which("nft") is not None, "needs nftables")
    subprocess.run(["nft", "-f", "-"], check=True, text=True, input=(
        "add table inet prtip_syn_test\n"
        "add chain inet prtip_syn_test input { type filter hook input priority 0; }\n"
        "add rule inet prtip_syn_test input ip daddr 127.0.0.1 tcp dport 31000-31099 "
        "tcp flags & (syn | ack) == syn drop\n"))
    try:
        yield "31000-31099"
    finally:
        subprocess.run(["nft", "delete", "table", "inet", "prtip_syn_test"], check=False)


def _tcp4(sport: int, dport: int, seq: int, ack: int, flags: int) -> bytes:
    lo = socket.inet_aton("127.0.0.1")
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    seg = seg[:16] + struct.pack("!H", checksum(lo + lo + struct.pack("!BBH", 0, 6, 20) + seg)) \
        + seg[18:]
    return _ip4(6, seg)


def _ip4(proto: int, payload: bytes) -> bytes:
    lo = socket.inet_aton("127.0.0.1")
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0, lo,
                       lo) + payload


def _icmp_unreach(code: int, quoted: bytes) -> bytes:
    body = struct.pack("!BBHI", 3, code, 0, 0) + quoted
    return _ip4(1, body[:2] + struct.pack("!H", checksum(body)) + body[4:])


def _wait_sent(s: Scan, n: int) -> None:
    deadline = time.monotonic() + 5
    while s.counters.sent < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert s.counters.sent >= n


def test_forged_replies_with_random_acks_give_no_false_opens(drop_syns: str) -> None:
    sport = 47001
    s = Scan("127.0.0.1", drop_syns, method="syn", max_retries=0, timeout=3.0,
             source_port=sport).start()
    _wait_sent(s, 100)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    rng = random.Random(5)
    for i in range(10_000):
        port = 31000 + i % 100
        flags = 0x12 if i % 4 else 0x14  # SYN-ACKs, and RST-ACKs
        raw.sendto(_tcp4(port, sport, rng.getrandbits(32), rng.getrandbits(32), flags),
                   ("127.0.0.1", 0))
    for i in range(200):  # ICMP errors quoting "our" probes with made-up sequence numbers
        quoted = _tcp4(sport, 31000 + i % 100, rng.getrandbits(32), 0, 0x02)[:28]
        raw.sendto(_icmp_unreach(13, quoted), ("127.0.0.1", 0))
    raw.close()
    df = s.wait(10).ports
    assert len(df) == 100
    assert (df["state"] == "open").sum() == 0
    assert set(zip(df["state"].astype(str), df["reason"].astype(str), strict=True)) == {
        ("filtered", "no-response")}
    # The filter saw the forgeries and turned them away (a busy machine may deliver a few
    # after the scan ended, or the ring may drop some: no exact count).
    assert s.engine_stats["invalid"] >= 5_000


def test_icmp_error_counts_only_when_it_quotes_a_probe_we_sent(drop_syns: str) -> None:
    sport, secret = 47002, bytes(range(16))
    s = Scan("127.0.0.1", "31000-31009", method="syn", max_retries=0, timeout=2.0)
    s.engine_state.update(syn_secret=secret.hex(), syn_sport=sport)
    s.start()
    _wait_sent(s, 10)
    lo = socket.inet_aton("127.0.0.1")
    hk = CookieKey(secret).host_key(lo, lo, sport)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for port in range(31000, 31010):
        seq = cookie(hk, port) if port < 31005 else cookie(hk, port) ^ 1
        quoted = _tcp4(sport, port, seq, 0, 0x02)[:28]  # IP header + 8 bytes, as routers do
        raw.sendto(_icmp_unreach(13, quoted), ("127.0.0.1", 0))
    raw.close()
    got = s.wait(10).ports
    reasons = dict(zip(got["port"].astype(int), got["reason"].astype(str), strict=True))
    assert reasons == {p: "admin-prohibited" if p < 31005 else "no-response"
                       for p in range(31000, 31010)}
    assert set(got["state"].astype(str)) == {"filtered"}


def test_without_raw_sockets_syn_says_how_and_auto_falls_back() -> None:
    need(shutil.which("setpriv") is not None, "needs setpriv (util-linux)")
    code = (
        "import warnings, prtip_nb as pn\n"
        "from prtip_nb.errors import PrivilegeError\n"
        "try:\n"
        "    pn.scan('127.0.0.1', '1-5', method='syn')\n"
        "except PrivilegeError as e:\n"
        "    print('ERR', e)\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    r = pn.scan('127.0.0.1', '1-5', method='auto')\n"
        "print('WARN', [str(x.message) for x in w])\n"
        "print('ROWS', len(r.ports), r.config['method'] if hasattr(r, 'config') else '')\n"
    )
    done = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
         "--inh-caps=-all", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, cwd=os.getcwd(),
        env={**os.environ, "HOME": "/tmp"},
    )
    assert done.returncode == 0, done.stderr
    err = next(line for line in done.stdout.splitlines() if line.startswith("ERR"))
    assert "setcap cap_net_raw+ep" in err and "method='connect'" in err
    warn = next(line for line in done.stdout.splitlines() if line.startswith("WARN"))
    assert "picked 'connect'" in warn
    assert "ROWS 5" in done.stdout


def test_privilege_error_is_a_permission_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import prtip_nb.engine.scan as scan_mod

    monkeypatch.setattr(scan_mod, "is_privileged", lambda: False)
    with pytest.raises(PrivilegeError, match="setcap") as info:
        Scan("127.0.0.1", "80", method="syn")
    assert isinstance(info.value, PermissionError)


def test_wait_keeps_a_privilege_error_raised_while_running() -> None:
    # The privilege check passes (patched), then the capture ring is refused to an
    # unprivileged user inside the scan thread: wait() must say PrivilegeError and how.
    need(shutil.which("setpriv") is not None, "needs setpriv (util-linux)")
    code = (
        "import prtip_nb.engine.scan as m\n"
        "m.is_privileged = lambda: True\n"
        "try:\n"
        "    m.Scan('127.0.0.1', '1-5', method='syn').wait(30)\n"
        "except Exception as e:\n"
        "    print('ERR', type(e).__name__, isinstance(e, PermissionError), e)\n"
    )
    done = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
         "--inh-caps=-all", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, cwd=os.getcwd(),
        env={**os.environ, "HOME": "/tmp"},
    )
    assert done.returncode == 0, done.stderr
    err = next(line for line in done.stdout.splitlines() if line.startswith("ERR"))
    assert err.startswith("ERR PrivilegeError True"), err
    assert "setcap" in err or "CAP_NET_RAW" in err or "root" in err, err
