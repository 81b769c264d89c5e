"""OsSchedule, the OS detection round policy, driven by a simulated clock (no sockets): the
real-socket runs against nmap -O are tests/osdetect/test_cli_os.py and the lab tests."""

from __future__ import annotations

from collections.abc import Callable

from prtip_nb.osdetect.schedule import REST, SEQ, OsSchedule, wanted


def _drive(s: OsSchedule, answer: Callable[[int, str], bool], *, limit: int = 100
           ) -> list[tuple[float, int, str]]:
    sent: list[tuple[float, int, str]] = []
    now = 0.0
    for _ in range(limit):
        if s.finished:
            return sent
        for k, name in s.due(now):
            sent.append((now, k, name))
            if answer(k, name):
                s.replied(k, name)
        now = max(now, s.wakeup()) if not s.all_answered() else now
    raise AssertionError("the schedule did not end")


def test_seq_probes_are_spaced_then_phase_two_follows_seq6() -> None:
    s = OsSchedule([(True, True), (True, True)], seq_gap=0.1, timeout=0.5, retries=1)
    sent = _drive(s, lambda k, n: True)
    for i, name in enumerate(SEQ):
        assert [round(t, 9) for t, _k, n in sent if n == name] == [round(0.1 * i, 9)] * 2
    assert {t for t, _k, n in sent if n in REST} == {sent[5 * 2][0]}  # with SEQ6
    assert len(sent) == 2 * 16 and s.finished  # everything answered: no retries


def test_unanswered_probes_retried_once_then_the_run_ends() -> None:
    s = OsSchedule([(True, True)], seq_gap=0.1, timeout=0.5, retries=1)
    sent = _drive(s, lambda k, n: n not in ("U1", "IE2"))
    assert sum(n == "U1" for _t, _k, n in sent) == 2
    assert sum(n == "T2" for _t, _k, n in sent) == 1
    retry = [t for t, _k, n in sent if n == "IE2"]
    assert abs(retry[1] - retry[0] - 0.5) < 1e-9
    assert s.sent[0]["U1"] == 2 and s.finished


def test_no_open_port_no_seq_and_no_open_port_probes() -> None:
    assert wanted(False, True) == ["T5", "T6", "T7", "U1", "IE1", "IE2"]
    assert wanted(True, False) == ["ECN", "T2", "T3", "T4", "U1", "IE1", "IE2"]
    s = OsSchedule([(False, False)], retries=0)
    sent = _drive(s, lambda k, n: False)
    assert [n for _t, _k, n in sent] == ["U1", "IE1", "IE2"] and s.finished


def test_nothing_to_probe_is_finished() -> None:
    assert OsSchedule([]).finished
