"""The probe database and the matcher, on replies written out by hand (pure logic)."""

from __future__ import annotations

import re
import struct

import pytest

from prtip_nb.service.servicedb import (
    REGEX_WINDOW,
    Probe,
    Rule,
    ServiceDB,
    default_db,
    load_service_db,
)
from prtip_nb.service.text import escape_bytes, expand, parse_portlist, unescape

REQUIRED = {"http", "ssl", "ssh", "ftp", "smtp", "pop3", "imap", "domain", "redis", "memcached",
            "mysql", "postgresql", "mongodb", "vnc", "ms-wbt-server", "telnet", "ldap"}  # fmt: skip


def _bson_version(v: bytes) -> bytes:
    return b"\x02version\x00" + struct.pack("<i", len(v) + 1) + v + b"\x00"


# (probe, reply, service, product, version, info): what a user would see for each service.
CASES = [
    ("NULL", b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5\r\n", "ssh", "OpenSSH",
     "9.6p1 Ubuntu 3ubuntu13.5", "Ubuntu Linux; protocol 2.0"),
    ("NULL", b"SSH-2.0-dropbear_2022.83\r\n", "ssh", "Dropbear sshd", "2022.83", "protocol 2.0"),
    ("NULL", b"SSH-1.99-Cisco-1.25\r\n", "ssh", None, None, "protocol 1.99"),
    ("NULL", b"220 (vsFTPd 3.0.5)\r\n", "ftp", "vsftpd", "3.0.5", None),
    ("NULL", b"220 ProFTPD 1.3.8b Server (Debian) [::ffff:10.0.0.1]\r\n", "ftp", "ProFTPD",  # noqa: E501 # parse-only
     "1.3.8b", None),
    ("NULL", b"220 mail.example.org ESMTP Postfix (Debian/GNU)\r\n", "smtp", "Postfix smtpd",
     None, None),
    ("NULL", b"220 mx ESMTP Exim 4.97 Mon, 01 Jan 2024 00:00:00 +0000\r\n", "smtp", "Exim smtpd",
     "4.97", None),
    ("NULL", b"220 relay.example ESMTP ready\r\n", "smtp", None, None, None),
    ("NULL", b"+OK Dovecot (Debian) ready.\r\n", "pop3", "Dovecot pop3d", None, None),
    ("NULL", b"+OK POP3 server ready <1.2@x>\r\n", "pop3", None, None, None),
    ("NULL", b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE] Dovecot (Debian)"
     b" ready.\r\n", "imap", "Dovecot imapd", None, None),
    ("NULL", b"J\x00\x00\x00\x0a8.0.36-0ubuntu0.22.04.1\x00\x08\x00\x00\x00", "mysql", "MySQL",
     "8.0.36", None),
    ("NULL", b"Y\x00\x00\x00\x0a5.5.5-10.11.6-MariaDB-0+deb12u1\x00", "mysql", "MariaDB",
     "10.11.6", None),
    ("NULL", b"RFB 003.008\n", "vnc", "VNC", None, "protocol 3.8"),
    ("NULL", b"\xff\xfd\x18\xff\xfd\x20\xff\xfd#", "telnet", None, None, None),
    ("GetRequest", b"HTTP/1.1 200 OK\r\nDate: x\r\nServer: Apache/2.4.62 (Debian)\r\n\r\n", "http",
     "Apache httpd", "2.4.62", "Debian"),
    ("GetRequest", b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\n\r\n", "http", "nginx", None,
     None),
    ("GetRequest", b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\n\r\n", "http",
     "SimpleHTTPServer", "0.6", "Python 3.11.2"),
    ("GetRequest", b"HTTP/1.1 200 OK\r\nServer: Jetty(9.4.z)\r\n\r\n", "http", "Jetty(9.4.z)",
     None, None),
    ("GetRequest", b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n", "http", None, None, None),
    ("GetRequest", b"SSH-2.0-OpenSSH_9.2p1\r\nInvalid SSH identification string.\r\n", "ssh",
     "OpenSSH", "9.2p1", "protocol 2.0"),  # a banner that arrived late: NULL's rules apply
    ("DNSVersionBindTCP", b"\x00\x35\x70\x72\x84\x00\x00\x01\x00\x01\x00\x00\x00\x00"
     b"\x07version\x04bind\x00\x00\x10\x00\x03\xc0\x0c\x00\x10\x00\x03\x00\x00\x00\x00\x00\x0d"
     b"\x0cdnsmasq-2.90", "domain", "dnsmasq", "2.90", None),
    ("DNSVersionBindTCP", b"\x00\x35\x70\x72\x84\x05\x00\x01\x00\x00\x00\x00\x00\x00", "domain",
     None, None, None),
    ("RedisInfo", b"$1234\r\n# Server\r\nredis_version:7.2.4\r\nredis_git_sha1:0\r\n", "redis",
     "Redis key-value store", "7.2.4", None),
    ("RedisInfo", b"-NOAUTH Authentication required.\r\n", "redis", "Redis key-value store", None,
     "authentication required"),
    ("MemcachedVersion", b"VERSION 1.6.21\r\n", "memcached", "Memcached", "1.6.21", None),
    ("PostgresStartup", b"E\x00\x00\x00\x62SFATAL\x00VFATAL\x00C28000\x00Mrole does not exist",
     "postgresql", "PostgreSQL DB", None, None),
    ("PostgresStartup", b"R\x00\x00\x00\x0c\x00\x00\x00\x05abcd", "postgresql", "PostgreSQL DB",
     None, None),
    ("MongoBuildInfo", b"\x90\x00\x00\x00\x11\x11\x00\x00\x50\x72\x00\x00\xdd\x07\x00\x00"
     b"\x00\x00\x00\x00\x00\x7b\x00\x00\x00" + _bson_version(b"7.0.12"), "mongodb", "MongoDB",
     "7.0.12", None),
    ("RDPNegotiation", b"\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x08\x00"
     b"\x00\x00", "ms-wbt-server", None, None, None),
    ("LDAPBind", b"\x30\x0c\x02\x01\x01\x61\x07\x0a\x01\x00\x04\x00\x04\x00", "ldap", None, None,
     None),
    ("LDAPBind", b"\x30\x84\x00\x00\x00\x10\x02\x01\x01\x61\x84\x00\x00\x00\x07\x0a\x01\x00",
     "ldap", None, None, None),
]  # fmt: skip


@pytest.mark.parametrize(("probe", "reply", "service", "product", "version", "info"), CASES)
def test_replies_are_identified(
    probe: str, reply: bytes, service: str, product: str | None, version: str | None,
    info: str | None,
) -> None:  # fmt: skip
    db = default_db()
    m = db.match(db.by_name[probe], reply)
    assert m is not None, reply
    assert (m.service, m.product, m.version, m.info) == (service, product, version, info)
    assert not m.soft


def test_database_covers_the_required_services() -> None:
    db = default_db()
    services = {r.service for p in db.probes for r in p.rules}
    assert REQUIRED <= services, REQUIRED - services
    assert db.null is db.probes[0] and db.null.payload == b""
    assert any(p.tls for p in db.probes)
    assert {443, 8443, 993, 995, 465} <= db.ssl_ports
    assert 9100 in db.exclude  # printers print what they are sent


def test_tls_and_plain_text_to_tls_port_softmatch_ssl() -> None:
    db = default_db()
    get = db.by_name["GetRequest"]
    alert = db.match(get, b"\x15\x03\x03\x00\x02\x02\x28")
    assert alert is not None and alert.service == "ssl" and alert.soft
    nginx = db.match(get, b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n<html><center>"
                          b"The plain HTTP request was sent to HTTPS port</center>")  # fmt: skip
    assert nginx is not None and nginx.service == "ssl" and nginx.soft


def test_only_the_regex_window_is_looked_at() -> None:
    db = default_db()
    get = db.by_name["GetRequest"]
    late = b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (REGEX_WINDOW // 6) + b"Server: nginx/1.2\r\n"
    m = db.match(get, late)
    assert m is not None and m.product is None  # the Server header lies past 4 KiB


def test_plan_hints_first_then_rarity_up_to_intensity() -> None:
    db = default_db()
    assert [p.name for p in db.plan(53, 0)] == ["DNSVersionBindTCP"]
    assert db.plan(12345, 0) == []
    assert [p.name for p in db.plan(12345, 1)] == ["GetRequest", "TLSHandshake"]
    every = [p.name for p in db.plan(6379, 9)]
    assert every[0] == "RedisInfo" and len(every) == len(db.probes) - 1
    assert "TLSHandshake" not in [p.name for p in db.plan(443, 9, tls=True)]
    rarities = [p.rarity for p in db.plan(12345, 9)]
    assert rarities == sorted(rarities)
    assert db.hinted_null(22) and not db.hinted_null(80)


def test_escapes_and_templates() -> None:
    assert unescape(r"GET /\r\n\x00\xff\\x\q") == b"GET /\r\n\x00\xff\\xq"
    assert escape_bytes(b"ok \x1b[31m\\\xff") == "ok \\x1b[31m\\x5c\\xff"
    assert escape_bytes(b"a" * 10 + b"\x00", 12) == "a" * 10 + "..."
    assert parse_portlist("80, 8000-8002,") == {80, 8000, 8001, 8002}
    with pytest.raises(ValueError):
        parse_portlist("70000")
    m = re.match(rb"v(\d)\.(\d)-(\w+)\x00(..)", b"v1.2-a_b\x00\x01\x02")
    assert m is not None
    assert expand("$1.$2 $P(3)", m) == "1.2 a_b"
    assert expand('$SUBST(3,"_",".")', m) == "a.b"
    assert expand('$I(4,">") $I(4,"<")', m) == "258 513"
    assert expand("$9", m) is None  # a missing group gives nothing, not an error
    hostile = re.match(rb"(.*)", b"\x1b]0;pwned\x07" + b"x" * 500)
    assert hostile is not None
    out = expand("$1", hostile)
    assert out is not None and "\x1b" not in out and len(out) <= 120


def test_after_a_softmatch_only_the_same_service_can_match_hard() -> None:
    probe = Probe("X", rules=[Rule("http", re.compile(b"^a"), soft=True),
                              Rule("ftp", re.compile(b"^ab"), product="f"),
                              Rule("http", re.compile(b"^ab"), product="p")])  # fmt: skip
    db = ServiceDB([Probe("NULL"), probe])
    m = db.match(db.by_name["X"], b"abc")
    assert m is not None and (m.service, m.product, m.soft) == ("http", "p", False)
    soft = db.match(db.by_name["X"], b"ax")
    assert soft is not None and soft.soft and soft.service == "http"


def test_a_bad_database_file_says_where(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "db.toml"
    path.write_text('[[probe]]\nname = "NULL"\n[[probe.match]]\nservice = "x"\npattern = "(("\n')
    with pytest.raises(ValueError, match="probe NULL rule 0"):
        load_service_db(path)
