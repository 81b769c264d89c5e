"""Certificate facts (cryptography) and the handshake byte bound, on real sockets."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from prtip_nb.lab import Lab
from prtip_nb.lab.tlscert import make_cert
from prtip_nb.service.conn import ChainTooLarge, Conn
from prtip_nb.service.tls import client_context, parse_certificate


def _cert(subject: str, issuer: str, key: object, signer: object, san: list[x509.GeneralName]
          ) -> bytes:  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(7).not_valid_before(now).not_valid_after(now + dt.timedelta(days=2))
    )
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


def test_lab_certificate_facts() -> None:
    lab = make_cert("127.0.0.1")
    info = parse_certificate(lab.der)
    assert (info.subject, info.issuer, info.san) == (lab.subject, lab.issuer, lab.san)
    assert info.not_after == lab.not_after and info.not_before == lab.not_before
    assert (info.key_type, info.key_bits, info.curve) == ("EC", 256, "secp256r1")
    assert info.sigalg == "ecdsa-with-SHA256" and info.self_signed
    assert len(info.sha256) == 95 and info.sha256.count(":") == 31


def test_rsa_certificate_signed_by_another_key_is_not_self_signed() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = ec.generate_private_key(ec.SECP256R1())
    der = _cert("www.example.test", "Example CA", key, ca,
                [x509.DNSName("www.example.test"), x509.UniformResourceIdentifier("https://x/")])
    info = parse_certificate(der)
    assert (info.key_type, info.key_bits) == ("RSA", 2048)
    assert info.subject == "CN=www.example.test" and info.issuer == "CN=Example CA"
    assert info.san == ("www.example.test", "URI:https://x/") and not info.self_signed
    # Same name as issuer but a foreign signature: still not self-signed.
    forged = parse_certificate(_cert("Example CA", "Example CA", key, ca, []))
    assert not forged.self_signed


def test_peer_controlled_names_are_escaped() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    info = parse_certificate(_cert("evil\x1b[2J\u00e9", "x", key, key, []))
    assert "\x1b" not in info.subject and "\\x1b" in info.subject


def test_handshake_bytes_are_bounded(netns: None) -> None:
    async def handshake(port: int, limit: int) -> int:
        conn = Conn(socket.AF_INET)
        try:
            await conn.connect("127.0.0.1", port)
            await conn.handshake(client_context(), limit)
            return conn.handshake_bytes
        finally:
            conn.close()

    with Lab("127.0.0.1", https=0) as lab:
        port = lab.services["https"]
        seen = asyncio.run(handshake(port, 100_000))
        assert 300 < seen < 5000
        with pytest.raises(ChainTooLarge):  # our own count, below OpenSSL's limit
            asyncio.run(handshake(port, seen // 2))
