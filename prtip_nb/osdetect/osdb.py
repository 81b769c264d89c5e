"""nmap-os-db, read at run time from an installed nmap, and nmap's matching (pure).

The database is nmap's (never shipped with prtip_nb): ``load_db()`` finds it where nmap
keeps it (``$NMAPDIR``, ``/usr/share/nmap``, ``/usr/local/share/nmap``) or takes a path.

FORMAT. A ``MatchPoints`` block gives each test attribute a weight; then one entry per
``Fingerprint <name>`` line: ``Class vendor | family | generation | device type`` lines,
each followed by its ``CPE`` lines, and the test lines ``T1(R=Y%DF=Y%...)`` whose values are
expressions: ``a|b`` (or), ``a-b`` (hex range), ``>a``, ``<a``, ``+`` (non-zero), ``&`` (and).

SCORING (nmap's ``compare_fingerprints``). For every attribute present in both the
reference and the observed fingerprint, add its MatchPoints weight to the total, and to the
score if the observed value matches the expression. Accuracy = score / total. Entries
at or above 85 % make the list (36 at most, best first, one per name, the database order
among equals); 100 % is a perfect match.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ConfigError

__all__ = [
    "GUESS_THRESHOLD",
    "MAX_MATCHES",
    "OsClass",
    "OsDb",
    "OsMatch",
    "OsReference",
    "expr_match",
    "find_db",
    "load_db",
    "parse_db",
]

GUESS_THRESHOLD = 0.85
MAX_MATCHES = 36
_SEARCH = ("/usr/share/nmap", "/usr/local/share/nmap", "/opt/homebrew/share/nmap")


@dataclass(frozen=True)
class OsClass:
    vendor: str | None
    family: str | None
    generation: str | None
    type: str | None
    cpe: tuple[str, ...] = ()


@dataclass
class OsReference:
    """One ``Fingerprint`` entry: its name, line in the file, classes and test expressions."""

    name: str
    line: int
    classes: list[OsClass] = field(default_factory=list)
    tests: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class OsMatch:
    name: str
    accuracy: float  # 0..1
    line: int
    classes: tuple[OsClass, ...]

    @property
    def percent(self) -> int:
        """Accuracy as nmap writes it: the percentage truncated to an integer."""
        return int(self.accuracy * 100 + 1e-9)


@dataclass
class _Index:
    """Every distinct (test, attribute, expression) of the db once, and which entry uses
    which: an observed fingerprint is checked against each distinct expression once, and
    the scores of all 5,000+ entries are two weighted bincounts."""

    triples: list[tuple[str, str, str]]
    weights: np.ndarray  # MatchPoints weight of each triple
    flat: np.ndarray  # triple ids of entry 0, then entry 1, ...
    owner: np.ndarray  # the entry of each item of flat


@dataclass
class OsDb:
    points: dict[str, dict[str, int]]
    prints: list[OsReference]
    path: str = ""
    _index: _Index | None = field(default=None, repr=False)

    def _build(self) -> _Index:
        ids: dict[tuple[str, str, str], int] = {}
        flat: list[int] = []
        owner: list[int] = []
        for n, ref in enumerate(self.prints):
            for test, exprs in ref.tests.items():
                if test not in self.points:
                    continue  # nmap refuses such a db; we ignore the line
                for attr, expr in exprs.items():
                    key = (test, attr, expr)
                    i = ids.get(key)
                    if i is None:
                        i = ids[key] = len(ids)
                    flat.append(i)
                    owner.append(n)
        triples = list(ids)
        weights = np.array([self.points[t].get(a, 1) for t, a, _e in triples], dtype=np.float64)
        return _Index(triples, weights, np.array(flat, dtype=np.int32),
                      np.array(owner, dtype=np.int32))

    def scores(self, fp: Mapping[str, Mapping[str, str]]) -> np.ndarray:
        """The accuracy (0..1) of every entry against ``fp``, in db order."""
        if self._index is None:
            self._index = self._build()
        ix = self._index
        present = np.zeros(len(ix.triples))
        hit = np.zeros(len(ix.triples))
        for i, (test, attr, expr) in enumerate(ix.triples):
            val = fp.get(test, {}).get(attr)
            if val is not None:
                present[i] = 1.0
                if expr_match(val, expr):
                    hit[i] = 1.0
        n = len(self.prints)
        total = np.bincount(ix.owner, weights=(ix.weights * present)[ix.flat], minlength=n)
        score = np.bincount(ix.owner, weights=(ix.weights * hit)[ix.flat], minlength=n)
        return np.divide(score, total, out=np.zeros(n), where=total > 0)

    def match(self, fp: Mapping[str, Mapping[str, str]],
              threshold: float = GUESS_THRESHOLD) -> list[OsMatch]:
        """The entries scoring at least ``threshold`` against ``fp``, best first (nmap's
        ``match_fingerprint``: 36 at most, the best of each name, db order among equals)."""
        scored: list[tuple[float, int, OsReference]] = []
        best: dict[str, int] = {}
        accs = self.scores(fp)
        perfect = {self.prints[i].name for i in np.flatnonzero(accs == 1.0).tolist()}
        if len(perfect) > MAX_MATCHES:
            # nmap's OSSCAN_TOOMANYMATCHES ("Too many fingerprints match this host"): a
            # fingerprint with too few tests (no open port) matches everything; it reports
            # no match at all.
            return []
        for idx in np.flatnonzero((accs >= threshold) | (accs == 1.0)).tolist():
            ref, acc = self.prints[idx], float(accs[idx])
            seen = best.get(ref.name)
            if seen is not None:
                if scored[seen][0] >= acc:
                    continue
                scored[seen] = (acc, idx, ref)
                continue
            best[ref.name] = len(scored)
            scored.append((acc, idx, ref))
        scored.sort(key=lambda s: (-s[0], s[1]))
        return [OsMatch(r.name, acc, r.line, tuple(r.classes))
                for acc, _i, r in scored[:MAX_MATCHES]]

    def accuracy(self, ref: OsReference, fp: Mapping[str, Mapping[str, str]]) -> float:
        total = score = 0
        for test, exprs in ref.tests.items():
            seen = fp.get(test)
            weights = self.points.get(test)
            if seen is None or weights is None:
                continue
            for attr, expr in exprs.items():
                val = seen.get(attr)
                if val is None:
                    continue
                pts = weights.get(attr, 1)
                total += pts
                if expr_match(val, expr):
                    score += pts
        return score / total if total else 0.0


def _hex(text: str) -> int | None:
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


@lru_cache(maxsize=65536)
def expr_match(val: str, expr: str) -> bool:
    """Does an observed value match a reference expression (nmap's ``expr_match``)?"""
    orexp = "|" in expr
    parts = expr.split("|") if orexp else expr.split("&")
    hits = 0
    for p in parts:
        if p == "+":
            n = _hex(val)
            ok = n is not None and n != 0
        elif len(p) > 1 and p[0] in "<>" and p[1] in "0123456789abcdefABCDEF":
            n, bound = _hex(val), _hex(p[1:])
            ok = n is not None and bound is not None and (n < bound if p[0] == "<"
                                                          else n > bound)
        elif "-" in p and p[0] in "0123456789abcdefABCDEF":
            lo, _, hi = p.partition("-")
            n, a, b = _hex(val), _hex(lo), _hex(hi)
            if a is None or b is None:
                ok = p == val
            else:
                ok = n is not None and a <= n <= b
        else:
            ok = p == val
        if ok:
            hits += 1
            if orexp:
                return True
        elif not orexp:
            return False
    return hits > 0


def _test_line(line: str) -> tuple[str, dict[str, str]] | None:
    open_ = line.find("(")
    if open_ <= 0 or not line.endswith(")"):
        return None
    body = line[open_ + 1:-1]
    attrs = {}
    for kv in body.split("%"):
        if kv:
            k, _, v = kv.partition("=")
            attrs[k] = v
    return line[:open_], attrs


def parse_db(text: str | Iterable[str], path: str = "") -> OsDb:
    """Parse nmap-os-db text or lines (MatchPoints, then Fingerprint entries)."""
    points: dict[str, dict[str, int]] = {}
    prints: list[OsReference] = []
    cur: OsReference | None = None
    in_points = False
    # SHARED LINES: many entries repeat a line ("T2(R=N)"); parse each text once and share
    # the (read-only) dict. Halves the parse of nmap-os-db.
    parsed_lines: dict[str, tuple[str, dict[str, str]] | None] = {}
    lines = text.splitlines() if isinstance(text, str) else text
    for no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "MatchPoints":
            in_points, cur = True, None
            continue
        if line.startswith("Fingerprint "):
            in_points = False
            cur = OsReference(line[12:].strip(), no)
            prints.append(cur)
            continue
        if line.startswith("Class "):
            if cur is None:
                raise ValueError(f"{path or 'nmap-os-db'}:{no}: Class before Fingerprint")
            f = [x.strip() or None for x in line[6:].split("|")]
            f += [None] * (4 - len(f))
            cur.classes.append(OsClass(f[0], f[1], f[2], f[3]))
            continue
        if line.startswith("CPE "):
            if cur is None or not cur.classes:
                raise ValueError(f"{path or 'nmap-os-db'}:{no}: CPE before Class")
            cpe = line[4:].split()[0]
            last = cur.classes[-1]
            cur.classes[-1] = OsClass(last.vendor, last.family, last.generation, last.type,
                                      (*last.cpe, cpe))
            continue
        parsed = parsed_lines.get(line)
        if parsed is None:
            parsed = parsed_lines[line] = _test_line(line)
        if parsed is None:
            raise ValueError(f"{path or 'nmap-os-db'}:{no}: cannot read {line[:60]!r}")
        name, attrs = parsed
        if in_points:
            points[name] = {k: int(v) for k, v in attrs.items()}
        elif cur is not None:
            cur.tests[name] = attrs
    if not points:
        raise ValueError(f"{path or 'nmap-os-db'}: no MatchPoints block: not an nmap-os-db")
    return OsDb(points, prints, path)


def find_db() -> Path | None:
    """Where an installed nmap keeps nmap-os-db, or None."""
    dirs = [os.environ["NMAPDIR"]] if os.environ.get("NMAPDIR") else []
    for d in (*dirs, *_SEARCH):
        p = Path(d) / "nmap-os-db"
        if p.is_file():
            return p
    return None


_CACHE: dict[str, OsDb] = {}


def load_db(path: str | os.PathLike[str] | None = None) -> OsDb:
    """nmap-os-db from ``path`` or the installed nmap (parsed once per process)."""
    p = Path(path) if path is not None else find_db()
    if p is None:
        raise ConfigError(
            "OS detection (-O) matches against nmap's nmap-os-db, and no installed nmap was "
            "found (looked in $NMAPDIR, " + ", ".join(_SEARCH) + "): install nmap "
            "(apt-get install nmap) or pass os_db='/path/to/nmap-os-db'")
    key = str(p.resolve())
    if key not in _CACHE:
        try:
            with p.open(encoding="utf-8", errors="replace") as fh:  # streamed: no 5 MB copy
                _CACHE[key] = parse_db(fh, key)
        except OSError as exc:
            raise ConfigError(f"cannot read nmap-os-db at {p}: {exc}") from None
    return _CACHE[key]
