"""Fixtures for the targets tests: no test here may reach DNS or send a packet."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from prtip_nb.targets import ports, toplist


@pytest.fixture(autouse=True)
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that would make a real name lookup (a DNS query is a packet)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a real name lookup was attempted: {args!r}")

    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        monkeypatch.setattr(socket, name, refuse)


class StubResolver:
    """resolver(name, family) over a fixed table; unknown names raise like getaddrinfo."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int | None]] = []

    def __call__(self, name: str, family: int | None) -> list[str]:
        self.calls.append((name, family))
        if name not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: stub has no such name")
        return list(self.table[name])


@pytest.fixture
def stub() -> Callable[[dict[str, list[str]]], StubResolver]:
    return StubResolver


@pytest.fixture
def fresh_rankings() -> Iterator[None]:
    """Rankings are cached per process; tests that fake nmap's file need a clean cache."""
    toplist._nmap.cache_clear()
    ports._top_portset.cache_clear()
    yield
    toplist._nmap.cache_clear()
    ports._top_portset.cache_clear()
