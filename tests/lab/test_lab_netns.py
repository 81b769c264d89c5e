"""Private network namespaces: detection, creation, re-execution, loopback up."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from labutil import PYTHON, subprocess_env

import prtip_nb.lab
from prtip_nb.errors import PrivilegeError
from prtip_nb.lab import netns

needs_unshare = pytest.mark.skipif(not netns.can_unshare(), reason="needs CAP_SYS_ADMIN")

# A child that reports where it runs: private or not, lo usable or not, the env flag.
PROBE = textwrap.dedent(
    """
    import json, os, socket, sys
    from prtip_nb.lab import in_private_netns
    try:
        srv = socket.create_server(("127.0.0.1", 0))
        cli = socket.create_connection(srv.getsockname(), timeout=2)
        lo = True
        cli.close(); srv.close()
    except OSError:
        lo = False
    print(json.dumps({"private": in_private_netns(), "lo": lo,
                      "flag": os.environ.get("PRTIP_NB_NETNS")}))
    """
)


def probe_output(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_public_api_is_sorted_and_complete() -> None:
    assert prtip_nb.lab.__all__ == sorted(prtip_nb.lab.__all__)
    for name in prtip_nb.lab.__all__:
        assert hasattr(prtip_nb.lab, name)


def test_import_is_light() -> None:
    code = (
        "import json, sys, prtip_nb.lab; "
        "print(json.dumps(sorted(m for m in ('pandas', 'pyarrow', 'scapy', 'plotly', "
        "'cryptography') if m in sys.modules)))"
    )
    done = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


@needs_unshare
def test_run_in_private_netns_gives_a_private_loopback() -> None:
    done = netns.run_in_private_netns(
        [PYTHON, "-c", PROBE], capture_output=True, text=True, env=subprocess_env(), timeout=30
    )
    assert probe_output(done) == {"private": True, "lo": True, "flag": "1"}


@needs_unshare
def test_reexec_runs_the_script_again_inside(tmp_path: Path) -> None:
    script = tmp_path / "reexec.py"
    script.write_text(
        "import sys\n"
        "from prtip_nb.lab import reexec_in_private_netns\n"
        "reexec_in_private_netns()\n"  # outside: never returns; inside: returns None
        + PROBE
        + "sys.exit(int(sys.argv[1]))\n"
    )
    env = subprocess_env()
    env.pop("PRTIP_NB_NETNS", None)
    done = subprocess.run(
        [PYTHON, str(script), "3"], capture_output=True, text=True, env=env, timeout=30
    )
    assert done.returncode == 3  # the exit code of the re-run command comes back
    assert json.loads(done.stdout) == {"private": True, "lo": True, "flag": "1"}


def test_reexec_inside_returns_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRTIP_NB_NETNS", "1")
    assert netns.reexec_in_private_netns() is None


def test_reexec_without_privilege_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRTIP_NB_NETNS", raising=False)
    monkeypatch.setattr(netns, "can_unshare", lambda: False)
    with pytest.raises(PrivilegeError, match="unshare --net"):
        netns.reexec_in_private_netns()
    with pytest.raises(PrivilegeError, match="CAP_SYS_ADMIN"):
        netns.run_in_private_netns(["true"])


@needs_unshare
@pytest.mark.parametrize("use_ip", [False, None], ids=["ioctl", "auto"])
def test_lo_up_in_a_fresh_namespace(use_ip: bool | None) -> None:
    """A bare ``unshare --net`` leaves lo down; lo_up() brings it up, by ioctl or by ip."""
    code = (
        "import json, socket\n"
        "def works():\n"
        "    try:\n"
        "        with socket.create_server(('127.0.0.1', 0)) as srv:\n"
        "            socket.create_connection(srv.getsockname(), timeout=2).close()\n"
        "        return True\n"
        "    except OSError:\n"
        "        return False\n"
        "from prtip_nb.lab.netns import lo_up\n"
        "before = works()\n"
        f"lo_up(use_ip={use_ip!r})\n"
        "print(json.dumps([before, works()]))\n"
    )
    done = subprocess.run(
        ["unshare", "--net", PYTHON, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [False, True]


def test_in_private_netns_matches_the_interfaces() -> None:
    import socket

    names = [name for _, name in socket.if_nameindex()]
    assert netns.in_private_netns() == (names == ["lo"])
