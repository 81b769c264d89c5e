"""Issue 16 item 3: run as root, ``prtip-nb scan`` opens its raw and capture sockets, then
becomes the sudo caller (or nobody) with no capabilities before it parses anything.

The CLI runs as a real program (tests/net/privdrop_run.py) with a planted parser bug: when
the X.509 parser or the banner reader runs, it reports /proc/self/status of every thread
and tries to write a root-owned file. The lab and nmap keep root in this test's process.

The interpreter here may live under a home only root can read (/root/.pyenv): the program
then keeps root and says why. The scans run in a private mount namespace where that home
is a tmpfs with the interpreter's folder bound back in, as on a machine whose Python is
installed for every user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from prtip_nb.lab import Lab
from prtip_nb.net.privileges import install_paths

from ..conftest import need
from .nmapxml import nmap_states

HOST = "127.0.0.1"
RUN = str(Path(__file__).with_name("privdrop_run.py"))
REPO = str(Path(__file__).resolve().parents[2])
NOBODY = 65534


def _hidden_homes() -> list[tuple[str, str]]:
    """(home only root can traverse, its child on our path) for every install path."""
    out = []
    for path in [*install_paths(), REPO, sys.executable]:
        parts = Path(os.path.abspath(path)).parts
        for i in range(1, len(parts) - 1):
            d = os.path.join(*parts[: i + 1])
            if os.stat(d).st_mode & 0o001 == 0:
                pair = (d, parts[i + 1])
                if pair not in out:
                    out.append(pair)
                break
    return out


def _program(args: list[str], env: dict[str, str] | None = None, *, code: str | None = None,
             ) -> subprocess.CompletedProcess[str]:
    """``prtip-nb ARGS`` as a program (or Python ``code``), in a mount namespace where
    Python is readable."""
    script = "set -e\n"
    homes: dict[str, list[str]] = {}
    for home, child in _hidden_homes():
        homes.setdefault(home, []).append(child)
    for n, (home, children) in enumerate(homes.items()):
        keep = f"/tmp/.privdrop-keep{os.getpid()}-{n}"
        script += (f"mkdir -p {keep} && mount --bind {home} {keep}\n"
                   f"mount -t tmpfs -o mode=755 tmpfs {home}\n")
        for child in children:
            script += f"mkdir -p {home}/{child} && mount --bind {keep}/{child} {home}/{child}\n"
        script += f"umount -l {keep} && rmdir {keep}\n"
    script += 'exec "$@"\n'
    full = {k: v for k, v in os.environ.items() if k not in ("SUDO_UID", "SUDO_GID")}
    full.update(PYTHONPATH=REPO, **(env or {}))
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script, "privdrop",
         sys.executable, *(["-c", code] if code else [RUN]), *args],
        capture_output=True, text=True, timeout=120, env=full, cwd="/")


def _hooks(stderr: str) -> dict[str, dict]:
    return {h["where"]: h for h in (json.loads(line.split(" ", 1)[1])
                                    for line in stderr.splitlines()
                                    if line.startswith("PRIVDROP-HOOK "))}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    from ..conftest import in_netns

    need(in_netns(), "needs a private network namespace: run under scripts/in-netns")
    need(os.geteuid() == 0, "needs root (the drop is from root)")
    need(shutil.which("unshare") is not None, "needs unshare (util-linux)")
    with Lab(HOST, ssh=0, https=0, http=0, udp_echo=0, closed=2, base_port=0) as lab:
        yield lab


@pytest.fixture
def place() -> Iterator[Path]:
    """A root-owned 0755 folder outside pytest's private tmp: nobody may enter it, not write.
    It holds ``root-only``, a root-owned 0644 file a parser bug would like to change."""
    d = Path(tempfile.mkdtemp(prefix="prtip-privdrop-", dir="/tmp"))
    d.chmod(0o755)
    (d / "root-only").write_text("root's\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _ports(lab: Lab) -> str:
    return ",".join(str(p) for p in sorted([*lab.open_ports["tcp"], *lab.closed_ports]))


def test_syn_and_tls_scan_run_as_nobody_and_a_parser_bug_cannot_write(
        lab: Lab, place: Path, nmap: str) -> None:
    ports = _ports(lab)
    out = place / "out"  # missing: created as root and given to nobody before the drop
    done = _program([str(place / "root-only"), "scan", "-sS", "-sV", "--version-intensity", "2",
                     "-p", ports, HOST, "--no-progress", "-o", str(out / "ds"),
                     "-oN", str(out / "scan.txt")])
    assert done.returncode == 0, done.stderr
    assert "keeping root" not in done.stderr
    hooks = _hooks(done.stderr)
    assert set(hooks) == {"x509", "banner"}, done.stderr  # both parsers ran, after the drop
    for h in hooks.values():
        st = h["self"]
        assert st["Uid"].split() == [str(NOBODY)] * 4 and st["Gid"].split() == [str(NOBODY)] * 4
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(st[cap], 16) == 0, (cap, st)
        assert st["NoNewPrivs"] == "1" and st["Groups"] == ""
        for t in h["tasks"].values():  # every thread, not only the one that parsed
            assert "0" not in t["Uid"].split() and int(t["CapEff"], 16) == 0
        assert h["tries"] == {"append": 13, "create": 13}  # EACCES: the bug wrote nothing
    assert (place / "root-only").read_text() == "root's\n" and not (place / "new").exists()
    # Results as exact as with root: every port as the lab made it, and as nmap sees it.
    text = (out / "scan.txt").read_text()
    truth = {**{p: "open" for p in lab.open_ports["tcp"]},
             **{p: "closed" for p in lab.closed_ports}}
    got = {int(w.split("/")[0]): w.split()[1] for w in text.splitlines()
           if w[:1].isdigit() and "/tcp" in w}
    assert got == truth
    assert nmap_states(nmap, HOST, ports) == truth
    https = lab.services["https"]
    assert next(w for w in text.splitlines() if w.startswith(f"{https}/tcp")).split()[3] \
        == "ssl/http"
    # What the scan wrote belongs to the user it ran as, not to root.
    owners = {p: p.stat().st_uid for p in [out, out / "ds", out / "scan.txt",
                                           *(out / "ds").rglob("*")]}
    assert set(owners.values()) == {NOBODY}, owners


def test_sudo_caller_owns_the_output_and_an_unwritable_folder_is_refused(
        lab: Lab, place: Path) -> None:
    env = {"SUDO_UID": "4242", "SUDO_GID": "4343"}
    mine = place / "mine"
    mine.mkdir()
    os.chown(mine, 4242, 4343)
    done = _program([str(place / "root-only"), "scan", "-sS", "-p", _ports(lab), HOST,
                     "--no-progress", "-oX", str(mine / "scan.xml")], env)
    assert done.returncode == 0, done.stderr
    st = (mine / "scan.xml").stat()
    assert (st.st_uid, st.st_gid) == (4242, 4343)
    # place itself is root's: the user cannot write there, and is told before any probe.
    done = _program([str(place / "root-only"), "scan", "-sS", "-p", _ports(lab), HOST,
                     "--no-progress", "-oN", str(place / "scan.txt")], env)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "runs as user uid 4242 once its raw sockets are open" in done.stderr, done.stderr
    assert "--privileged" in done.stderr
    assert not (place / "scan.txt").exists()
    # Files are read as the user too: a target list only root may read is refused.
    secret = place / "targets.txt"
    secret.write_text(HOST + "\n")
    secret.chmod(0o600)
    done = _program([str(place / "root-only"), "scan", "-sS", "-p", _ports(lab), "-iL",
                     str(secret), "--no-progress"], env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "Permission denied" in done.stderr and "runs as user uid 4242" in done.stderr


def test_syn_and_udp_in_one_run_use_two_pooled_captures(lab: Lab, place: Path) -> None:
    echo, ssh, shut = lab.services["udp_echo"], lab.services["ssh"], lab.closed_ports[0]
    out = place / "both"
    done = _program([str(place / "root-only"), "scan", "-sS", "-sU", "-p",
                     f"T:{ssh},{shut},U:{echo},{shut}", HOST, "--no-progress",
                     "-oN", str(out / "s.txt"), "-o", str(out / "ds")])
    assert done.returncode == 0, done.stderr
    assert "keeping root" not in done.stderr
    rows = {w.split()[0]: w.split()[1] for w in (out / "s.txt").read_text().splitlines()
            if w[:1].isdigit()}
    assert rows == {f"{ssh}/tcp": "open", f"{shut}/tcp": "closed", f"{echo}/udp": "open",
                    f"{shut}/udp": "closed"}, rows


def test_privileged_keeps_root(lab: Lab, place: Path) -> None:
    done = _program([str(place / "root-only"), "scan", "-sS", "-sV", "--version-intensity",
                     "0", "--privileged", "-p", str(lab.services["ssh"]), HOST,
                     "--no-progress"])
    assert done.returncode == 0, done.stderr
    st = _hooks(done.stderr)["banner"]["self"]
    assert st["Uid"].split()[1] == "0" and int(st["CapEff"], 16) != 0
    assert (place / "root-only").read_text().endswith("written by a parser\n")  # the risk


def test_api_drops_only_when_asked(lab: Lab) -> None:
    ssh, shut = lab.services["ssh"], lab.closed_ports[0]
    code = f"""
import json, os, prtip_nb as pn
from prtip_nb.net.privileges import proc_status
assert os.geteuid() == 0
d = pn.drop_privileges()
r = pn.scan("{HOST}", ports="{ssh},{shut}", method="syn")
s = pn.scan("{HOST}", ports="{ssh}", method="syn")
print(json.dumps({{"user": d.user, "status": proc_status(),
                  "ports": dict(zip(r.ports["port"].tolist(), r.ports["state"].astype(str))),
                  "again": s.ports["state"].astype(str).tolist()}}))
"""
    done = _program([], code=code)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["user"] == "nobody" and int(got["status"]["CapEff"], 16) == 0
    assert got["status"]["Uid"].split() == [str(NOBODY)] * 4
    assert got["ports"] == {str(ssh): "open", str(shut): "closed"} and got["again"] == ["open"]


def test_main_called_from_python_never_drops(lab: Lab) -> None:
    from prtip_nb.cli import main
    from prtip_nb.net import privileges

    assert main(["scan", "-sS", "-p", str(lab.services["ssh"]), HOST, "--no-progress"]) == 0
    assert os.geteuid() == 0 and privileges.dropped() is None and privileges.pool() is None


def test_ping_sweep_after_the_drop_equals_nmap_and_forgets_stale_neighbours(
        lab: Lab, place: Path, nmap: str) -> None:
    """Discovery's raw sockets come from the pool; its neighbour deletions go through the
    root helper: a host that answered ARP and left is down, as nmap says."""
    from prtip_nb.lab.veth import VethLab

    from .test_discovery import ON4, R4, R6, _rules, nmap_hosts

    need(shutil.which("nft") is not None and shutil.which("nsenter") is not None,
         "needs nftables and nsenter")
    gone = "198.51.100.77"
    targets = [*ON4, R4[6], R4[7], R4[8], R4[9], "198.51.100.14", gone]
    with VethLab(up=ON4, routed_up=[*R4.values(), *R6.values()], tcp=[443]) as veth:
        veth.nft(_rules())
        veth.target("ip", "addr", "add", f"{gone}/32", "dev", veth.theirs)
        import prtip_nb as pn

        assert pn.discover(gone).hosts["state"].tolist() == ["up"]  # its entry: reachable
        veth.target("ip", "addr", "del", f"{gone}/32", "dev", veth.theirs)
        out = place / "sweep"
        done = _program([str(place / "root-only"), "scan", "-sn", *targets,
                         "-o", str(out)])
        assert done.returncode == 0, done.stderr
        assert "keeping root" not in done.stderr
        theirs = nmap_hosts(nmap, targets)
        # Discovery, then a SYN scan of the hosts found up, in one dropped run (IPv6 too).
        port_scan = _program([str(place / "root-only"), "scan", "-sS", "-p", "443", "-T4",
                              "--no-progress", "203.0.113.4-7", R6[5], R6[6], R6[7]])
    mine = {h: (s, r) for h, s, r in zip(*(pn.read_scans(str(out)).hosts[c].astype(str)
                                           for c in ("host", "state", "reason")), strict=True)}
    assert mine[gone] == ("down", "no-response")
    for addr, (state, reason) in theirs.items():
        assert mine[addr][0] == state, (addr, mine[addr], state)
        if state == "up" and addr in ON4:
            assert mine[addr][1] == reason == "arp-response", addr
    assert {p.stat().st_uid for p in out.rglob("*")} == {NOBODY}
    assert port_scan.returncode == 0, port_scan.stderr
    assert "keeping root" not in port_scan.stderr
    text = port_scan.stdout
    for up in (R4[5], R4[6], R6[5], R6[6]):
        assert f"Scan report for {up}\n" in text, text
    for down in ("203.0.113.4", R6[7]):  # down: not port-scanned
        assert f"Scan report for {down}\n" not in text
    assert text.count("443/tcp     open") == 4, text
