"""TLS facts: the client context prtip_nb handshakes with, and certificate parsing.

The handshake never verifies: a scanner wants to see *whatever* certificate a port shows,
self-signed, expired or for another name, and to reach servers that only speak old
protocol versions (SECLEVEL 0, TLS 1.0 allowed). Only the leaf certificate is parsed
(Python's ``ssl`` exposes no unverified chain before 3.13); the chain's *size* is bounded by
the engine, which counts handshake bytes as they arrive.

``cryptography`` is imported by this module: import it only when a handshake has happened,
never from ``import prtip_nb``.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from .text import escape_bytes

#: Longest subject/issuer/SAN entry kept, after escaping (certificates are peer input too).
NAME_MAX = 512
SAN_MAX = 64  # entries


@dataclass(frozen=True, slots=True)
class CertInfo:
    """The leaf certificate's facts, as the ports table and the event log show them."""

    subject: str  # RFC 4514, e.g. "CN=prtip-lab.test"
    issuer: str
    san: tuple[str, ...]  # DNS names and IP addresses as plain text; others as "URI:..."
    not_before: datetime
    not_after: datetime
    key_type: str  # RSA, EC, Ed25519, Ed448, DSA
    key_bits: int | None
    curve: str | None
    sigalg: str | None  # e.g. "sha256WithRSAEncryption", "ecdsa-with-SHA256"
    self_signed: bool
    sha256: str  # fingerprint of the DER, hex with colons

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["san"] = list(self.san)
        d["not_before"] = self.not_before.isoformat()
        d["not_after"] = self.not_after.isoformat()
        return d


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """One completed handshake: what was negotiated, and the certificate shown."""

    version: str | None  # "TLSv1.3"
    cipher: str | None
    alpn: str | None
    cert: CertInfo | None
    handshake_bytes: int  # bytes received until the handshake completed

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "cipher": self.cipher,
            "alpn": self.alpn,
            "handshake_bytes": self.handshake_bytes,
            "cert": None if self.cert is None else self.cert.to_dict(),
        }


@cache
def client_context(alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    """A client context that accepts any certificate and any protocol version it can."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:  # an OpenSSL without security levels
        ctx.set_ciphers("ALL")
    if alpn:
        # Only HTTP/1.1 by default: a server that picked h2 would answer our HTTP/1.0
        # probe with binary frames. ALPN still shows whether the server speaks ALPN.
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def _text(value: str, limit: int = NAME_MAX) -> str:
    return escape_bytes(value.encode("utf-8", "replace"), limit)


def _key(cert: x509.Certificate) -> tuple[str, int | None, str | None]:
    try:
        key = cert.public_key()
    except (ValueError, TypeError):  # an algorithm cryptography does not know
        return "unknown", None, None
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size, None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size, key.curve.name
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, None
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456, None
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size, None
    return type(key).__name__, None, None


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return ()
    out: list[str] = []
    for name in ext.value:
        if isinstance(name, x509.DNSName | x509.IPAddress):
            out.append(_text(str(name.value)))
        elif isinstance(name, x509.UniformResourceIdentifier | x509.RFC822Name):
            kind = "URI" if isinstance(name, x509.UniformResourceIdentifier) else "email"
            out.append(f"{kind}:{_text(name.value)}")
        if len(out) >= SAN_MAX:
            break
    return tuple(out)


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)  # the signature checks out with its own key
    except Exception:  # InvalidSignature, unsupported algorithms, ...
        return False
    return True


def parse_certificate(der: bytes) -> CertInfo:
    """The facts of a DER certificate. Raises ``ValueError`` if it does not parse."""
    cert = x509.load_der_x509_certificate(der)
    key_type, bits, curve = _key(cert)
    try:
        sigalg = cert.signature_algorithm_oid._name  # e.g. "sha256WithRSAEncryption"
    except Exception:
        sigalg = None
    digest = hashlib.sha256(der).hexdigest().upper()
    return CertInfo(
        subject=_text(cert.subject.rfc4514_string()),
        issuer=_text(cert.issuer.rfc4514_string()),
        san=_sans(cert),
        not_before=cert.not_valid_before_utc.astimezone(UTC),
        not_after=cert.not_valid_after_utc.astimezone(UTC),
        key_type=key_type,
        key_bits=bits,
        curve=curve,
        sigalg=sigalg,
        self_signed=_self_signed(cert),
        sha256=":".join(digest[i : i + 2] for i in range(0, len(digest), 2)),
    )


def tls_info(obj: ssl.SSLObject, handshake_bytes: int) -> TlsInfo:
    """Read the negotiated parameters and the certificate off a completed handshake."""
    der = obj.getpeercert(binary_form=True)
    cert = None
    if der:
        try:
            cert = parse_certificate(der)
        except ValueError:
            cert = None
    cipher = obj.cipher()
    return TlsInfo(
        version=obj.version(),
        cipher=cipher[0] if cipher else None,
        alpn=obj.selected_alpn_protocol(),
        cert=cert,
        handshake_bytes=handshake_bytes,
    )
