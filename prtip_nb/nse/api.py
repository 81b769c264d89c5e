"""The script API: what a script is, what it runs on, and what it returns.

A script is an object with an ``id``, ``categories``, a rule and an ``async run(ctx)``::

    import prtip_nb as pn

    @pn.script("http-powered-by", categories=("safe", "discovery"), services=("http",),
               ports=(80, 443, 8080))
    async def powered_by(ctx):
        \"\"\"
        |_http-powered-by: PHP/8.2.7
        \"\"\"
        r = await ctx.http("GET", "/")
        return r.header("X-Powered-By")      # None: no output, no row

Or subclass :class:`Script` and override ``run`` (and ``matches`` for a rule of your own).

RULES. As NSE's portrule: a script runs on an open TCP port when the port is one of
``ports``, or the service (``-sV``'s name) is one of ``services``, or ``tunnel`` is the
port's tunnel ("ssl"); then ``rule(target)``, when given, must also say yes. A script
with none of ``ports``/``services``/``tunnel`` runs wherever ``rule`` says (no rule:
every open port, as nmap's ``banner``). ``phase="host"`` scripts (NSE's hostrule) run
once per host that has an open port; their ``ctx.port`` is None.

RESULTS. ``run`` returns what becomes one row of the ``scripts`` table and one nmap
``<script>`` element:

- ``None``: nothing (no row), as an NSE script returning nil;
- a ``str``: the output text, no structured data;
- a ``dict`` (or a list of ``(key, value)`` pairs): structured data; a nested dict or
  list becomes a ``<table>``, anything else an ``<elem>`` (``str(value)``); the text is
  laid out as nmap lays out a table (two spaces per level);
- ``Output(text, data)``: both, when the text should read otherwise than the data.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prtip_nb.errors import ConfigError

if TYPE_CHECKING:
    from prtip_nb.nse.context import Context

#: nmap's script categories (``man nmap``, "Script Categories").
CATEGORIES = ("auth", "broadcast", "brute", "default", "discovery", "dos", "exploit",
              "external", "fuzzer", "intrusive", "malware", "safe", "version", "vuln")  # fmt: skip
PHASES = ("port", "host")

Tree = list[list[Any]]  # [[key or None, str | Tree], ...]: results.schema's SCRIPT DATA


@dataclass(frozen=True)
class Target:
    """What a script runs on: an open port and what ``-sV`` said about it."""

    host: str
    port: int | None = None  # None for a host script
    proto: str = "tcp"
    service: str | None = None
    product: str | None = None
    version: str | None = None
    extrainfo: str | None = None
    tunnel: str | None = None  # "ssl" when -sV found TLS under the service
    banner: str | None = None


@dataclass(frozen=True)
class Output:
    """A script's result: nmap's ``output`` text and its structured data (a Tree)."""

    text: str
    data: Tree | None = None


def to_tree(value: Mapping[str, Any] | Sequence[Any]) -> Tree:
    """A dict (keys kept in order), a list of pairs or a plain list -> a Tree."""
    if isinstance(value, Mapping):
        items: Iterable[tuple[Any, Any]] = value.items()
    else:
        items = [(None, v) for v in value]
    out: Tree = []
    for key, v in items:
        k = None if key is None else str(key)
        if isinstance(v, Mapping) or (isinstance(v, list | tuple) and not isinstance(v, str)):
            out.append([k, to_tree(v)])
        else:
            out.append([k, "" if v is None else str(v)])
    return out


def format_tree(tree: Tree, level: int = 1) -> list[str]:
    """The lines nmap prints for a table: ``key: value``, two spaces a level, and a nested
    table under ``key: `` (nmap's trailing space kept)."""
    pad = "  " * level
    lines: list[str] = []
    for key, value in tree:
        if isinstance(value, list):
            if key is not None:
                lines.append(f"{pad}{key}: ")
            lines.extend(format_tree(value, level + 1 if key is not None else level))
        else:
            lines.append(f"{pad}{key}: {value}" if key is not None else f"{pad}{value}")
    return lines


def as_output(value: Any) -> Output | None:
    """What ``run`` returned, as an Output (see RESULTS in the module docstring)."""
    if value is None or isinstance(value, Output):
        return value
    if isinstance(value, str):
        return Output(value)
    if isinstance(value, bytes):
        from prtip_nb.service.text import escape_bytes

        return Output(escape_bytes(value))
    if isinstance(value, Mapping | list | tuple):
        tree = to_tree(value)
        if not tree:
            return None
        return Output("\n" + "\n".join(format_tree(tree)), tree)
    raise TypeError(
        f"a script returned {type(value).__name__}; return None, a str, a dict, a list of "
        "(key, value) pairs or prtip_nb.Output(text, data)"
    )


class Script:
    """A check that runs after the port scan (and ``-sV``) on the ports its rule picks.

    Class attributes are the defaults; :func:`script` sets them per instance.
    ``timeout`` (seconds) and ``max_bytes`` (read over all its connections) are the
    budget of one run; the engine's limits cap them (``--script-timeout``).
    """

    id: str = ""
    categories: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    services: tuple[str, ...] = ()
    tunnel: str | None = None
    rule: Callable[[Target], bool] | None = None
    phase: str = "port"
    timeout: float = 10.0
    max_bytes: int = 1 << 20
    description: str = ""

    def matches(self, target: Target) -> bool:
        """Whether this script runs on ``target`` (NSE's portrule or hostrule)."""
        if self.phase == "host":
            return target.port is None and (self.rule is None or bool(self.rule(target)))
        if target.port is None:
            return False
        listed = bool(self.ports or self.services or self.tunnel)
        if listed and not (
            target.port in self.ports
            or (target.service is not None and target.service in self.services)
            or (self.tunnel is not None and target.tunnel == self.tunnel)
        ):
            return False
        return self.rule is None or bool(self.rule(target))

    async def run(self, ctx: Context) -> Any:
        raise NotImplementedError(f"script {self.id!r} has no run(ctx)")

    def __repr__(self) -> str:
        return f"<Script {self.id} {','.join(self.categories)}>"


@dataclass(eq=False, repr=False)
class FunctionScript(Script):
    """A Script made by :func:`script` from an ``async def f(ctx)``."""

    fn: Callable[[Context], Awaitable[Any]] = field(default=None)  # type: ignore[assignment]
    id: str = ""
    categories: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    services: tuple[str, ...] = ()
    tunnel: str | None = None
    rule: Callable[[Target], bool] | None = None
    phase: str = "port"
    timeout: float = 10.0
    max_bytes: int = 1 << 20
    description: str = ""

    async def run(self, ctx: Context) -> Any:
        return await self.fn(ctx)

    def __call__(self, ctx: Context) -> Awaitable[Any]:
        return self.fn(ctx)


def check(s: Script) -> Script:
    """``s`` if it is a usable script, else a ConfigError saying what to fix."""
    where = f"script {getattr(s, 'id', s)!r}"
    if not isinstance(s, Script):
        raise ConfigError(f"{where} is a {type(s).__name__}, not a prtip_nb.Script",
                          hint="decorate an async function with @prtip_nb.script(...) or "
                          "subclass prtip_nb.Script")  # fmt: skip
    if not s.id or not isinstance(s.id, str) or any(c.isspace() or c == "," for c in s.id):
        raise ConfigError(f"{where}: id must be a non-empty name without spaces or commas")
    bad = [c for c in s.categories if c not in CATEGORIES]
    if bad:
        raise ConfigError(f"{where}: unknown categories {bad}",
                          hint=f"use nmap's: {', '.join(CATEGORIES)}")  # fmt: skip
    if s.phase not in PHASES:
        raise ConfigError(f"{where}: phase must be 'port' or 'host', not {s.phase!r}")
    if not (s.timeout > 0 and s.max_bytes > 0):
        raise ConfigError(f"{where}: timeout and max_bytes must be positive")
    if not inspect.iscoroutinefunction(type(s).run) and not isinstance(s, FunctionScript):
        raise ConfigError(f"{where}: run must be 'async def run(self, ctx)'")
    return s


def script(
    id: str,
    *,
    categories: Sequence[str] = ("safe",),
    ports: Iterable[int] = (),
    services: Iterable[str] = (),
    tunnel: str | None = None,
    rule: Callable[[Target], bool] | None = None,
    phase: str = "port",
    timeout: float = 10.0,
    max_bytes: int = 1 << 20,
) -> Callable[[Callable[[Context], Awaitable[Any]]], FunctionScript]:
    """Make an ``async def f(ctx)`` a Script (see the module docstring for the rule)."""

    def wrap(fn: Callable[[Context], Awaitable[Any]]) -> FunctionScript:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(f"script {id!r}: {getattr(fn, '__name__', fn)} must be an "
                              "'async def' function taking ctx")  # fmt: skip
        s = FunctionScript(
            fn=fn, id=id, categories=tuple(categories), ports=tuple(int(p) for p in ports),
            services=tuple(services), tunnel=tunnel, rule=rule, phase=phase,
            timeout=float(timeout), max_bytes=int(max_bytes), description=fn.__doc__ or "",
        )
        check(s)
        return s

    return wrap
