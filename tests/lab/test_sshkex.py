"""The lab's SSH does a real key exchange: OpenSSH's ssh-keyscan (which checks the host
key's signature over the exchange hash) gets the lab's key, and our ssh-hostkey and
nmap's agree on its fingerprint."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess

import pytest

import prtip_nb as pn
from prtip_nb.lab import Lab
from prtip_nb.lab.sshkex import SshKex, host_key_blob
from tests.conftest import need

HOST = "127.0.0.1"


def test_keyscan_nmap_and_ours_see_the_lab_host_key(netns: None, root: None, nmap: str) -> None:
    keyscan = shutil.which("ssh-keyscan")
    need(keyscan is not None, "needs ssh-keyscan (apt-get install openssh-client)")
    assert keyscan is not None
    port = 22  # where both tools' ssh-hostkey rules look without -sV
    with Lab(HOST, ssh=port):
        scan = subprocess.run([keyscan, "-T", "5", "-t", "ed25519", "-p", str(port), HOST],
                              capture_output=True, text=True, timeout=20)  # fmt: skip
        res = pn.scan(HOST, ports=str(port), scripts=["ssh-hostkey", "ssh2-enum-algos"],
                      script_args={"ssh_hostkey": "full"})
        xml = subprocess.run([nmap, "-sT", "-Pn", "-n", "-p", str(port), "--script",
                              "ssh-hostkey", "--script-args", "ssh_hostkey=full", "-oX", "-", HOST],
                             capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    blob = host_key_blob()
    b64 = base64.b64encode(blob).decode()
    assert f"ssh-ed25519 {b64}" in scan.stdout, scan.stderr  # the signature checked out
    md5 = hashlib.md5(blob).hexdigest()
    out = dict(zip(res.scripts["id"], res.scripts["output"], strict=True))
    assert md5 in out["ssh-hostkey"] and "(ED25519)" in out["ssh-hostkey"]
    assert md5 in xml and b64 in xml
    assert "curve25519-sha256" in out["ssh2-enum-algos"]


def test_malformed_input_hangs_up() -> None:
    kex = SshKex(b"SSH-2.0-lab\r\n")
    assert kex.feed(b"HELLO\r\n") == (b"Invalid SSH identification string.\r\n", True)
    kex = SshKex(b"SSH-2.0-lab\r\n")
    sent, done = kex.feed(b"SSH-2.0-x\r\n" + b"\xff\xff\xff\xff\x00")
    assert done and sent[5:6] == b"\x14"  # our KEXINIT went out, then the bad length ended it


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_fed_in_pieces_the_same_exchange(chunk: int) -> None:
    """The lab's loop delivers whatever recv gives: any split of the client's bytes works."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import x25519

    from prtip_nb.lab.sshkex import KEX, _kexinit, _packet, _string

    pub = x25519.X25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    client = (b"SSH-2.0-test\r\n" + _packet(_kexinit()) + _packet(b"\x1e" + _string(pub)))
    assert KEX[0] == "curve25519-sha256"
    kex = SshKex(b"SSH-2.0-lab\r\n")
    out, done = bytearray(), False
    for i in range(0, len(client), chunk):
        sent, done = kex.feed(client[i : i + chunk])
        out += sent
    assert done and b"\x1f" in out and out.endswith(out[-16:])  # a reply and NEWKEYS
