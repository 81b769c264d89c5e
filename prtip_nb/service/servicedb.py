"""The service-probe database: probes, match rules, and the matcher.

A ``ServiceDB`` comes from the project's own data file (``prtip_nb/data/service-probes.toml``,
``load_service_db``) or, optionally, from an installed nmap's ``nmap-service-probes``
(``prtip_nb.service.nmapdb``). Both give the same objects, so the engine does not care which.

Matching follows nmap's model: the reply to a probe is tried against that probe's rules,
then its fallback probes' rules, then the NULL probe's (a banner can arrive late, in the
reply to a later probe). The first hard match wins; failing that, the first softmatch names
the service without a product. Regexes are bytes patterns: replies are bytes, and a
service's bytes are not necessarily text. Only the first ``REGEX_WINDOW`` bytes of a reply
ever reach a regex: the cost of a match is bounded by the window, not by the peer.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import regex

from .text import parse_portlist, unescape

if TYPE_CHECKING:
    from .matcher import ChainIndex

#: Bytes of a reply fed to any regex (the rest is counted and dropped).
REGEX_WINDOW = 4096
DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "service-probes.toml"
_FLAGS = re.IGNORECASE | re.DOTALL | re.MULTILINE


def compile_rule(pattern: bytes, flags: int = 0) -> Any:
    """A rule's regex, compiled with the ``regex`` module in VERSION0 (``re``'s syntax):
    unlike ``re`` it can stop a search at a timeout (``matcher``). Raises ``re.error``."""
    try:
        return regex.compile(pattern, (flags & _FLAGS) | regex.VERSION0)
    except regex.error as exc:
        raise re.error(str(exc)) from None


def re_flags(compiled: Any) -> int:
    """The ``re`` flags of a rule's regex (``regex`` adds bits ``re`` does not know)."""
    return int(compiled.flags) & _FLAGS


class LazyRegex:
    """A rule's regex, compiled (``compile_rule``) on its first use: ``regex`` needs 3.9 s to
    compile nmap's 11,421 TCP rules (``re``: 0.9 s), and a scan tries a few hundred."""

    __slots__ = ("pattern", "flags", "_compiled")

    def __init__(self, pattern: bytes, flags: int = 0, *, now: bool = False) -> None:
        self.pattern = pattern
        self.flags = flags & _FLAGS
        self._compiled: Any = None
        if now:
            self.compile()

    def compile(self) -> Any:
        """The compiled ``regex`` pattern; raises ``re.error`` if it does not compile."""
        compiled = self._compiled
        if compiled is None:  # two threads may both compile once: same result, no harm
            compiled = self._compiled = compile_rule(self.pattern, self.flags)
        return compiled

    def search(self, *args: Any, **kwargs: Any) -> Any:
        return self.compile().search(*args, **kwargs)

    def __eq__(self, other: object) -> bool:  # as re.Pattern: same pattern, same flags
        if not isinstance(other, LazyRegex):
            return NotImplemented
        return (self.pattern, self.flags) == (other.pattern, other.flags)

    def __hash__(self) -> int:
        return hash((self.pattern, self.flags))

    def __repr__(self) -> str:
        return f"LazyRegex({self.pattern!r}, {self.flags})"


@dataclass(frozen=True, slots=True)
class Rule:
    """One match (or softmatch) line: a service name, a regex and version templates."""

    service: str
    regex: LazyRegex  # an re.Pattern given here is converted (same syntax)
    product: str | None = None
    version: str | None = None
    info: str | None = None
    soft: bool = False
    source: str = ""  # where it came from, for diagnostics: "file:line" or "probe#n"

    #: The literal bytes a match must start the reply with, and whether case is ignored
    #: (``matcher.prefix_info``): computed once, when the database loads.
    prefix: tuple[bytes | None, bool] = field(default=(None, False), init=False, compare=False)

    def __post_init__(self) -> None:
        from .matcher import prefix_info

        rx: Any = self.regex
        if isinstance(rx, re.Pattern):  # a caller's re pattern: same syntax, and the
            # matcher needs regex's timeout and partial matching
            object.__setattr__(self, "regex", LazyRegex(rx.pattern, rx.flags, now=True))
        object.__setattr__(self, "prefix", prefix_info(self.regex.pattern, self.regex.flags))


@dataclass(frozen=True, slots=True)
class Match:
    """What a rule concluded from a reply."""

    service: str
    product: str | None
    version: str | None
    info: str | None
    soft: bool
    probe: str
    source: str = ""


@dataclass(slots=True)
class Probe:
    """One probe: bytes to send, where it is worth sending, and the rules for its replies."""

    name: str
    payload: bytes = b""
    proto: str = "tcp"
    rarity: int = 5
    wait_ms: int = 5000
    ports: frozenset[int] = frozenset()
    sslports: frozenset[int] = frozenset()
    rules: list[Rule] = field(default_factory=list)
    fallback: tuple[str, ...] = ()
    tls: bool = False  # the probe is a TLS handshake; replies then run inside TLS
    chain: tuple[Rule, ...] = ()  # own rules + fallbacks' + NULL's, set by ServiceDB
    index: ChainIndex | None = None  # the chain's prefix index, built by matcher on first use


@dataclass(frozen=True, slots=True)
class Skipped:
    """A rule (or probe) a loader could not use, and why."""

    where: str
    reason: str


class ServiceDB:
    """Probes in file order, with lookup by name and the matcher."""

    def __init__(
        self,
        probes: Sequence[Probe],
        skipped: Iterable[Skipped] = (),
        *,
        exclude: frozenset[int] = frozenset(),
    ) -> None:
        self.probes = tuple(p for p in probes if p.proto == "tcp")
        self.skipped = tuple(skipped)
        #: Ports never probed: printers print whatever they receive (nmap's Exclude).
        self.exclude = exclude
        self.by_name = {p.name: p for p in self.probes}
        self.null = self.by_name.get("NULL") or Probe("NULL", rarity=1)
        self.ssl_ports = frozenset().union(*(p.sslports for p in self.probes))
        null_rules = tuple(self.null.rules)
        for p in self.probes:
            chain = list(p.rules)
            for name in p.fallback:
                other = self.by_name.get(name)
                if other is not None and other is not p:
                    chain.extend(other.rules)
            if p is not self.null:
                chain.extend(null_rules)
            p.chain = tuple(chain)

    def __len__(self) -> int:
        return sum(len(p.rules) for p in self.probes)

    def __repr__(self) -> str:
        return f"<ServiceDB {len(self.probes)} probes, {len(self)} rules>"

    def plan(self, port: int, intensity: int, *, tls: bool = False) -> list[Probe]:
        """Probes to send to ``port`` after the NULL probe, in order.

        Probes hinted for the port come first and are sent whatever the intensity (as nmap
        does: port 53 always gets the DNS probe); the others follow by rarity, up to
        ``intensity``. Inside TLS the handshake probe is pointless and left out.
        """
        hinted, rest = [], []
        for p in self.probes:
            if p is self.null or (tls and p.tls):
                continue
            if port in p.ports or (tls and port in p.sslports):
                hinted.append(p)
            elif p.rarity <= intensity:
                rest.append(p)
        rest.sort(key=lambda p: p.rarity)  # stable: file order within a rarity
        return hinted + rest

    def hinted_null(self, port: int) -> bool:
        """True if the port's usual service speaks first (the NULL probe is hinted for it)."""
        return port in self.null.ports

    def match(self, probe: Probe, data: bytes) -> Match | None:
        """The best match for ``data`` (only its first REGEX_WINDOW bytes are looked at).

        One-shot and synchronous; the detector matches incrementally, off its event loop,
        with ``matcher.ReplyMatcher`` (which this uses too: one matcher, one semantics).
        """
        from .matcher import ReplyMatcher

        return ReplyMatcher(probe).feed(data[:REGEX_WINDOW])


def compile_flags(flags: str) -> int:
    out = 0
    for ch in flags:
        if ch == "i":
            out |= re.IGNORECASE
        elif ch == "s":
            out |= re.DOTALL
        elif ch == "m":
            out |= re.MULTILINE
        else:
            raise ValueError(f"unknown regex flag {ch!r}")
    return out


def load_service_db(path: str | Path | None = None) -> ServiceDB:
    """The project's own probe database (TOML); see the data file's header for its format."""
    path = Path(path) if path is not None else DATA_FILE
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    probes: list[Probe] = []
    for i, spec in enumerate(data.get("probe", [])):
        name = spec["name"]
        probe = Probe(
            name=name,
            payload=unescape(spec.get("payload", "")),
            proto=spec.get("proto", "tcp"),
            rarity=int(spec.get("rarity", 5)),
            wait_ms=int(spec.get("wait_ms", 5000)),
            ports=parse_portlist(spec.get("ports", "")),
            sslports=parse_portlist(spec.get("sslports", "")),
            fallback=tuple(spec.get("fallback", ())),
            tls=bool(spec.get("tls", False)),
        )
        for j, rule in enumerate(spec.get("match", [])):
            where = f"{path.name}: probe {name} rule {j}"
            try:
                compiled = LazyRegex(rule["pattern"].encode("latin-1"),
                                     compile_flags(rule.get("flags", "")), now=True)  # fmt: skip
            except (re.error, UnicodeEncodeError) as exc:
                raise ValueError(f"{where}: bad pattern: {exc}") from exc
            probe.rules.append(
                Rule(
                    service=rule["service"],
                    regex=compiled,
                    product=rule.get("product"),
                    version=rule.get("version"),
                    info=rule.get("info"),
                    soft=bool(rule.get("soft", False)),
                    source=where,
                )
            )
        if i == 0 and name != "NULL":
            raise ValueError(f"{path.name}: the first probe must be NULL, not {name!r}")
        probes.append(probe)
    return ServiceDB(probes, exclude=parse_portlist(data.get("exclude", "")))


@cache
def default_db() -> ServiceDB:
    """The shipped database, loaded once per process."""
    return load_service_db()
