"""SSH scripts, from RFC 4253 (transport: version exchange, binary packets, KEXINIT),
RFC 5656 (ECDH key exchange), RFC 8731 (curve25519-sha256), RFC 4716 (MD5 fingerprints)
and the HASSH method (Salesforce, 2018: MD5 of the server's algorithm lists).

The host key travels in the server's key-exchange reply, so ``ssh-hostkey`` runs one key
exchange per host-key algorithm the server offers (ECDH only: no shared secret is used,
nothing is authenticated, the connection closes before NEWKEYS).
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from typing import Any

from prtip_nb.nse.api import Output, Script
from prtip_nb.nse.context import Conn, Context, ScriptError

CLIENT_VERSION = b"SSH-2.0-prtip_nb\r\n"
MSG_KEXINIT, MSG_KEX_ECDH_INIT, MSG_KEX_ECDH_REPLY = 20, 30, 31
NAME_LISTS = ("kex_algorithms", "server_host_key_algorithms",
              "encryption_algorithms_client_to_server", "encryption_algorithms_server_to_client",
              "mac_algorithms_client_to_server", "mac_algorithms_server_to_client",
              "compression_algorithms_client_to_server",
              "compression_algorithms_server_to_client")  # fmt: skip
_KEX = ("curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256",
        "ecdh-sha2-nistp384", "ecdh-sha2-nistp521")  # fmt: skip
_LABELS = {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA", "ssh-dss": "DSA", "ssh-ed448": "ED448",
           "ecdsa-sha2-nistp256": "ECDSA", "ecdsa-sha2-nistp384": "ECDSA",
           "ecdsa-sha2-nistp521": "ECDSA", "rsa-sha2-256": "RSA", "rsa-sha2-512": "RSA"}
#: Host-key algorithms that name one key (rsa-sha2-* sign with the ssh-rsa key).
_KEY_ALGS = ("ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "ssh-ed25519", "ssh-ed448")  # fmt: skip


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _packet(payload: bytes) -> bytes:
    """RFC 4253 6: length, padding length, payload, padding (no MAC before NEWKEYS)."""
    pad = 8 - (len(payload) + 5) % 8
    pad += 8 if pad < 4 else 0
    return struct.pack(">IB", len(payload) + 1 + pad, pad) + payload + os.urandom(pad)


def _kexinit(kex: list[str], host_keys: list[str]) -> bytes:
    lists = [",".join(kex), ",".join(host_keys)]
    lists += ["aes128-ctr,aes256-ctr,chacha20-poly1305@openssh.com,aes128-gcm@openssh.com"] * 2
    lists += ["hmac-sha2-256,hmac-sha1,umac-64-etm@openssh.com"] * 2 + ["none"] * 2 + [""] * 2
    body = bytes([MSG_KEXINIT]) + os.urandom(16) + b"".join(_string(x.encode()) for x in lists)
    return body + b"\x00" + b"\x00\x00\x00\x00"


async def _hello(conn: Conn) -> str:
    """Exchange versions (RFC 4253 4.2: the server may send other lines first)."""
    await conn.send(CLIENT_VERSION)
    for _ in range(20):
        line = await conn.recv_line(255)
        if line.startswith(b"SSH-"):
            return line.rstrip(b"\r\n").decode("utf-8", "replace")
        if not line:
            break
    raise ScriptError("no SSH version line")


async def _read_packet(conn: Conn) -> bytes:
    head = b""
    while len(head) < 5:
        chunk = await conn.recv(5 - len(head))
        if not chunk:
            raise ScriptError("the server closed the connection")
        head += chunk
    length, pad = struct.unpack(">IB", head)
    if not 5 <= length <= 35000 or pad >= length:
        raise ScriptError(f"bad SSH packet length {length}")
    body = bytearray()
    while len(body) < length - 1:
        chunk = await conn.recv(length - 1 - len(body))
        if not chunk:
            raise ScriptError("the server closed the connection mid-packet")
        body += chunk
    return bytes(body[: length - 1 - pad])


def _read_string(buf: bytes, i: int) -> tuple[bytes, int]:
    if i + 4 > len(buf):
        raise ScriptError("a truncated SSH string")
    (n,) = struct.unpack_from(">I", buf, i)
    if i + 4 + n > len(buf):
        raise ScriptError("a truncated SSH string")
    return buf[i + 4:i + 4 + n], i + 4 + n


def parse_kexinit(payload: bytes) -> dict[str, list[str]]:
    if not payload or payload[0] != MSG_KEXINIT:
        raise ScriptError(f"expected KEXINIT, got message {payload[:1].hex()}")
    i, out = 17, {}
    for name in NAME_LISTS:
        raw, i = _read_string(payload, i)
        out[name] = [x for x in raw.decode("ascii", "replace").split(",") if x]
    return out


async def server_kexinit(ctx: Context) -> dict[str, list[str]]:
    async with await ctx.connect() as conn:
        await _hello(conn)
        return parse_kexinit(await _read_packet(conn))


def hassh(algs: dict[str, list[str]]) -> tuple[str, str]:
    """HASSHServer: MD5 of kex;encryption;mac;compression (server to client)."""
    text = ";".join(",".join(algs[k]) for k in (
        "kex_algorithms", "encryption_algorithms_server_to_client",
        "mac_algorithms_server_to_client", "compression_algorithms_server_to_client"))
    return hashlib.md5(text.encode()).hexdigest(), text


def _client_key(kex: str) -> tuple[bytes, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, x25519

    if kex.startswith("curve25519"):
        k = x25519.X25519PrivateKey.generate()
        return k.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw), k  # fmt: skip
    curve = {"ecdh-sha2-nistp256": ec.SECP256R1(), "ecdh-sha2-nistp384": ec.SECP384R1(),
             "ecdh-sha2-nistp521": ec.SECP521R1()}[kex]  # fmt: skip
    k2 = ec.generate_private_key(curve)
    return k2.public_key().public_bytes(serialization.Encoding.X962,
                                        serialization.PublicFormat.UncompressedPoint), k2


async def host_key(ctx: Context, key_alg: str, server_kex: list[str]) -> bytes:
    """The server's host key blob for ``key_alg``, from one ECDH key exchange."""
    kex = next((k for k in _KEX if k in server_kex), None)
    if kex is None:
        raise ScriptError(f"no key exchange in common (server offers {server_kex[:4]})")
    async with await ctx.connect() as conn:
        await _hello(conn)
        await conn.send(_packet(_kexinit([kex], [key_alg])))
        parse_kexinit(await _read_packet(conn))
        pub, _ = _client_key(kex)
        await conn.send(_packet(bytes([MSG_KEX_ECDH_INIT]) + _string(pub)))
        for _ in range(8):
            payload = await _read_packet(conn)
            if payload[:1] == bytes([MSG_KEX_ECDH_REPLY]):
                blob, _ = _read_string(payload, 1)
                return blob
        raise ScriptError("no key exchange reply")


def key_bits(blob: bytes) -> int:
    kind, i = _read_string(blob, 0)
    name = kind.decode("ascii", "replace")
    if name == "ssh-rsa":
        _, i = _read_string(blob, i)  # e
        n, _ = _read_string(blob, i)
        return int.from_bytes(n, "big").bit_length()
    if name == "ssh-dss":
        p, _ = _read_string(blob, i)
        return int.from_bytes(p, "big").bit_length()
    if name.startswith("ecdsa-sha2-nistp"):
        return int(name.removeprefix("ecdsa-sha2-nistp"))
    return {"ssh-ed25519": 256, "ssh-ed448": 456}.get(name, 0)


class SshHostkey(Script):
    """The server's host keys: bits, MD5 fingerprint (RFC 4716, no colons) and type::

        | ssh-hostkey:
        |   256 d73867ae00009ab516dd8eff4dfa49d0 (ED25519)
        |_  3072 3a27...e1 (RSA)

    Data: a keyless table per key with ``fingerprint`` (MD5 hex), ``key`` (base64),
    ``bits``, ``type`` (nmap's keys, its order) and ``sha256`` (OpenSSH's ``SHA256:...``
    form, which nmap 7.93 does not give).
    """

    id = "ssh-hostkey"
    categories = ("safe", "default", "discovery")
    ports = (22,)
    services = ("ssh",)

    def __init__(self) -> None:
        self.description = self.__doc__ or ""

    async def run(self, ctx: Context) -> Output | None:
        algs = await server_kexinit(ctx)
        offered = algs["server_host_key_algorithms"]
        wanted = [a for a in _KEY_ALGS if a in offered or (
            a == "ssh-rsa" and any(o.startswith("rsa-sha2") for o in offered))]
        lines, data = [], []
        for alg in wanted:
            blob = await host_key(ctx, alg if alg in offered else "rsa-sha2-512", algs[
                "kex_algorithms"])  # fmt: skip
            kind = _read_string(blob, 0)[0].decode("ascii", "replace")
            md5 = hashlib.md5(blob).hexdigest()
            sha = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
            bits = key_bits(blob)
            lines.append(f"  {bits} {md5} ({_LABELS.get(kind, kind)})")
            data.append([None, [["fingerprint", md5], ["key", base64.b64encode(blob).decode()],
                                ["bits", str(bits)], ["type", kind],
                                ["sha256", f"SHA256:{sha}"]]])  # fmt: skip
        if not lines:
            return None
        return Output("\n" + "\n".join(lines), data)


class Ssh2EnumAlgos(Script):
    """The algorithms the server offers (its KEXINIT), server-to-client lists, with
    their counts, and its HASSH fingerprint::

        | ssh2-enum-algos:
        |   kex_algorithms: (12)
        |       curve25519-sha256
        |       ...
        |   server_host_key_algorithms: (1)
        |       ssh-ed25519
        |   encryption_algorithms: (6)
        |   mac_algorithms: (10)
        |   compression_algorithms: (2)
        |       none
        |       zlib@openssh.com
        |_  hassh: 2307c390c7c9aba5b4c9519e72347f34

    nmap's text (names indented six spaces under their list) and data (a table of keyless
    elems per list); ``hassh`` and ``hassh_string`` are ours, after nmap's keys.
    """

    id = "ssh2-enum-algos"
    categories = ("safe", "discovery")
    ports = (22,)
    services = ("ssh",)

    def __init__(self) -> None:
        self.description = self.__doc__ or ""

    async def run(self, ctx: Context) -> Output | None:
        algs = await server_kexinit(ctx)
        shown = [("kex_algorithms", "kex_algorithms"),
                 ("server_host_key_algorithms", "server_host_key_algorithms"),
                 ("encryption_algorithms", "encryption_algorithms_server_to_client"),
                 ("mac_algorithms", "mac_algorithms_server_to_client"),
                 ("compression_algorithms", "compression_algorithms_server_to_client")]
        lines: list[str] = []
        data: list[list[Any]] = []
        for label, key in shown:
            names = algs[key]
            lines.append(f"  {label}: ({len(names)})")
            lines += [f"      {n}" for n in names]
            data.append([label, [[None, n] for n in names]])
        digest, text = hassh(algs)
        lines.append(f"  hassh: {digest}")
        data += [["hassh", digest], ["hassh_string", text]]
        return Output("\n" + "\n".join(lines), data)


SCRIPTS = [SshHostkey(), Ssh2EnumAlgos()]
