"""Service names from port numbers: nmap's table at run time when installed, else ours."""

from __future__ import annotations

import pytest

from prtip_nb.targets.portnames import port_names, service_name
from prtip_nb.targets.toplist import nmap_services_path


def test_builtin_names_come_from_the_projects_own_list() -> None:
    names = port_names("builtin")
    assert names[("tcp", 22)] == "ssh" and names[("tcp", 443)] == "https"
    assert names[("udp", 53)] == "domain"
    assert 200 <= len(names) < 1000  # the hand-ranked ports only; no nmap data shipped
    assert service_name("tcp", 22, source="builtin") == "ssh"
    assert service_name("TCP", 65000, source="builtin") is None


@pytest.mark.nmap
def test_nmap_table_is_read_at_run_time_when_installed() -> None:
    assert nmap_services_path() is not None, "nmap is needed: make system-deps installs it"
    names = port_names("nmap")
    assert len(names) > 5000 and names[("tcp", 80)] == "http"
    assert ("tcp", 4) not in names  # nmap's "unknown" is no name
    assert port_names() is names  # auto prefers nmap's table


def test_bad_source_says_what_is_valid() -> None:
    with pytest.raises(ValueError, match="auto, nmap, builtin"):
        port_names("iana")
