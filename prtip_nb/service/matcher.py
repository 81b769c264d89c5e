"""Matching a reply against a probe's rule chain: incremental, and bounded in time.

Rules are compiled with the ``regex`` module (``servicedb.LazyRegex``), not ``re``: its
``search`` takes a ``timeout`` that really stops a runaway match, releases the GIL while it runs
(``concurrent=True``, so a match in a worker thread leaves the event loop alone), and knows
*partial* matches, which is what makes matching incremental:

- nmap matches the whole response buffer against every rule of the chain after each read.
  ``ReplyMatcher.feed`` gives the same answer at each read, but a rule whose partial search
  finds nothing can match no extension of the reply either, so it is dropped for the rest
  of the reply (after the first bytes nearly every ``^``-anchored rule is gone), and a rule
  that is still alive resumes at its leftmost partial match: no match can start before it.
- A rule anchored with ``^`` and a literal prefix is not even tried unless the reply starts
  with (or is a start of) that prefix (``ChainIndex``): of 8,790 rules in the GetRequest
  chain, an HTTP reply meets a few hundred.
- ``RULE_TIMEOUT_S`` per search: a rule that runs out counts as not matching and is not
  tried again on that reply (nmap's PCRE match limit makes a rule fail the same way). A
  search gets ``FIRST_TRY_S`` first; the long second try is announced (``SLOW``) so that
  ``matchpool`` can serve a new reply before it.
  ``Budget`` caps the CPU time one service spends matching over all its replies.
"""

from __future__ import annotations

import re
import re._constants as C  # noqa: N812  (the parser's opcodes)
import re._parser as P  # noqa: N812
from collections.abc import Generator, Sequence
from functools import cache
from time import thread_time

from .servicedb import Match, Probe, Rule
from .text import expand

#: Wall time one rule may spend on one search; past it the rule does not match this reply.
#: Every nmap rule needs under 0.5 ms on an ordinary 4 KiB reply; a hostile reply made for
#: the slowest one (nmap 7.93, line 2347) takes it 45 ms.
RULE_TIMEOUT_S = 0.020
#: Every search first runs with this timeout; one that needs longer is tried again with
#: RULE_TIMEOUT_S, after ``SLOW`` lets a scheduler serve other replies first.
FIRST_TRY_S = 0.002
SLOW = "slow"
#: CPU seconds one service may spend matching, over all its replies (then it stays unnamed
#: or softmatched, with a note): ~40x what an HTTP service needs (``docs/architecture.md``).
SERVICE_BUDGET_S = 0.25


def literal_prefix(pattern: bytes, flags: int = 0) -> bytes | None:
    """The bytes a match must start the reply with (``^`` then literals), lowercased if the
    rule ignores case; None when the rule is not anchored that way."""
    return prefix_info(pattern, flags)[0]


@cache  # NULL's rules sit in every chain: parse each pattern once
def prefix_info(pattern: bytes, flags: int = 0) -> tuple[bytes | None, bool]:
    """``literal_prefix``, and whether it ignores case (the pattern may say so inline)."""
    try:
        tree = P.parse(pattern, flags)
    except re.error:
        return None, False
    flags |= tree.state.flags
    icase = bool(flags & re.IGNORECASE)
    if flags & re.MULTILINE:
        return None, icase  # ^ then matches after any newline
    items = list(tree.data)
    if not items or items[0] not in ((C.AT, C.AT_BEGINNING), (C.AT, C.AT_BEGINNING_STRING)):
        return None, icase
    out = bytearray()
    for op, av in items[1:]:
        if op is not C.LITERAL:  # the parser folds "ab*" into "a" and a repeat of "b"
            break
        out.append(av)
    if not out:
        return None, icase
    return (bytes(out).lower() if icase else bytes(out)), icase


class ChainIndex:
    """A probe's chain with each rule's literal prefix, and the rules worth trying for a
    reply's first byte (in chain order: the order decides which rule wins)."""

    __slots__ = ("rules", "prefixes", "icase", "_free", "_by_byte", "_cache")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.prefixes: list[bytes | None] = []
        self.icase: list[bool] = []
        self._free: list[int] = []
        self._by_byte: dict[int, list[int]] = {}
        self._cache: dict[int, tuple[int, ...]] = {}
        for i, rule in enumerate(self.rules):
            prefix, icase = rule.prefix
            self.prefixes.append(prefix)
            self.icase.append(icase)
            if prefix is None:
                self._free.append(i)
                continue
            firsts = {prefix[0], bytes([prefix[0]]).upper()[0]} if self.icase[i] else {prefix[0]}
            for b in firsts:
                self._by_byte.setdefault(b, []).append(i)

    def candidates(self, first: int) -> tuple[int, ...]:
        got = self._cache.get(first)
        if got is None:
            got = tuple(sorted(self._free + self._by_byte.get(first, [])))
            self._cache[first] = got
        return got

    def could_start(self, i: int, window: bytes) -> bool:
        """False if rule ``i``'s literal prefix rules out every extension of ``window``."""
        prefix = self.prefixes[i]
        if prefix is None:
            return True
        head = window[: len(prefix)]
        if self.icase[i]:
            head = head.lower()
        return prefix.startswith(head) if len(head) < len(prefix) else head == prefix


def indexed(probe: Probe) -> bool:
    """True once the probe's ``ChainIndex`` is built (building it takes ms: 8,790 rules)."""
    return probe.index is not None and probe.index.rules is probe.chain


def chain_index(probe: Probe) -> ChainIndex:
    """The probe's ``ChainIndex``, built on first use and kept on the probe."""
    index = probe.index
    if index is None or index.rules is not probe.chain:
        index = probe.index = ChainIndex(probe.chain)
    return index


class Budget:
    """CPU seconds of matching one service may spend, and what it has spent."""

    __slots__ = ("limit", "spent")

    def __init__(self, limit: float = SERVICE_BUDGET_S) -> None:
        self.limit = limit
        self.spent = 0.0

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.limit


class ReplyMatcher:
    """The matching state of one reply: which rules are still alive, from where.

    ``feed(window)`` (or ``steps(window)``, one rule per step, for a scheduler that slices
    the work) gives ``ServiceDB.match``'s answer for ``window``, provided each window
    extends the last one. ``timeouts`` names the rules that ran out of time.
    """

    __slots__ = ("probe", "budget", "timeout", "first_try", "alive", "starts",
                 "timeouts", "result", "fed")  # fmt: skip

    def __init__(self, probe: Probe, budget: Budget | None = None, *,
                 timeout: float = RULE_TIMEOUT_S) -> None:  # fmt: skip
        self.probe = probe
        self.budget = budget
        self.timeout = timeout
        self.first_try = FIRST_TRY_S  # a scheduler may lower it while it steps (matchpool)
        self.alive: list[int] | None = None  # rule numbers still worth trying, in order
        self.starts: list[int] = []  # where each alive rule's search resumes
        self.timeouts: list[str] = []
        self.result: Match | None = None
        self.fed = 0  # length of the last window

    def feed(self, window: bytes) -> Match | None:
        """Match synchronously (no slicing)."""
        steps = self.steps(window)
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                return stop.value

    def steps(self, window: bytes) -> Generator[str | None, None, Match | None]:
        """Generator form of ``feed``: yields after each rule tried (``SLOW`` before a rule's
        second, long try), returns the match."""
        if len(window) < self.fed:
            raise ValueError("a reply's window only grows: use a new ReplyMatcher")
        self.fed = len(window)
        if not window:
            return None
        index = chain_index(self.probe)  # built on a probe's first reply (a thread's job)
        rules = index.rules
        if self.alive is None:
            self.alive = [i for i in index.candidates(window[0]) if index.could_start(i, window)]
            self.starts = [0] * len(self.alive)
        alive, starts = self.alive, self.starts
        keep: list[int] = []
        keep_at: list[int] = []
        soft: Match | None = None
        found: Match | None = None
        for k, i in enumerate(alive):
            if found is not None or (self.budget is not None and self.budget.exhausted):
                keep.extend(alive[k:])  # untried: still alive for a later window
                keep_at.extend(starts[k:])
                break
            rule = rules[i]
            # After a softmatch only a hard match of the same service can still win (nmap).
            if soft is not None and (rule.soft or rule.service != soft.service):
                keep.append(i)
                keep_at.append(starts[k])
                continue
            if not index.could_start(i, window):
                continue
            try:  # once per rule and process, and not charged to the service's budget
                compiled = rule.regex.compile()
            except re.error:
                self.timeouts.append(f"{rule.source} (does not compile)")
                continue
            t0 = thread_time()
            try:
                m = compiled.search(window, starts[k], partial=True,
                                    timeout=self.first_try, concurrent=True)  # fmt: skip
            except TimeoutError:
                # SLOW: tell a scheduler that a long search comes next (it may serve others
                # first), then try again with the whole timeout. Order is kept: no later
                # rule is tried before this one is settled.
                if self.budget is not None:
                    self.budget.spent += thread_time() - t0
                yield SLOW
                t0 = thread_time()
                try:
                    m = compiled.search(window, starts[k], partial=True,
                                        timeout=self.timeout, concurrent=True)  # fmt: skip
                except TimeoutError:
                    self.timeouts.append(rule.source)
                    m = None  # as nmap's match limit: this rule does not match this reply
            if self.budget is not None:
                self.budget.spent += thread_time() - t0
            yield None
            if m is None:
                continue  # no extension of this reply can match this rule
            keep.append(i)
            # A partial match is the leftmost place a later match can start; after a full
            # one, an earlier partial may still grow into the leftmost match: stay put.
            keep_at.append(m.start() if m.partial else starts[k])
            if m.partial:
                continue
            hit = Match(rule.service, expand(rule.product, m), expand(rule.version, m),
                        expand(rule.info, m), rule.soft, self.probe.name, rule.source)  # fmt: skip
            if not rule.soft:
                found = hit
            elif soft is None:
                soft = hit
        self.alive, self.starts = keep, keep_at
        self.result = found or soft
        return self.result
