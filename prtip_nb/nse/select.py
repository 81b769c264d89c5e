"""Where scripts come from, and nmap's ``--script`` selection over them.

SOURCES, in the order a name is looked up:
- the built-in set (``prtip_nb.nse.builtin``);
- installed packages: every entry point of the group ``prtip_nb.scripts`` (in a
  package's ``pyproject.toml``: ``[project.entry-points."prtip_nb.scripts"]``,
  ``mychecks = "mychecks:SCRIPTS"``) may name a Script, a Script subclass, a list of them
  or a module holding them; a broken package is skipped with a warning, never a dead scan;
- a user's file (``--script ./mycheck.py``) or module (``--script mypkg.checks``): every
  Script at its top level (or its ``SCRIPTS`` list);
- Script objects passed to ``pn.scan(..., scripts=[...])``.

SELECTION, as nmap's (``man nmap``, "Script Selection"): a comma-separated list of script
names, categories, globs (``http-*``), ``all``, files and modules, and boolean expressions
of those with ``and``, ``or``, ``not`` and parentheses (``"default or safe"``,
``"(default or discovery) and not intrusive"``, ``"http-* and not http-methods"``). ``-sC``
is ``default``. A word that names nothing is an error before anything is sent.

ARGUMENTS (``--script-args``): ``key=value`` pairs separated by commas; a value may be
quoted (``"a,b"``) or braced (``{a,b}``: kept as written); ``<script>.key`` is for one script.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import inspect
import re
import sys
import warnings
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from prtip_nb.errors import ConfigError
from prtip_nb.nse.api import CATEGORIES, Script, check

ENTRY_POINT_GROUP = "prtip_nb.scripts"


def _collect(obj: Any, where: str) -> list[Script]:
    """The Scripts that ``obj`` (a Script, class, list or module) stands for."""
    if isinstance(obj, Script):
        return [check(obj)]
    if inspect.isclass(obj) and issubclass(obj, Script):
        return [check(obj())]
    if isinstance(obj, ModuleType):
        listed = getattr(obj, "SCRIPTS", None)
        if listed is not None:
            return _collect(list(listed), where)
        found: list[Script] = []
        for value in vars(obj).values():
            if isinstance(value, Script):
                found.append(check(value))
            elif (inspect.isclass(value) and issubclass(value, Script)
                  and value.__module__ == obj.__name__ and bool(value.id)):  # fmt: skip
                found.append(check(value()))
        return found
    if isinstance(obj, list | tuple):
        return [s for item in obj for s in _collect(item, where)]
    raise ConfigError(f"{where} gives a {type(obj).__name__}, not scripts",
                      hint="point it at a Script, a list of Scripts or a module")  # fmt: skip


@lru_cache(maxsize=1)
def builtin() -> tuple[Script, ...]:
    from prtip_nb.nse.builtin import SCRIPTS

    return tuple(SCRIPTS)


def installed() -> list[Script]:
    """Scripts that installed packages offer through the ``prtip_nb.scripts`` group."""
    from importlib.metadata import entry_points

    out: list[Script] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            out.extend(_collect(ep.load(), f"entry point {ep.name} ({ep.value})"))
        except Exception as exc:  # a broken package must not stop the scan
            warnings.warn(f"prtip_nb: skipped the scripts of entry point {ep.name!r} "
                          f"({ep.value}): {exc}", stacklevel=2)  # fmt: skip
    return out


def registry() -> dict[str, Script]:
    """Every known script by id: built-in first; an installed one may not shadow it."""
    reg = {s.id: s for s in builtin()}
    for s in installed():
        if s.id in reg:
            warnings.warn(f"prtip_nb: an installed script named {s.id!r} is ignored: that "
                          "name is taken", stacklevel=2)  # fmt: skip
            continue
        reg[s.id] = s
    return reg


def load_file(path: str | Path) -> list[Script]:
    """The scripts of a Python file (imported as a module of its own)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"script file {str(path)!r} does not exist",
                          hint="give a path to a .py file that defines prtip_nb scripts")
    stem = re.sub(r"\W", "_", p.stem)
    name = f"prtip_nb_user_{stem}_{abs(hash(str(p.resolve()))):x}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {str(path)!r} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ConfigError(f"{str(path)!r} failed to load: {type(exc).__name__}: {exc}") from exc
    found = _collect(module, str(path))
    if not found:
        raise ConfigError(f"{str(path)!r} defines no script",
                          hint="decorate an async function with @prtip_nb.script(...)")  # fmt: skip
    return found


def _load_module(name: str) -> list[Script] | None:
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    return _collect(module, name)


# --- selection ------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


def _split(spec: str) -> list[str]:
    """Split at commas outside parentheses."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in spec:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [s for s in out if s]


class _Expr:
    """A boolean expression over script ids, categories and globs (recursive descent)."""

    def __init__(self, text: str, known: Mapping[str, Script]) -> None:
        self.tokens = _TOKEN.findall(text)
        self.text, self.known, self.i = text, known, 0

    def parse(self) -> Any:
        node = self._or()
        if self.i != len(self.tokens):
            raise self._error(f"unexpected {self.tokens[self.i]!r}")
        return node

    def _error(self, why: str) -> ConfigError:
        return ConfigError(f"bad --script expression {self.text!r}: {why}",
                           hint="e.g. 'default', 'http-title,ssh-hostkey', "
                           "'(default or safe) and not intrusive'")  # fmt: skip

    def _peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _or(self) -> Any:
        node = self._and()
        while self._peek() == "or":
            self.i += 1
            node = ("or", node, self._and())
        return node

    def _and(self) -> Any:
        node = self._not()
        while self._peek() == "and":
            self.i += 1
            node = ("and", node, self._not())
        return node

    def _not(self) -> Any:
        if self._peek() == "not":
            self.i += 1
            return ("not", self._not())
        tok = self._peek()
        if tok is None:
            raise self._error("it ends too soon")
        self.i += 1
        if tok == "(":
            node = self._or()
            if self._peek() != ")":
                raise self._error("a '(' is not closed")
            self.i += 1
            return node
        if tok in (")", "and", "or"):
            raise self._error(f"unexpected {tok!r}")
        if not (tok == "all" or tok in CATEGORIES or tok in self.known
                or any(fnmatch.fnmatchcase(i, tok) for i in self.known)):  # fmt: skip
            raise ConfigError(f"--script: no script or category named {tok!r}",
                              hint="pn.nse.list_scripts() lists them (built-in and installed); "
                              "a file needs a path such as ./mycheck.py")  # fmt: skip
        return ("leaf", tok)


def _eval(node: Any, s: Script) -> bool:
    op = node[0]
    if op == "leaf":
        w = node[1]
        return w == "all" or w == s.id or w in s.categories or fnmatch.fnmatchcase(s.id, w)
    if op == "not":
        return not _eval(node[1], s)
    if op == "and":
        return _eval(node[1], s) and _eval(node[2], s)
    return _eval(node[1], s) or _eval(node[2], s)


def _looks_like_path(item: str) -> bool:
    return item.endswith(".py") or "/" in item or item.startswith("~")


def resolve(selection: str | Script | Iterable[str | Script] | None) -> list[Script]:
    """The scripts ``selection`` names, in registry order (then files, then objects),
    each once. Raises ConfigError on a name, file or expression that selects nothing."""
    if selection is None:
        return []
    items: list[str | Script] = []
    for item in [selection] if isinstance(selection, str | Script) else list(selection):
        items.extend(_split(item) if isinstance(item, str) else [check(item)])
    known = registry()
    chosen: dict[str, Script] = {}
    extra: list[Script] = []
    for item in items:
        if isinstance(item, Script):
            extra.append(item)
        elif _looks_like_path(item):
            extra.extend(load_file(item))
        elif (item not in known and "." in item and " " not in item
              and (mod := _load_module(item)) is not None):  # fmt: skip
            extra.extend(mod)
        else:
            tree = _Expr(item, known).parse()
            for s in known.values():
                if _eval(tree, s):
                    chosen[s.id] = s
    for s in extra:
        chosen.setdefault(s.id, s)
        if chosen[s.id] is not s:
            chosen[s.id] = s  # the user's own object wins over a registered namesake
    return list(chosen.values())


def parse_args(text: str | Mapping[str, Any] | None) -> dict[str, str]:
    """``--script-args`` text (or a dict) -> {key: value}."""
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return {str(k): str(v) for k, v in text.items()}
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        j = i
        while j < n and text[j] not in "=,":
            j += 1
        key = text[i:j].strip()
        value = ""
        if j < n and text[j] == "=":
            j += 1
            while j < n and text[j] == " ":
                j += 1
            if j < n and text[j] in "\"'":
                k = text.find(text[j], j + 1)
                if k < 0:
                    raise ConfigError(f"--script-args: a quote is not closed in {text!r}")
                value, j = text[j + 1:k], k + 1
            elif j < n and text[j] == "{":
                depth, k = 0, j
                while k < n:
                    depth += (text[k] == "{") - (text[k] == "}")
                    if depth == 0:
                        break
                    k += 1
                if depth:
                    raise ConfigError(f"--script-args: a '{{' is not closed in {text!r}")
                value, j = text[j:k + 1], k + 1
            else:
                k = j
                while k < n and text[k] != ",":
                    k += 1
                value, j = text[j:k].strip(), k
        if key:
            out[key] = value
        while j < n and text[j] in " ,":
            j += 1
        i = j
    return out
