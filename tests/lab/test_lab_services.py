"""Each lab service, spoken to with plain sockets, on the demo's fixed ports."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import time

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from labutil import TIMEOUT, connect, http_get, no_verify_context, read_all, read_line

from prtip_nb.lab import Lab

HOST = "127.0.0.1"


def test_plain_listeners_accept_and_close(full_lab: Lab) -> None:
    assert full_lab.tcp_ports == list(range(20000, 20020))
    for port in full_lab.tcp_ports:
        with connect(HOST, port) as sock:
            assert read_all(sock) == b""  # accepted, then closed without a word


def test_closed_ports_refuse(full_lab: Lab) -> None:
    assert full_lab.closed_ports == list(range(20020, 20025))
    for port in full_lab.closed_ports:
        with pytest.raises(ConnectionRefusedError):
            connect(HOST, port)


def test_http_answers_200_with_title(full_lab: Lab) -> None:
    reply = http_get(HOST, full_lab.services["http"])
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Server"] == "prtip-lab/1.0"
    assert headers["Connection"] == "close"
    assert int(headers["Content-Length"]) == len(body)
    assert b"<title>prtip_nb lab</title>" in body


def test_http_answers_after_half_close_and_head(full_lab: Lab) -> None:
    with connect(HOST, full_lab.services["http"]) as sock:
        sock.sendall(b"HEAD / HTTP/1.0")  # no blank line: the EOF ends the request
        sock.shutdown(socket.SHUT_WR)
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\n")


def test_https_serves_http_with_lab_certificate(full_lab: Lab) -> None:
    port = full_lab.services["https"]
    with connect(HOST, port) as raw:
        with no_verify_context().wrap_socket(raw, server_hostname="prtip-lab.test") as tls:
            der = tls.getpeercert(binary_form=True)
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            tls.sendall(b"GET / HTTP/1.1\r\nHost: prtip-lab.test\r\n\r\n")
            reply = read_all(tls)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"<title>prtip_nb lab</title>" in reply
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "prtip-lab.test"
    assert cert.issuer == cert.subject  # self-signed
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["prtip-lab.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(HOST)]
    life = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=29) < life <= dt.timedelta(days=30)
    assert full_lab.cert is not None and full_lab.cert.der == der


def test_tls_port_survives_plain_text_and_stalled_clients(full_lab: Lab) -> None:
    port = full_lab.services["https"]
    with connect(HOST, port) as plain:  # an HTTP probe on the TLS port
        plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
        try:
            reply = read_all(plain)
        except ConnectionResetError:
            reply = b""
        assert not reply.startswith(b"HTTP/")
    with connect(HOST, port), connect(HOST, full_lab.services["http"]):  # stalled: send nothing
        # Both stalled peers stay connected while others are served: the loop never blocks.
        start = time.monotonic()
        assert http_get(HOST, port, tls=True).startswith(b"HTTP/1.1 200 OK")
        assert http_get(HOST, full_lab.services["http"]).startswith(b"HTTP/1.1 200 OK")
        assert time.monotonic() - start < 1.0


def test_ssh_banner(full_lab: Lab) -> None:
    with connect(HOST, full_lab.services["ssh"]) as sock:
        assert read_line(sock) == b"SSH-2.0-OpenSSH_9.2p1 prtip-lab\r\n"
        sock.sendall(b"SSH-2.0-prtip_test\r\n")  # a client identification: key exchange
        head = sock.recv(6)  # the start of the server's KEXINIT packet (lab/sshkex.py)
        assert len(head) == 6 and head[5] == 20
    with connect(HOST, full_lab.services["ssh"]) as sock:
        read_line(sock)
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert read_all(sock) == b"Invalid SSH identification string.\r\n"


def test_smtp_banner_ehlo_quit(full_lab: Lab) -> None:
    with connect(HOST, full_lab.services["smtp"]) as sock:
        assert read_line(sock) == b"220 prtip-lab.test ESMTP Postfix\r\n"
        sock.sendall(b"EHLO scanner.test\r\n")
        reply = b""
        for _ in range(10):  # "250 " (a space, not a dash) ends a multi-line reply
            reply += read_line(sock)
            if reply.splitlines()[-1][3:4] == b" ":
                break
        lines = reply.splitlines()
        assert lines[0] == b"250-prtip-lab.test" and lines[-1].startswith(b"250 ")
        sock.sendall(b"QUIT\r\n")
        assert read_all(sock) == b"221 2.0.0 Bye\r\n"


def test_ftp_banner_quit(full_lab: Lab) -> None:
    with connect(HOST, full_lab.services["ftp"]) as sock:
        assert read_line(sock) == b"220 (vsFTPd 3.0.3)\r\n"
        sock.sendall(b"USER anonymous\r\n")
        assert read_line(sock).startswith(b"331 ")
        sock.sendall(b"QUIT\r\n")
        assert read_all(sock) == b"221 Goodbye.\r\n"


def test_udp_echo(full_lab: Lab) -> None:
    port = full_lab.services["udp_echo"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        for payload in (b"x", b"\x00" * 512, bytes(range(256))):
            sock.sendto(payload, (HOST, port))
            data, addr = sock.recvfrom(4096)
            assert data == payload and addr == (HOST, port)


def test_ipv6_services() -> None:
    """Kernel-picked ports on ::1, so this runs anywhere ::1 exists."""
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with Lab("::1", tcp=2, base_port=0, http=0, https=0, ssh=0, udp_echo=0) as lab:
        assert lab.family == 6
        for port in lab.tcp_ports:
            with connect("::1", port) as sock:
                assert read_all(sock) == b""
        assert http_get("::1", lab.services["http"]).startswith(b"HTTP/1.1 200 OK")
        assert http_get("::1", lab.services["https"], tls=True).startswith(b"HTTP/1.1 200 OK")
        with connect("::1", lab.services["ssh"]) as sock:
            assert read_line(sock).startswith(b"SSH-2.0-")
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.sendto(b"six", ("::1", lab.services["udp_echo"]))
            assert sock.recvfrom(100)[0] == b"six"
        truth = lab.truth
        assert set(truth["host"]) == {"::1"} and set(truth["family"]) == {6}
        https = truth[truth["tunnel"] == "ssl"].iloc[0]
        assert list(https["tls_san"]) == ["prtip-lab.test", "::1"]
