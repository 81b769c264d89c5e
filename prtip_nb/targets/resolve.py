"""Hostname resolution for target specs: once per name, at parse time, never deeper.

``OSError`` from the resolver (``socket.gaierror`` included) becomes a
:class:`~prtip_nb.errors.TargetSpecError` here, at this one boundary.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from prtip_nb.errors import TargetSpecError
from prtip_nb.targets.addrspec import NameSpec, parse_ip

__all__ = ["NameCache", "Resolver", "default_resolver"]

# resolver(name, family) -> IP texts; family is 4, 6 or None. Raising OSError = unresolvable.
Resolver = Callable[[str, int | None], list[str]]


def default_resolver(name: str, family: int | None) -> list[str]:
    """Resolve ``name`` with ``getaddrinfo``; ``family`` 4 or 6 restricts the lookup.

    RFC 6761 names are answered without any lookup: ``localhost`` (and ``*.localhost``) is
    loopback, and anything under ``.invalid`` never resolves. So neither can leak a DNS query.
    """
    lname = name.rstrip(".").lower()
    if lname == "invalid" or lname.endswith(".invalid"):
        raise socket.gaierror(socket.EAI_NONAME, f"{name}: reserved .invalid name (RFC 6761)")
    if lname == "localhost" or lname.endswith(".localhost"):
        return {4: ["127.0.0.1"], 6: ["::1"]}.get(family or 0, ["127.0.0.1", "::1"])
    af = {4: socket.AF_INET, 6: socket.AF_INET6}.get(family or 0, socket.AF_UNSPEC)
    infos = socket.getaddrinfo(name, None, family=af, type=socket.SOCK_STREAM)
    # Link-local answers carry a scope (%eth0) that an integer range cannot keep.
    return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))


class NameCache:
    """Resolves each name once per parse_targets() call, for targets and exclusions alike."""

    def __init__(self, resolver: Resolver, family: int | None) -> None:
        self._resolver = resolver
        self._family = family
        self._cache: dict[str, list[tuple[int, int]]] = {}

    def lookup(self, spec: NameSpec) -> list[tuple[int, int]]:
        if spec.name not in self._cache:
            self._cache[spec.name] = self._resolve(spec)
        return self._cache[spec.name]

    def _resolve(self, spec: NameSpec) -> list[tuple[int, int]]:
        try:
            answers = self._resolver(spec.name, self._family)
        except (OSError, UnicodeError) as exc:
            raise TargetSpecError(
                f"could not resolve {spec.token!r}: {exc}",
                token=spec.token,
                hint="check the name, or give an IP address instead",
            ) from exc
        found: list[tuple[int, int]] = []
        for text in answers:
            key = parse_ip(text) if isinstance(text, str) else None
            if key is None:
                raise TargetSpecError(
                    f"the resolver returned {text!r} for {spec.token!r}, not an IP address",
                    token=spec.token,
                )
            if self._family in (None, key[0]):
                found.append(key)
        if not found:
            which = f"an IPv{self._family} address" if self._family else "an address"
            raise TargetSpecError(
                f"could not resolve {spec.token!r} to {which}",
                token=spec.token,
                hint="check the name, or give an IP address instead",
            )
        return found
