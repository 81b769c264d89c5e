"""Checking the scan form as the user types, with the grammar's own error messages.

The checks are syntax only: a hostname is never resolved here (a lookup on every
keystroke would be slow and would leak half-typed names to DNS). ``Scan`` resolves names
when the scan starts, and its error lands under the same field.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import METHODS, ScanConfig
from ..errors import ConfigError, SpecError, TargetSpecError
from ..targets import parse_ports, parse_targets

#: The form's fields, in the order they are shown. "service" only if ScanConfig has it.
FIELDS: tuple[str, ...] = ("targets", "ports", "method", "rate", "timing", "service")

# Answers for names while typing: documentation addresses (RFC 5737 / RFC 3849) that no
# scan ever sees, since Scan() parses the targets again with the real resolver.
_PLACEHOLDER = {4: ["192.0.2.1"], 6: ["2001:db8::1"], 0: ["192.0.2.1"]}


def _no_lookup(name: str, family: int | None) -> list[str]:
    return _PLACEHOLDER[family or 0]


def has_service_option() -> bool:
    """True once ScanConfig has ``service`` (service and version detection)."""
    return "service" in {f.name for f in dataclasses.fields(ScanConfig)}


def check_targets(text: str) -> SpecError | None:
    if not text.strip():
        return TargetSpecError("give at least one target, e.g. 127.0.0.1", token="")
    try:
        parse_targets(text, resolver=_no_lookup)
    except SpecError as exc:
        return exc
    return None


def check_ports(text: str) -> SpecError | None:
    try:
        parse_ports(text.strip() or None)
    except SpecError as exc:
        return exc
    return None


def parse_rate(text: str | float | None) -> float | None:
    """The rate field as a number; empty means no limit. Raises ConfigError if not a number."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        return float(str(text).replace(",", "").replace("_", ""))
    except ValueError:
        raise ConfigError(
            f"rate must be a number of probes per second, not {text!r}", token=str(text)
        ) from None


def check_option(name: str, value: Any) -> SpecError | None:
    """An option checked by ScanConfig itself (rate, method, timing, service)."""
    try:
        if name == "rate":
            value = parse_rate(value)
        if name == "method" and value not in METHODS:
            return ConfigError(f"unknown scan method {value!r}; use one of {', '.join(METHODS)}")
        ScanConfig(targets=("127.0.0.1",), **{name: value})
    except SpecError as exc:
        return exc
    except (ValueError, TypeError) as exc:
        return ConfigError(f"{name}: {exc}")
    return None


def problem(name: str, value: Any) -> SpecError | None:
    """The error field ``name`` holding ``value`` would raise, or None if it is valid."""
    if name == "targets":
        return check_targets(str(value))
    if name == "ports":
        return check_ports(str(value or ""))
    if name in FIELDS:
        return check_option(name, value)
    raise KeyError(f"the scan form has no field {name!r}; fields: {', '.join(FIELDS)}")


def check(name: str, value: Any) -> str | None:
    """The message to show under field ``name`` holding ``value``, or None if it is valid."""
    exc = problem(name, value)
    return None if exc is None else str(exc)
