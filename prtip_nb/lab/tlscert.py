"""The lab's self-signed TLS certificate, made fresh at each start (or read from a file).

EC P-256 rather than RSA 2048: key generation takes about a millisecond instead of tens to
hundreds, and every TLS client a scanner uses accepts it. The certificate is the ground
truth for a scanner's TLS columns, so its facts travel with it in ``LabCert``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import ssl
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from prtip_nb.lab.services import LAB_DNS_NAME

VALID_DAYS = 30


@dataclass(frozen=True)
class LabCert:
    """A certificate and its key (PEM), with the facts a TLS scan should report."""

    cert_pem: bytes
    key_pem: bytes
    subject: str  # RFC 4514, e.g. "CN=prtip-lab.test"
    issuer: str
    san: tuple[str, ...]  # plain values: ("prtip-lab.test", "127.0.0.1")
    not_before: dt.datetime
    not_after: dt.datetime

    @property
    def der(self) -> bytes:
        return ssl.PEM_cert_to_DER_cert(self.cert_pem.decode("ascii"))


def make_cert(host: str, *, days: int = VALID_DAYS) -> LabCert:
    """A self-signed certificate for CN ``prtip-lab.test``, SAN that name and ``host``'s IP."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone is no part of the SAN
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LAB_DNS_NAME)])
    # Back-date by a minute so a client whose clock lags a little still accepts the cert.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    not_before = now - dt.timedelta(minutes=1)
    not_after = now + dt.timedelta(days=days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(63) + 1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(LAB_DNS_NAME), x509.IPAddress(ip)]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return LabCert(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        subject=name.rfc4514_string(),
        issuer=name.rfc4514_string(),
        san=(LAB_DNS_NAME, str(ip)),
        not_before=not_before,
        not_after=not_after,
    )


def load_cert(path: str | os.PathLike[str]) -> LabCert:
    """A certificate and its private key from one PEM file (``--tls-cert``): a lab that
    serves a given certificate (expiring soon, not valid yet, another name) instead of a
    fresh one. Its facts, read from the file, are the truth as for a made one."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from prtip_nb.errors import ConfigError

    try:
        with open(path, "rb") as f:
            data = f.read()
        cert = x509.load_pem_x509_certificate(data)
        key = load_pem_private_key(data, password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--tls-cert {path}: {exc}",
                          hint="one PEM file holding the certificate and its unencrypted key"
                          ) from exc  # fmt: skip
    try:
        san = tuple(str(g.value) for g in cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value)  # fmt: skip
    except x509.ExtensionNotFound:
        san = ()
    return LabCert(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),  # fmt: skip
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        san=san,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def server_context(cert: LabCert) -> ssl.SSLContext:
    """A server-side SSLContext that presents ``cert``.

    ``load_cert_chain`` reads only files, so the PEMs go to a private temporary directory
    that is removed as soon as they are loaded: the key never outlives this call on disk,
    even if the process is killed later.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="prtip-lab-") as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert.key_pem)
        with open(cert_path, "wb") as f:
            f.write(cert.cert_pem)
        ctx.load_cert_chain(cert_path, key_path)
    return ctx
