"""TtlWalk, the traceroute round policy, driven by a simulated path (no sockets): the
real-socket runs against nmap are tests/net/test_traceroute.py."""

from __future__ import annotations

from prtip_nb.probes.tracewalk import MAX_TTL, TtlWalk

ROUTERS = ["198.51.100.1", "198.51.100.2", None, "203.0.113.1"]  # hop 3 is silent


def _run(walk: TtlWalk, paths: dict[str, list[str | None]], *, limit: int = 500) -> int:
    """Answer every due probe as the path would (None: silent); the probes sent."""
    now, sent = 0.0, 0
    for _ in range(limit):
        if walk.done:
            return sent
        walk.expire(now)  # silent probes: their hosts are due again (or move on)
        due = walk.due()
        for host, ttl in due:
            walk.sent(host, now, 0.1)
            sent += 1
            path = paths[host]
            if ttl >= len(path) + 1:  # reaches the target
                walk.answer(host, host, final=True, reply_ttl=64 - len(path), now=now + 0.001)
            elif path[ttl - 1] is not None:
                walk.answer(host, path[ttl - 1], final=False, reply_ttl=None, now=now + 0.001)
        now += 0.1
    raise AssertionError("the walk did not end")


def test_shared_prefix_probed_once_and_silent_hop_kept() -> None:
    hosts = [f"203.0.113.{n}" for n in range(10, 15)]
    walk = TtlWalk([(h, 4, 64 - 4) for h in hosts], tries=2)  # distance 5 from the reply TTL
    _run(walk, {h: ROUTERS for h in hosts})
    hops = walk.hops()
    for h in hosts:
        assert [(x.ttl, x.address) for x in hops[h]] == [
            (1, ROUTERS[0]), (2, ROUTERS[1]), (3, None), (4, ROUTERS[3]), (5, h)]
    probes = walk.probes()
    owner = max(probes, key=lambda h: probes[h])
    # the owner walks 5,4,3,3,2,1 (the silent hop twice); the others stop at the shared hop 4
    assert probes[owner] == 6
    assert all(n == 2 for h, n in probes.items() if h != owner)


def test_unknown_distance_measured_at_max_ttl_then_walked_down() -> None:
    walk = TtlWalk([("203.0.113.9", 4, None)])
    assert walk.due() == [("203.0.113.9", MAX_TTL)]
    _run(walk, {"203.0.113.9": ["198.51.100.1", "198.51.100.2"]})
    assert [(x.ttl, x.address) for x in walk.hops()["203.0.113.9"]] == [
        (1, "198.51.100.1"), (2, "198.51.100.2"), (3, "203.0.113.9")]


def test_underestimated_distance_walks_up() -> None:
    walk = TtlWalk([("203.0.113.9", 4, 64)])  # says 1 hop; the path has 2 routers
    _run(walk, {"203.0.113.9": ["198.51.100.1", "198.51.100.2"]})
    assert [x.address for x in walk.hops()["203.0.113.9"]] == [
        "198.51.100.1", "198.51.100.2", "203.0.113.9"]


def test_ipv6_walks_up_from_one_and_late_answers_are_ignored() -> None:
    walk = TtlWalk([("2001:db8::9", 6, None)])
    assert walk.due() == [("2001:db8::9", 1)]
    assert not walk.answer("2001:db8::9", "2001:db8::1", final=False, reply_ttl=None, now=0.0)
    _run(walk, {"2001:db8::9": ["2001:db8::1"]})
    assert [x.address for x in walk.hops()["2001:db8::9"]] == ["2001:db8::1", "2001:db8::9"]


def test_nothing_answers_ends_bounded() -> None:
    walk = TtlWalk([("203.0.113.9", 4, None)], tries=2)
    sent = _run(walk, {"203.0.113.9": [None] * 40})
    assert walk.done and sent == 2 and walk.hops()["203.0.113.9"] == []
