"""ssl-cert: the server's certificate (RFC 5280), as nmap prints it.

TLS from the first byte (the port's tunnel, or a TLS port number), or after STARTTLS on
SMTP (RFC 3207), FTP (RFC 4217 AUTH TLS), IMAP (RFC 3501), POP3 (RFC 2595).
"""

from __future__ import annotations

import hashlib
from typing import Any

from prtip_nb.nse.api import Output, Script
from prtip_nb.nse.builtin.text import _reply
from prtip_nb.nse.context import TLS_PORTS, Conn, Context

#: nmap's non-verbose name fields, in the order it prints them.
NAME_FIELDS = ("commonName", "organizationName", "stateOrProvinceName", "countryName")
_STARTTLS = {25: "smtp", 587: "smtp", 21: "ftp", 143: "imap", 110: "pop3"}
_STARTTLS_SERVICES = {"smtp": "smtp", "submission": "smtp", "ftp": "ftp", "imap": "imap",
                      "pop3": "pop3"}  # fmt: skip
#: OpenSSL's names for the curves (nmap prints them).
_CURVES = {"secp256r1": "prime256v1", "secp192r1": "prime192v1"}


def _rule(t: Any) -> bool:
    return (t.tunnel == "ssl" or t.service in ("https", "ssl") or t.service in
            _STARTTLS_SERVICES or (t.service is None and (t.port in TLS_PORTS
                                                           or t.port in _STARTTLS)))


async def _starttls(conn: Conn, proto: str) -> bool:
    """Upgrade ``conn``; False when the server declines (nothing to report, as nmap)."""
    if proto in ("smtp", "ftp"):
        await _reply(conn)
        if proto == "smtp":
            await conn.send(b"EHLO prtip-nb.example\r\n")
            await _reply(conn)
            await conn.send(b"STARTTLS\r\n")
        else:
            await conn.send(b"AUTH TLS\r\n")
        code, _ = await _reply(conn)
        if code not in (220, 234):
            return False
    elif proto == "imap":
        await conn.recv_line()
        await conn.send(b"a001 STARTTLS\r\n")
        if not (await conn.recv_line()).startswith(b"a001 OK"):
            return False
    else:  # pop3
        await conn.recv_line()
        await conn.send(b"STLS\r\n")
        if not (await conn.recv_line()).startswith(b"+OK"):
            return False
    await conn.start_tls()
    return True


def name_table(name: Any) -> list[list[Any]]:
    """An X.509 name as nmap's table: attribute short names, sorted (nmap's XML order)."""
    pairs = [(_attr_name(a), str(a.value)) for a in name]
    return [[k, v] for k, v in sorted(pairs)]


def _attr_name(attr: Any) -> str:
    from cryptography.x509.oid import NameOID

    names = {NameOID.COMMON_NAME: "commonName", NameOID.ORGANIZATION_NAME: "organizationName",
             NameOID.COUNTRY_NAME: "countryName", NameOID.LOCALITY_NAME: "localityName",
             NameOID.STATE_OR_PROVINCE_NAME: "stateOrProvinceName",
             NameOID.ORGANIZATIONAL_UNIT_NAME: "organizationalUnitName",
             NameOID.EMAIL_ADDRESS: "emailAddress", NameOID.SERIAL_NUMBER: "serialNumber",
             NameOID.DOMAIN_COMPONENT: "domainComponent"}  # fmt: skip
    return names.get(attr.oid, attr.oid.dotted_string)


def name_line(table: list[list[Any]]) -> str:
    """nmap's one-line name: its four usual fields, in its order."""
    d = dict(table)
    return "/".join(f"{k}={d[k]}" for k in NAME_FIELDS if k in d)


def _general_name(g: Any) -> str:
    from cryptography import x509

    if isinstance(g, x509.DNSName):
        return f"DNS:{g.value}"
    if isinstance(g, x509.IPAddress):
        return f"IP Address:{g.value}"
    if isinstance(g, x509.RFC822Name):
        return f"email:{g.value}"
    if isinstance(g, x509.UniformResourceIdentifier):
        return f"URI:{g.value}"
    return f"othername:{g.value!r}"


def _colon_hex(b: bytes) -> str:
    return ":".join(f"{x:02X}" for x in b)


_EKU = {"1.3.6.1.5.5.7.3.1": "TLS Web Server Authentication",
        "1.3.6.1.5.5.7.3.2": "TLS Web Client Authentication",
        "1.3.6.1.5.5.7.3.3": "Code Signing", "1.3.6.1.5.5.7.3.4": "E-mail Protection",
        "1.3.6.1.5.5.7.3.8": "Time Stamping", "1.3.6.1.5.5.7.3.9": "OCSP Signing"}  # fmt: skip
_KU = (("digital_signature", "Digital Signature"), ("content_commitment", "Non Repudiation"),
       ("key_encipherment", "Key Encipherment"), ("data_encipherment", "Data Encipherment"),
       ("key_agreement", "Key Agreement"), ("key_cert_sign", "Certificate Sign"),
       ("crl_sign", "CRL Sign"))  # fmt: skip


def _extension(ext: Any) -> tuple[str, str] | None:
    """(OpenSSL's name, its text) of the extensions nmap's output shows most."""
    from cryptography import x509

    v = ext.value
    if isinstance(v, x509.SubjectAlternativeName):
        return "X509v3 Subject Alternative Name", ", ".join(_general_name(g) for g in v)
    if isinstance(v, x509.BasicConstraints):
        text = f"CA:{'TRUE' if v.ca else 'FALSE'}"
        return "X509v3 Basic Constraints", text + (f", pathlen:{v.path_length}"
                                                   if v.path_length is not None else "")
    if isinstance(v, x509.ExtendedKeyUsage):
        return "X509v3 Extended Key Usage", ", ".join(_EKU.get(o.dotted_string, o.dotted_string)
                                                      for o in v)  # fmt: skip
    if isinstance(v, x509.KeyUsage):
        on = [label for attr, label in _KU if getattr(v, attr)]
        if v.key_agreement:
            on += [x for x, f in (("Encipher Only", v.encipher_only),
                                  ("Decipher Only", v.decipher_only)) if f]  # fmt: skip
        return "X509v3 Key Usage", ", ".join(on)
    if isinstance(v, x509.SubjectKeyIdentifier):
        return "X509v3 Subject Key Identifier", _colon_hex(v.digest)
    if isinstance(v, x509.AuthorityKeyIdentifier) and v.key_identifier is not None:
        return "X509v3 Authority Key Identifier", _colon_hex(v.key_identifier)
    return None


def describe(der: bytes, *, verbose: bool = True) -> Output:
    """A certificate as nmap's ssl-cert output and data. Not ``verbose`` (nmap at -v0, as
    for a script run by category: -sC, -A), the text is the subject, the SAN and the dates
    only; the data is the same either way."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    cert = x509.load_der_x509_certificate(der)
    subject, issuer = name_table(cert.subject), name_table(cert.issuer)
    key = cert.public_key()
    pub: list[list[Any]]
    if isinstance(key, rsa.RSAPublicKey):
        n = key.public_numbers()
        pub = [["type", "rsa"], ["bits", str(key.key_size)], ["modulus", f"{n.n:X}"],
               ["exponent", str(n.e)]]  # fmt: skip
    elif isinstance(key, ec.EllipticCurvePublicKey):
        curve = _CURVES.get(key.curve.name, key.curve.name)
        pub = [["type", "ec"], ["bits", str(key.key_size)], ["ecdhparams", [["curve_params", [
            ["ec_curve_type", "namedcurve"], ["curve", curve]]]]]]  # fmt: skip
    elif isinstance(key, dsa.DSAPublicKey):
        pub = [["type", "dsa"], ["bits", str(key.key_size)]]
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        ed = "ED25519" if isinstance(key, ed25519.Ed25519PublicKey) else "ED448"
        pub = [["type", ed], ["bits", "256" if ed == "ED25519" else "456"]]
    else:
        pub = [["type", "unknown"]]
    exts: list[list[Any]] = []
    san = None
    for ext in cert.extensions:
        named = _extension(ext)
        if named is None:
            continue
        item = [["name", named[0]], ["value", named[1]]]
        if ext.critical:
            item.append(["critical", "true"])
        exts.append([None, item])
        if named[0] == "X509v3 Subject Alternative Name":
            san = named[1]
    sig = cert.signature_algorithm_oid._name  # OpenSSL's short names, as nmap prints them
    before = cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%S")
    after = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%S")
    md5, sha1 = hashlib.md5(der).hexdigest(), hashlib.sha1(der).hexdigest()
    sha256 = hashlib.sha256(der).hexdigest()
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    data: list[list[Any]] = [["subject", subject], ["issuer", issuer], ["pubkey", pub]]
    if exts:
        data.append(["extensions", exts])
    data += [["sig_algo", sig], ["validity", [["notBefore", before], ["notAfter", after]]],
             ["md5", md5], ["sha1", sha1], ["sha256", sha256], ["pem", pem]]  # fmt: skip
    lines = [f"Subject: {name_line(subject)}"]
    if san:
        lines.append(f"Subject Alternative Name: {san}")
    if verbose:
        lines += [f"Issuer: {name_line(issuer)}", f"Public Key type: {dict(pub)['type']}"]
        if "bits" in dict(pub):
            lines.append(f"Public Key bits: {dict(pub)['bits']}")
        lines.append(f"Signature Algorithm: {sig}")
    lines += [f"Not valid before: {before}", f"Not valid after:  {after}"]
    if verbose:
        lines += [f"MD5:   {md5}", f"SHA-1: {sha1}"]
    return Output("\n".join(lines), data)


class SslCert(Script):
    """The server's certificate: subject, SAN, issuer, key, signature algorithm,
    validity, fingerprints, as nmap prints it when named in ``--script`` (which nmap runs
    one verbosity up)::

        | ssl-cert: Subject: commonName=prtip-lab.test
        | Subject Alternative Name: DNS:prtip-lab.test, IP Address:127.0.0.1
        | Issuer: commonName=prtip-lab.test
        | Public Key type: ec
        | Public Key bits: 256
        | Signature Algorithm: ecdsa-with-SHA256
        | Not valid before: 2026-12-05T02:17:41
        | Not valid after:  2027-01-04T02:18:41
        | MD5:   0e5ae66961234db7a67e0fd27d4228a6
        |_SHA-1: ace7cc09663cc04234034ac7c9b553d5623b7d6d

    Run by category (``-sC``, ``-A``, ``--script default``), nmap prints the subject, the
    SAN and the two dates only, and so do we::

        | ssl-cert: Subject: commonName=prtip-lab.test
        | Subject Alternative Name: DNS:prtip-lab.test, IP Address:127.0.0.1
        | Not valid before: 2026-12-05T02:17:41
        |_Not valid after:  2027-01-04T02:18:41

    nmap 7.93's text, its quirks kept (two spaces after "after:", three after "MD5:"; the
    name line shows commonName, organizationName, stateOrProvinceName and countryName only;
    the data's name tables are sorted). Data as nmap's (subject, issuer, pubkey,
    extensions, sig_algo, validity, md5, sha1, pem) plus ``sha256``, which nmap 7.93 lacks.
    """

    id = "ssl-cert"
    categories = ("default", "safe", "discovery")
    rule = staticmethod(_rule)
    timeout = 15.0

    def __init__(self) -> None:
        self.description = self.__doc__ or ""

    async def run(self, ctx: Context) -> Output | None:
        t = ctx.target
        proto = None
        if not ctx.tls:
            proto = _STARTTLS_SERVICES.get(t.service or "") or (
                _STARTTLS.get(t.port or 0) if t.service is None else None)
            if proto is None:
                return None
        async with await ctx.connect(tls=proto is None) as conn:
            if proto is not None and not await _starttls(conn, proto):
                return None
            der = conn.peer_cert()
        if not der:
            return None
        return describe(der, verbose=bool(ctx.verbosity))


SCRIPTS = [SslCert()]
