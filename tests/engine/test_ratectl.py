"""The adaptive rate controller against a simulated path (pure logic, fake clock).

The live tests (tests/net/test_adaptive_lab.py) run it over a veth lab with a real
token-bucket bottleneck; these check the control law itself, fast and deterministically.
"""

from __future__ import annotations

import random
import threading
from collections import deque

import pytest

from prtip_nb.net.ratectl import AdaptiveRate, policy_for
from prtip_nb.net.throttle import TokenBucket


class Path:
    """A link that carries ``capacity`` probes/s through a queue of ``queue`` probes, loses
    ``loss`` of them at random, and a target population that answers ``answer`` of the
    probes that arrive, ``rtt`` seconds later (plus the queueing delay)."""

    def __init__(self, *, capacity: float = float("inf"), queue: int = 64, answer: float = 1.0,
                 loss: float = 0.0, rtt: float = 0.001, seed: int = 1) -> None:
        self.capacity, self.queue, self.answer, self.loss, self.rtt = (
            capacity, queue, answer, loss, rtt)
        self.rng = random.Random(seed)
        self.backlog = 0.0
        self.replies = 0
        self.dropped = 0
        self.due: deque[tuple[float, int, float, float]] = deque()
        self.smoothed, self.var = rtt, rtt / 2
        self.on_reply = lambda sent_at, n: None

    def send(self, n: int, now: float) -> None:
        room = self.queue - self.backlog if self.capacity < float("inf") else n
        take = min(n, max(0, int(room)))
        self.dropped += n - take
        self.backlog += take
        delay = self.rtt + self.backlog / self.capacity  # queueing delays the replies
        ok = sum(1 for _ in range(take)
                 if self.rng.random() >= self.loss and self.rng.random() < self.answer)
        self.due.append((now + delay, ok, delay, now))

    def srtt(self) -> float:
        """What an RTT estimator fed by the replies says: their queueing included."""
        return self.smoothed

    def timeout(self) -> float:
        return self.smoothed + 4 * self.var

    def tick(self, now: float, dt: float) -> None:
        self.backlog = max(0.0, self.backlog - self.capacity * dt)
        while self.due and self.due[0][0] <= now:
            _, ok, delay, sent_at = self.due.popleft()
            self.replies += ok
            if ok:
                self.var += (abs(delay - self.smoothed) - self.var) / 4  # RFC 6298
                self.smoothed += (delay - self.smoothed) / 8
                self.on_reply(sent_at, ok)


def simulate(path: Path, template: str = "aggressive", seconds: float = 3.0,
             dt: float = 0.0005, **bounds: float) -> tuple[AdaptiveRate, list[tuple[float, int]]]:
    """Run a sender that always has probes to send for ``seconds`` of simulated time."""
    clock = [0.0]
    ctl = AdaptiveRate(policy_for(template, **bounds), timeout=path.timeout, srtt=path.srtt,
                       clock=lambda: clock[0])
    path.on_reply = lambda sent_at, n: ctl.replied([sent_at] * n)
    never = threading.Event()
    sent: list[tuple[float, int]] = []
    while clock[0] < seconds:
        clock[0] += dt
        path.tick(clock[0], dt)
        b: TokenBucket = ctl.bucket
        while b.tokens + (clock[0] - b.last) * b.rate >= min(256, b.batch):
            got = ctl.take(256, never)
            path.send(got, clock[0])
            sent.append((clock[0], got))
    return ctl, sent


def pps(sent: list[tuple[float, int]], t0: float, t1: float) -> float:
    return sum(n for t, n in sent if t0 <= t < t1) / (t1 - t0)


def test_grows_fast_when_the_path_carries_everything() -> None:
    path = Path(answer=0.97)
    ctl, sent = simulate(path, "normal", seconds=1.0)
    # T3 starts at 1,000/s; a LAN that answers everything takes it to 100k/s in well
    # under a second (nmap -T3 scans a /24 x 100 ports in 0.4 s on such a lab).
    t100k = next(t for t, r, _ in ctl.log if r >= 100_000)
    assert t100k < 0.5
    assert ctl.reason in ("growing", "ceiling")
    assert path.dropped == 0


@pytest.mark.parametrize("template", ["normal", "aggressive", "insane"])
@pytest.mark.parametrize("capacity", [3_000.0, 20_000.0])
def test_settles_near_a_bottleneck(template: str, capacity: float) -> None:
    path = Path(capacity=capacity, queue=64, answer=0.9)
    ctl, sent = simulate(path, template, seconds=4.0)
    mean = pps(sent, 2.0, 4.0)
    assert 0.8 * capacity <= mean <= 1.2 * capacity, (mean, ctl.log[-5:])
    assert ctl.losses >= 1
    # Most probes got through: loss is a short overshoot, not a way of life.
    total = sum(n for _, n in sent)
    assert path.dropped / total < 0.1


def test_random_loss_is_not_congestion() -> None:
    path = Path(answer=1.0, loss=0.05)
    ctl, _ = simulate(path, "aggressive", seconds=1.0, max_rate=200_000)
    assert ctl.rate == 200_000 and ctl.reason == "ceiling"
    assert ctl.losses == 0


class StalledPath(Path):
    """Every reply arrives, but none is read from ``start`` to ``end``: the responder or
    the receive path held them (a busy CPU), then they all come at once, late."""

    def __init__(self, start: float, end: float, **kw: float) -> None:
        super().__init__(**kw)
        self.start, self.end = start, end

    def tick(self, now: float, dt: float) -> None:
        if self.start <= now < self.end:
            self.backlog = max(0.0, self.backlog - self.capacity * dt)
            return
        super().tick(now, dt)


def test_late_replies_undo_the_backoff() -> None:
    """Late is not lost: a 40 ms stall of the replies cuts the rate, and the replies that
    come after it undo the cut (the rate, and slow start, as before)."""
    path = StalledPath(0.5, 0.54, answer=1.0)
    ctl, sent = simulate(path, "aggressive", seconds=1.0, max_rate=200_000)
    assert "backoff" in {why for _, _, why in ctl.log}  # the stall looked like loss ...
    assert ctl.undone >= 1 and ctl.losses == 0 and not ctl.lossy  # ... until they came
    assert ctl.rate == 200_000 and ctl.reason == "ceiling"
    assert pps(sent, 0.7, 1.0) > 0.95 * 200_000


def test_a_late_stamped_batch_is_not_loss() -> None:
    """Sends count when the bucket grants them; an engine that stamps a batch a few ms
    later (its thread waited for the GIL) charges that batch's replies to a later epoch.
    The window it counted in looks short; the epochs after it show nothing was lost."""
    clock = [0.0]
    path = Path(answer=1.0)
    ctl = AdaptiveRate(policy_for("aggressive", max_rate=200_000), timeout=path.timeout,
                       srtt=path.srtt, clock=lambda: clock[0])
    path.on_reply = lambda sent_at, n: ctl.replied([sent_at] * n)
    never, batches = threading.Event(), 0
    while clock[0] < 1.0:
        clock[0] += 0.0005
        path.tick(clock[0], 0.0005)
        b = ctl.bucket
        while b.tokens + (clock[0] - b.last) * b.rate >= min(256, b.batch):
            got = ctl.take(256, never)
            batches += 1
            late = 0.004 if batches % 40 == 0 else 0.0  # one batch in 40, 4 ms late
            path.send(got, clock[0] + late)
    assert ctl.losses == 0 and not ctl.lossy, ctl.log
    assert ctl.rate == 200_000


def test_take_at_names_the_epoch_its_probes_were_charged_to() -> None:
    """take_at returns the grant's clock time: the engine stamps the probes with it, so
    their replies come back to the epoch the grant counted them in, however late the
    engine got to stamp them (a GIL wait). TokenBucket's take_at is the same grant."""
    clock = [10.0]
    ctl = AdaptiveRate(policy_for("aggressive"), timeout=lambda: None, clock=lambda: clock[0])
    never = threading.Event()
    ctl.bucket.tokens = 1000.0
    got, granted = ctl.take_at(256, never)  # (a batch: 1 ms of the start rate)
    assert got > 0 and granted == 10.0
    clock[0] += 0.005  # the transmit thread waits for the GIL before stamping: 2.5 epochs
    cell = ctl._epochs[int(granted / ctl.EPOCH)]
    assert cell == [got, 0]
    ctl.replied([granted] * got)
    assert cell == [got, got]  # every reply in the epoch its probe was counted in
    bucket = TokenBucket(1000.0, clock=lambda: clock[0])
    bucket.tokens = 10.0
    assert bucket.take_at(5, never) == (5, clock[0]) and bucket.take(5, never) == 5


def test_real_loss_is_not_undone() -> None:
    """A bottleneck's drops never get their replies: the cuts stand (see settles_near)."""
    path = Path(capacity=20_000.0, queue=64, answer=1.0)
    ctl, _ = simulate(path, "aggressive", seconds=2.0)
    assert ctl.losses >= 1 and ctl.lossy
    assert ctl.losses > ctl.undone


def test_silence_keeps_the_initial_rate_and_no_history() -> None:
    path = Path(answer=0.0)
    ctl, sent = simulate(path, "normal", seconds=2.0)
    assert ctl.rate == 1000.0 and not ctl.log
    assert 900 <= pps(sent, 0.5, 2.0) <= 1100
    # Nothing answers, so no epoch ever becomes final: the history is still bounded.
    ctl, _ = simulate(Path(answer=0.0), "insane", seconds=50.0, dt=0.002, max_rate=4000)
    assert len(ctl._epochs) <= 20_000


def test_min_and_max_rate_bound_it() -> None:
    path = Path(capacity=2_000.0, queue=16, answer=1.0)
    ctl, sent = simulate(path, "aggressive", seconds=2.0, min_rate=4_000, max_rate=50_000)
    assert ctl.rate >= 4_000  # the user's floor wins over the path
    assert all(r <= 50_000 for _, r, _ in ctl.log)


def test_a_new_round_forgets_the_answer_fraction() -> None:
    path = Path(answer=1.0)
    ctl, _ = simulate(path, "aggressive", seconds=0.3)
    assert ctl.ref is not None and ctl.ref > 0.9
    ctl.new_round()
    assert ctl.ref is None


def test_set_rate_keeps_the_bucket_consistent() -> None:
    clock = [0.0]
    b = TokenBucket(1000.0, clock=lambda: clock[0])
    clock[0] = 0.01
    b.set_rate(100_000.0)
    assert b.batch == 256 and b.rate == 100_000.0
    assert b.tokens == pytest.approx(10.0)
    with pytest.raises(ValueError):
        b.set_rate(0.0)


def test_a_rate_cut_during_a_wait_does_not_stall_take() -> None:
    """A transmit thread waiting for a batch of the old, high rate while another thread cuts
    the rate must get the new, smaller batch: the old one is above the new cap and would
    never be granted (a lossy-path scan hung there)."""
    # The bucket's clock stands still until the cut: the thread cannot earn its 200 tokens
    # first, however long this thread is descheduled (at 200,000/s that took a 1 ms stall
    # on a loaded box, and the test failed with the old batch granted).
    now = [100.0]
    b = TokenBucket(200_000.0, batch_seconds=0.001, clock=lambda: now[0])
    assert b.batch == 200
    b.tokens = 0.0
    never = threading.Event()
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(b.take(256, never)))
    t.start()
    t.join(0.05)
    assert t.is_alive() and not got  # waiting for a batch of 200
    b.set_rate(500.0)  # batch 1, cap 25: a batch of 200 would never be granted
    now[0] += 1.0
    t.join(2.0)
    assert not t.is_alive() and got and got[0] <= 25


def test_grant_hands_out_what_is_due_without_waiting() -> None:
    """The connect engine's use of the bucket: ``grant`` never waits, ``refund`` gives
    back what a pass did not send, and the mean rate holds over a polling loop."""
    now = [10.0]
    b = TokenBucket(3000.0, max_batch=1, clock=lambda: now[0])
    assert b.grant(100) == 0  # no credit before time passes
    now[0] += 0.01
    assert b.grant(100) == 30
    now[0] += 0.01
    assert b.grant(5) == 5  # at most what is wanted; the rest stays
    b.refund(3)  # granted but not sent
    assert b.grant(100) == 28
    sent = 0
    for _ in range(1000):  # 1 s of 1 ms polls, each sending at most 7 probes
        now[0] += 0.001
        got = b.grant(7)
        b.refund(got - min(got, 3 if _ % 2 else 7))  # some passes send fewer
        sent += min(got, 3 if _ % 2 else 7)
    assert 2990 <= sent <= 3010


def test_credit_is_capped_and_may_start_before_the_bucket() -> None:
    """A worker whose bucket is made 0.5 s after the scan's start gets the capped credit
    (50 ms of the rate) at once, not a 0.5 s burst; refunds stay within the cap too."""
    now = [20.5]
    b = TokenBucket(3000.0, max_batch=1, clock=lambda: now[0], start=20.0)
    assert b.grant(10_000) == 150
    b.refund(10_000)
    assert b.grant(10_000) == 150
    late = TokenBucket(3000.0, clock=lambda: now[0], start=99.0)  # a start in the future
    assert late.grant(10) == 0
