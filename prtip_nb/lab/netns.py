"""Private network namespaces: somewhere a scan can hit loopback without touching anyone.

The host's loopback carries other tenants' services. A fresh namespace (``unshare --net``)
has its own loopback, down, and no other interface; after ``ip link set lo up`` it is a
private 127.0.0.1 and ::1 that the lab and the scanner share with nobody.

- ``in_private_netns()``: are we in one already? (a heuristic, see there)
- ``can_unshare()``: could we make one?
- ``reexec_in_private_netns()``: re-run this very command inside one (CLI demo, benchmarks).
- ``run_in_private_netns(cmd)``: run another command inside one (tests).
- ``lo_up()``: bring loopback up in the current namespace.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
from typing import Any, NoReturn

from prtip_nb.errors import PrivilegeError

ENV_FLAG = "PRTIP_NB_NETNS"
CAP_SYS_ADMIN = 21
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

_HOW = (
    "run as root (or with CAP_SYS_ADMIN), or wrap the command yourself: "
    "sudo unshare --net sh -c 'ip link set lo up && exec YOUR-COMMAND'"
)


def in_private_netns() -> bool:
    """True if this network namespace has no interface but ``lo``.

    A heuristic: a namespace made by ``unshare --net`` has only ``lo``, and a host or an
    ordinary container has at least one more. A container started with no network at all
    counts as private too, which it is. Not read from /sys/class/net: sysfs shows the
    namespace of whoever mounted it, so after a bare ``unshare --net`` it still lists the
    host's interfaces; ``if_nameindex()`` asks the kernel about our own namespace.
    """
    try:
        names = [name for _index, name in socket.if_nameindex()]
    except OSError:
        return False
    return names == ["lo"]


def can_unshare() -> bool:
    """True if ``unshare --net`` should work: the binary exists and we hold CAP_SYS_ADMIN.

    Checks the effective capability set rather than uid 0, since root in a container may
    lack the capability and a non-root user may be granted it.
    """
    return shutil.which("unshare") is not None and _has_cap(CAP_SYS_ADMIN)


def _has_cap(bit: int) -> bool:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def reexec_in_private_netns(
    argv: list[str] | None = None, env_flag: str = ENV_FLAG
) -> NoReturn | None:
    """Re-run the current command in a fresh namespace with lo up; inside it, return None.

    Outside (``env_flag`` unset) this never returns: the process is replaced by
    ``unshare``, which runs ``argv`` (by default this interpreter with its original
    arguments, ``-m`` included) with ``env_flag=1``. Replacing rather than spawning keeps
    the PID, so signals and the exit code reach the command directly.
    Raises ``PrivilegeError`` if a namespace cannot be made.
    """
    if os.environ.get(env_flag):
        return None
    if not can_unshare():
        raise PrivilegeError(f"a private network namespace needs CAP_SYS_ADMIN: {_HOW}")
    if argv is None:
        argv = [sys.executable, *sys.orig_argv[1:]]
    env = dict(os.environ, **{env_flag: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe("unshare", _unshare_argv(argv), env)


def run_in_private_netns(
    cmd: list[str], *, env_flag: str = ENV_FLAG, **popen_kwargs: Any
) -> subprocess.CompletedProcess[Any]:
    """Run ``cmd`` in a fresh network namespace with lo up; ``subprocess.run`` semantics.

    ``env_flag`` is set in the command's environment, so a command that calls
    ``reexec_in_private_netns`` stays where it is.
    """
    if not can_unshare():
        raise PrivilegeError(f"a private network namespace needs CAP_SYS_ADMIN: {_HOW}")
    given_env = popen_kwargs.pop("env", None)
    env = dict(os.environ if given_env is None else given_env)
    env[env_flag] = "1"
    return subprocess.run(_unshare_argv(cmd), env=env, **popen_kwargs)


def _unshare_argv(cmd: list[str]) -> list[str]:
    # The command travels as "$@", never spliced into the script, so no quoting can break.
    script = f'{shlex.join(_lo_up_cmd())} && exec "$@"'
    return ["unshare", "--net", "--", "sh", "-c", script, "sh", *cmd]


def _lo_up_cmd() -> list[str]:
    ip = shutil.which("ip")
    if ip:
        return [ip, "link", "set", "lo", "up"]
    # No iproute2: let this interpreter do it with the ioctl below.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (
        f"import sys; sys.path.insert(0, {root!r}); "
        "from prtip_nb.lab.netns import lo_up; lo_up(use_ip=False)"
    )
    return [sys.executable, "-c", code]


def lo_up(*, use_ip: bool | None = None) -> None:
    """Bring ``lo`` up in the current namespace (needs CAP_NET_ADMIN there).

    Uses ``ip link set lo up`` when iproute2 is installed (``use_ip=None``), else the
    SIOCSIFFLAGS ioctl. Raises ``PrivilegeError`` if the kernel refuses.
    """
    ip = shutil.which("ip") if use_ip is not False else None
    if use_ip and ip is None:
        raise FileNotFoundError("ip (iproute2) is not installed")
    if ip:
        done = subprocess.run([ip, "link", "set", "lo", "up"], capture_output=True, text=True)
        if done.returncode != 0:
            raise PrivilegeError(f"ip link set lo up failed: {done.stderr.strip()}")
        return
    # struct ifreq: 16 bytes of name, then a short of flags inside a 24-byte union.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sH22x", b"lo", 0)
        try:
            flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, req))[1]
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
        except PermissionError as exc:
            raise PrivilegeError("bringing lo up needs CAP_NET_ADMIN in this namespace") from exc
