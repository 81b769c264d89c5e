"""The scan form is checked as the user types, with the grammar's own messages."""

from __future__ import annotations

import socket

import pytest

from prtip_nb.errors import PortSpecError, TargetSpecError
from prtip_nb.targets import parse_ports, parse_targets
from prtip_nb.widgets import PanelState
from prtip_nb.widgets.validate import check, has_service_option


def _grammar_message(fn: object, text: str) -> str:
    with pytest.raises((TargetSpecError, PortSpecError)) as info:
        fn(text)  # type: ignore[operator]
    return str(info.value)


@pytest.mark.parametrize("text", [
    "10.0.0.300", "10.0.0.0/33", "1.2.3.4-1", "::1/200",  # parse-only
])
def test_target_errors_are_the_grammars_own(text: str) -> None:
    state = PanelState(targets="127.0.0.1")
    message = state.set("targets", text)
    assert message == _grammar_message(parse_targets, text)
    assert state.errors["targets"] == message and not state.valid


@pytest.mark.parametrize("text", ["1-70000", "80-22", "T:80,X:5", "abc", "22,,80"])
def test_port_errors_are_the_grammars_own(text: str) -> None:
    state = PanelState(ports="80")
    message = state.set("ports", text)
    assert message == _grammar_message(parse_ports, text)
    assert "valid form" in message  # the grammar shows the valid forms


def test_fixing_a_field_clears_its_error() -> None:
    state = PanelState()
    state.set("ports", "1-70000")
    assert not state.valid
    assert state.set("ports", "1-1024") is None
    assert state.valid and state.errors == {}


def test_empty_fields() -> None:
    state = PanelState(targets="")
    assert "at least one target" in state.errors["targets"]
    assert state.set("ports", "") is None  # empty means nmap's default: the top 1000


@pytest.mark.parametrize(("value", "needle"), [("abc", "number"), ("-5", "positive"),
                                                ("0", "positive"), ("inf", "finite"),
                                                ("nan", "finite"), ("1e400", "finite")])
def test_rate(value: str, needle: str) -> None:
    assert needle in (check("rate", value) or "")


def test_rate_accepts_empty_and_numbers() -> None:
    assert check("rate", "") is None
    assert check("rate", "10,000") is None
    state = PanelState(rate="2500")
    assert state.scan_options()["rate"] == 2500.0


def test_unknown_method_and_field() -> None:
    assert "unknown scan method" in (check("method", "stealth") or "")
    with pytest.raises(KeyError):
        PanelState().set("colour", "red")


def test_hostnames_are_not_resolved_while_typing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def spy(*args: object, **kwargs: object) -> list[object]:
        calls.append(args)
        raise socket.gaierror(socket.EAI_NONAME, "no DNS in this test")

    monkeypatch.setattr(socket, "getaddrinfo", spy)
    state = PanelState()
    for prefix in range(1, len("scanme.example.org") + 1):
        state.set("targets", "scanme.example.org"[:prefix])
    assert calls == []
    assert state.valid  # a well-formed name is fine until Start resolves it
    # Start resolves once, and the resolver's failure shows under "targets".
    with pytest.raises(TargetSpecError):
        state.start()
    assert len(calls) == 1
    assert "could not resolve 'scanme.example.org'" in state.errors["targets"]
    assert state.scan is None and state.status == "idle"


def test_start_refuses_an_invalid_form() -> None:
    state = PanelState(ports="1-70000")
    with pytest.raises(PortSpecError):
        state.start()
    assert state.scan is None


def test_service_field_follows_scan_config() -> None:
    state = PanelState()
    assert ("service" in state.fields) == has_service_option()
    if has_service_option():
        state.set("service", True)
        assert state.scan_options()["service"] is True
