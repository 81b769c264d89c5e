"""Lab: ground truth, port choice, errors, clean stop, and load."""

from __future__ import annotations

import resource
import selectors
import socket
import struct
import threading
import time

import pandas as pd
import pytest
from labutil import connect, http_get, open_fds, read_all, wait_for

from prtip_nb.errors import ConfigError, PrtipError
from prtip_nb.lab import DEFAULT_LAYOUT, Lab
from prtip_nb.results import schema

HOST = "127.0.0.1"


def lab_threads() -> set[threading.Thread]:
    """Lab service threads alive now (a module-scoped lab may be running beside the test)."""
    return {t for t in threading.enumerate() if t.name.startswith("prtip-lab")}


# -- ground truth ----------------------------------------------------------------------


def test_truth_is_ports_schema_and_lists_exactly_the_started_ports(full_lab: Lab) -> None:
    table = full_lab.table
    assert table.schema.equals(schema.PORTS)
    truth = full_lab.truth
    assert all(isinstance(dtype, pd.ArrowDtype) for dtype in truth.dtypes)
    assert list(truth.columns) == schema.PORTS.names
    for field in schema.PORTS:
        assert truth[field.name].dtype.pyarrow_dtype.equals(field.type), field.name

    layout = DEFAULT_LAYOUT
    open_tcp = sorted(
        [layout[k] for k in ("http", "https", "ssh", "smtp", "ftp")]
        + list(range(20000, 20000 + layout["tcp"]))
    )
    closed = list(range(20000 + layout["tcp"], 20000 + layout["tcp"] + layout["closed"]))
    assert full_lab.open_ports == {"tcp": open_tcp, "udp": [layout["udp_echo"]]}
    rows = {(r.proto, r.port): r for r in truth.itertuples()}
    assert set(rows) == ({("tcp", p) for p in open_tcp + closed} | {("udp", layout["udp_echo"])})
    assert {rows["tcp", p].state for p in open_tcp} == {"open"}
    assert {rows["tcp", p].state for p in closed} == {"closed"}
    assert set(truth["scan_id"]) == {"lab"} and set(truth["host"]) == {HOST}
    assert set(truth["family"]) == {4}

    # nmap's words: the TLS service is "http" in an "ssl" tunnel (ssl/http)
    named = truth["service"].astype(object).where(truth["tunnel"].isna(), "ssl/" + truth["service"])
    by_service = truth.assign(service=named).set_index("service")
    assert by_service.loc["http", "port"] == 8080
    assert by_service.loc["ssh", "product"] == "OpenSSH"
    assert by_service.loc["ssh", "version"] == "9.2p1"
    assert by_service.loc["ssh", "banner"] == "SSH-2.0-OpenSSH_9.2p1 prtip-lab"
    assert by_service.loc["ftp", "product"] == "vsftpd"
    assert by_service.loc["echo", "proto"] == "udp"
    https = by_service.loc["ssl/http"]
    assert https["tls_subject"] == "CN=prtip-lab.test" == https["tls_issuer"]
    assert https["tls_self_signed"]
    assert full_lab.cert is not None
    assert https["tls_not_after"] == full_lab.cert.not_after
    assert truth["tls_subject"].notna().sum() == 1  # TLS facts on the https row only


def test_truth_before_start_is_an_error() -> None:
    with pytest.raises(PrtipError, match="not been started"):
        Lab(tcp=1).truth  # noqa: B018 - the property is what raises


# -- choosing ports --------------------------------------------------------------------


def test_port_zero_picks_free_ports() -> None:
    with Lab(HOST, tcp=5, closed=2, base_port=0, http=0, https=0, ssh=0, udp_echo=0) as lab:
        tcp = lab.open_ports["tcp"]
        assert len(tcp) == 5 + 3 and len(set(tcp)) == len(tcp) and 0 not in tcp
        assert len(lab.closed_ports) == 2 and 0 not in lab.closed_ports
        assert lab.open_ports["udp"] == [lab.services["udp_echo"]]
        assert http_get(HOST, lab.services["http"]).startswith(b"HTTP/1.1 200 OK")
        for port in lab.tcp_ports:
            with connect(HOST, port) as sock:
                assert read_all(sock) == b""


def test_count_skips_ports_in_use_and_other_services(netns: None) -> None:
    squatter = socket.create_server((HOST, 30001))
    try:
        with Lab(HOST, tcp=3, closed=1, http=30000, base_port=30000) as lab:
            assert lab.services == {"http": 30000}
            assert lab.tcp_ports == [30002, 30003, 30004]
            assert lab.closed_ports == [30005]
    finally:
        squatter.close()


def test_explicit_port_lists(netns: None) -> None:
    with Lab(HOST, tcp=[31005, 31001], closed=[31002]) as lab:
        assert lab.tcp_ports == [31001, 31005]
        assert lab.closed_ports == [31002]
        assert lab.open_ports == {"tcp": [31001, 31005], "udp": []}


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"host": "localhost"}, "IP address literal"),
        ({"host": "999.1.1.1"}, "IP address literal"),  # parse-only
        ({"http": -1}, "0..65535"),
        ({"http": 70000}, "0..65535"),
        ({"ssh": True}, "port number"),
        ({"ftp": "21"}, "port number"),
        ({"tcp": "abc"}, "count or a list"),
        ({"tcp": [1, 99999]}, "0..65535"),
        ({"tcp": 10, "base_port": 65530}, "do not fit"),
        ({"http": 8080, "https": 8080}, "both http and https"),
        ({"tcp": [2222], "ssh": 2222}, "both ssh and tcp"),
        ({"idle_timeout": 0}, "idle_timeout"),
    ],
)
def test_bad_options_raise_before_binding(kwargs: dict[str, object], match: str) -> None:
    before = open_fds()
    with pytest.raises(ConfigError, match=match):
        Lab(**kwargs)
    assert open_fds() == before


def test_too_many_ports_for_the_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        with pytest.raises(ConfigError, match="RLIMIT_NOFILE"):
            Lab(tcp=300, base_port=0)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_same_port_for_tcp_and_udp_is_fine() -> None:
    Lab(http=5353, udp_echo=5353)  # different protocols: no clash (not started)


def test_port_in_use_is_config_error_and_leaks_nothing() -> None:
    squatter = socket.create_server((HOST, 0))  # a port this test owns
    taken = squatter.getsockname()[1]
    threads = lab_threads()
    try:
        before = open_fds()
        lab = Lab(HOST, tcp=3, base_port=0, http=0, https=0, udp_echo=0, ssh=taken)
        with pytest.raises(ConfigError) as info:
            lab.start()
        message = str(info.value)
        assert str(taken) in message and "in use" in message and "ssh=0" in message
        assert open_fds() == before
        assert not lab.running and lab_threads() == threads
    finally:
        squatter.close()


def test_bind_failure_midway_through_a_list_leaks_nothing() -> None:
    squatter = socket.create_server((HOST, 0))
    taken = squatter.getsockname()[1]
    try:
        before = open_fds()
        with pytest.raises(ConfigError, match=rf"put 0 for {taken} in tcp=\["):
            Lab(HOST, tcp=[0, 0, taken], closed=[0]).start()
        assert open_fds() == before
    finally:
        squatter.close()


# -- lifecycle -------------------------------------------------------------------------


def test_stop_is_prompt_closes_everything_and_leaves_no_thread() -> None:
    before, threads = open_fds(), lab_threads()
    lab = Lab(HOST, tcp=3, closed=1, base_port=0, http=0, https=0, ssh=0, smtp=0, udp_echo=0)
    lab.start()
    assert lab.start() is lab  # idempotent
    clients = [connect(HOST, lab.services[name]) for name in ("ssh", "smtp", "http", "https")]
    try:
        assert wait_for(lambda: lab.connections == 4)
        start = time.monotonic()
        lab.stop()
        assert time.monotonic() - start < 1.0
        assert lab_threads() == threads and not lab.running
        for sock in clients[:2]:  # the banner, then EOF: the server side is gone
            sock.settimeout(2.0)
            assert read_all(sock).count(b"\n") == 1
    finally:
        for sock in clients:
            sock.close()
    assert open_fds() == before
    assert lab.truth.shape[0] == 3 + 1 + 5  # the truth outlives the lab
    lab.stop()  # a second stop is harmless


def test_restart_after_stop() -> None:
    threads = lab_threads()
    lab = Lab(HOST, http=0)
    for _ in range(2):
        with lab:
            assert http_get(HOST, lab.services["http"]).startswith(b"HTTP/1.1 200 OK")
    assert lab_threads() == threads


def test_thousand_concurrent_connections_are_served() -> None:
    """1000 clients connect, all held open at once, then each gets its HTTP answer."""
    n = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * n + 200  # both ends of every connection live in this process
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    sel = selectors.DefaultSelector()
    clients: list[socket.socket] = []
    try:
        with Lab(HOST, http=0) as lab:
            addr = (HOST, lab.services["http"])
            for _ in range(n):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(addr)
                clients.append(sock)
            # Every connection accepted and held by the lab at the same time.
            assert wait_for(lambda: lab.connections == n, timeout=10.0), lab.connections
            replies = {sock: bytearray() for sock in clients}
            for sock in clients:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                sel.register(sock, selectors.EVENT_READ)
            deadline = time.monotonic() + 10.0
            done = 0
            while done < n and time.monotonic() < deadline:
                for key, _ in sel.select(0.5):
                    client = key.fileobj
                    assert isinstance(client, socket.socket)
                    chunk = client.recv(65536)
                    if chunk:
                        replies[client] += chunk
                    else:
                        sel.unregister(client)
                        client.close()  # the lab lingers until we close our end
                        done += 1
            ok = sum(r.startswith(b"HTTP/1.1 200 OK") for r in replies.values())
            assert (done, ok) == (n, n)
            assert wait_for(lambda: lab.connections == 0)
    finally:
        sel.close()
        for sock in clients:
            sock.close()


def test_scan_like_burst_leaves_the_lab_healthy() -> None:
    """Connect-and-reset (as a connect scan does) to every service, then use each one."""
    with Lab(HOST, tcp=5, base_port=0, http=0, https=0, ssh=0, smtp=0, ftp=0) as lab:
        linger0 = struct.pack("ii", 1, 0)  # close() sends RST, like nmap's connect scan
        for _ in range(20):
            for port in lab.open_ports["tcp"]:
                sock = connect(HOST, port)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
                sock.close()
        assert wait_for(lambda: lab.connections == 0)
        assert http_get(HOST, lab.services["http"]).startswith(b"HTTP/1.1 200 OK")
        assert http_get(HOST, lab.services["https"], tls=True).startswith(b"HTTP/1.1 200 OK")
        with connect(HOST, lab.services["ftp"]) as sock:
            assert sock.recv(100).startswith(b"220 ")
