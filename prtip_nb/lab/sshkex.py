"""The lab's SSH server side up to a real key exchange (RFC 4253 sections 4-8, RFC 5656
and RFC 8731): version exchange, KEXINIT, ECDH with an Ed25519 host key, NEWKEYS.

Sans-IO: ``SshKex.feed(bytes)`` returns what to send and whether to hang up, so the lab's
selector loop drives it (``services.SshConn``). The exchange hash is the real one and the
host key signs it, so OpenSSH's own client (``ssh-keyscan``, which checks the signature)
and nmap's ssh-hostkey accept the key; after NEWKEYS the lab hangs up (a scanner has what
it came for: the algorithms, the host key, its fingerprints).

Key exchange: curve25519-sha256 (and its @libssh.org name), ecdh-sha2-nistp256 and
diffie-hellman-group14-sha256/-sha1 (RFC 4253 8, RFC 8268; nmap's ssh2 library); host
key: ssh-ed25519 only, one per process (the lab's fingerprints stay put while it runs).
"""

from __future__ import annotations

import hashlib
import os
import struct
from functools import lru_cache
from typing import Any

MSG_DISCONNECT, MSG_KEXINIT, MSG_NEWKEYS = 1, 20, 21
MSG_KEX_ECDH_INIT, MSG_KEX_ECDH_REPLY = 30, 31
KEX = ("curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256",
       "diffie-hellman-group14-sha256", "diffie-hellman-group14-sha1")
#: RFC 3526's 2048-bit MODP group (group 14), generator 2: nmap's ssh-hostkey asks for it.
GROUP14 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
    "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
    "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
    "955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)
HOST_KEY_ALGS = ("ssh-ed25519",)
CIPHERS = ("chacha20-poly1305@openssh.com", "aes128-ctr", "aes256-ctr",
           "aes128-gcm@openssh.com", "aes256-gcm@openssh.com")  # fmt: skip
MACS = ("umac-64-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "hmac-sha2-256",
        "hmac-sha1")  # fmt: skip
COMPRESSION = ("none", "zlib@openssh.com")
MAX_PACKET = 35000  # RFC 4253 6.1: what every implementation must take
MAX_VERSION_LINE = 255


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _mpint(b: bytes) -> bytes:
    """An unsigned big-endian number as an SSH mpint (RFC 4251 5)."""
    b = b.lstrip(b"\0")
    if b and b[0] & 0x80:
        b = b"\0" + b
    return _string(b)


def _mpint_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def _packet(payload: bytes) -> bytes:
    """An unencrypted binary packet (RFC 4253 6): padded to 8 bytes, 4 at least."""
    pad = 8 - (len(payload) + 5) % 8
    pad += 8 if pad < 4 else 0
    return struct.pack(">IB", len(payload) + pad + 1, pad) + payload + os.urandom(pad)


def _names(*lists: tuple[str, ...]) -> bytes:
    return b"".join(_string(",".join(x).encode()) for x in lists)


def _kexinit() -> bytes:
    return (bytes([MSG_KEXINIT]) + os.urandom(16)
            + _names(KEX, HOST_KEY_ALGS, CIPHERS, CIPHERS, MACS, MACS, COMPRESSION, COMPRESSION,
                     (), ())
            + b"\0" + b"\0\0\0\0")  # fmt: skip


def _read_string(buf: bytes, i: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from(">I", buf, i)
    if i + 4 + n > len(buf):
        raise ValueError("string runs past the packet")
    return buf[i + 4 : i + 4 + n], i + 4 + n


@lru_cache(maxsize=1)
def host_key() -> Any:
    """The process's Ed25519 host key (made once)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate()


def host_key_blob() -> bytes:
    """The public host key as SSH writes it (RFC 8709): what fingerprints hash."""
    from cryptography.hazmat.primitives import serialization

    raw = host_key().public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)  # fmt: skip
    return _string(b"ssh-ed25519") + _string(raw)


def _ecdh(kex: str, q_c: bytes) -> tuple[bytes, bytes]:
    """(our ephemeral public key Q_S, the shared secret K as bytes) for the client's Q_C."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, x25519

    if kex.startswith("curve25519"):
        k = x25519.X25519PrivateKey.generate()
        q_s = k.public_key().public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw)  # fmt: skip
        return q_s, k.exchange(x25519.X25519PublicKey.from_public_bytes(q_c))
    k2 = ec.generate_private_key(ec.SECP256R1())
    q_s = k2.public_key().public_bytes(serialization.Encoding.X962,
                                       serialization.PublicFormat.UncompressedPoint)
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), q_c)
    return q_s, k2.exchange(ec.ECDH(), peer)


class SshKex:
    """One connection's server side: ``greeting`` first, then ``feed`` what comes."""

    def __init__(self, banner: bytes) -> None:
        self.greeting = banner  # "SSH-2.0-...\r\n"
        self._v_s = banner.rstrip(b"\r\n")
        self._v_c: bytes | None = None
        self._i_s = _kexinit()
        self._i_c: bytes | None = None
        self._kex: str | None = None
        self._buf = bytearray()

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """Bytes to send back, and whether to hang up after them."""
        self._buf += data
        out = bytearray()
        try:
            if self._v_c is None:
                line, sep, rest = bytes(self._buf).partition(b"\n")
                if not sep:
                    return b"", len(self._buf) > MAX_VERSION_LINE
                if not line.startswith(b"SSH-2.0-") and not line.startswith(b"SSH-1.99-"):
                    return b"Invalid SSH identification string.\r\n", True
                self._v_c, self._buf = line.rstrip(b"\r"), bytearray(rest)
                out += _packet(self._i_s)
            while len(self._buf) >= 5:
                (n,) = struct.unpack_from(">I", self._buf, 0)
                if not 5 <= n <= MAX_PACKET:
                    return bytes(out), True
                if len(self._buf) < 4 + n:
                    break
                pad = self._buf[4]
                payload = bytes(self._buf[5 : 4 + n - pad])
                del self._buf[: 4 + n]
                reply, done = self._message(payload)
                out += reply
                if done:
                    return bytes(out), True
        except ValueError:  # a malformed message: a real server disconnects too
            return bytes(out), True
        return bytes(out), False

    def _message(self, payload: bytes) -> tuple[bytes, bool]:
        kind = payload[:1]
        if kind == bytes([MSG_KEXINIT]):
            self._i_c = payload
            theirs, _ = _read_string(payload, 17)
            offered = theirs.decode("ascii", "replace").split(",")
            self._kex = next((k for k in offered if k in KEX), None)  # the client's order wins
            return b"", self._kex is None
        if kind == bytes([MSG_KEX_ECDH_INIT]) and self._kex and self._i_c is not None:
            # KEXDH_INIT and KEX_ECDH_INIT share the number 30; the DH values are mpints.
            q_c, _ = _read_string(payload, 1)
            dh = self._kex.startswith("diffie-hellman")
            if dh:
                y = int.from_bytes(os.urandom(32), "big")
                e = int.from_bytes(q_c, "big")
                if not 1 < e < GROUP14 - 1:
                    raise ValueError("DH value out of range")
                f = pow(2, y, GROUP14)
                q_s, secret = _mpint_bytes(f), _mpint_bytes(pow(e, y, GROUP14))
            else:
                q_s, secret = _ecdh(self._kex, q_c)
            pack = _mpint if dh else _string
            k_s = host_key_blob()
            digest = hashlib.sha1 if self._kex.endswith("sha1") else hashlib.sha256
            h = digest(b"".join([
                _string(self._v_c or b""), _string(self._v_s), _string(self._i_c),
                _string(self._i_s), _string(k_s), pack(q_c), pack(q_s), _mpint(secret),
            ])).digest()  # fmt: skip
            sig = _string(b"ssh-ed25519") + _string(host_key().sign(h))
            reply = bytes([MSG_KEX_ECDH_REPLY]) + _string(k_s) + pack(q_s) + _string(sig)
            return _packet(reply) + _packet(bytes([MSG_NEWKEYS])), True
        if kind == bytes([MSG_DISCONNECT]):
            return b"", True
        return b"", False  # IGNORE, DEBUG and the like
