"""Scan configuration: one frozen dataclass, and nmap's timing templates T0–T5.

``ScanConfig`` holds what the user asked for, validated, before anything is sent. The
engine reads only this object; there is no global configuration.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import resource
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError

Method = Literal["connect", "syn", "udp", "auto"]
METHODS: tuple[str, ...] = ("connect", "syn", "udp", "auto")
KEEP: tuple[str, ...] = ("all", "responsive", "open")
HOLD: tuple[str, ...] = ("auto", "all", "open")
RESOLVE: tuple[str, ...] = ("up", "all", "never")
#: hold="auto" keeps only open rows in memory above this many probes when the scan writes a
#: dataset (output=): 13.1M rows held cost ~1 GiB at finish; the dataset has them all.
HOLD_AUTO_PROBES = 1_000_000


@dataclass(frozen=True)
class Timing:
    """One of nmap's -T templates: how long to wait for a reply and how often to retry.

    The values follow nmap's documentation of -T0..-T5 (``man nmap``, "Timing and
    performance"): initial/min/max RTT timeouts, max retries and the delay between probes.
    """

    name: str
    initial_rtt_timeout: float  # seconds
    min_rtt_timeout: float
    max_rtt_timeout: float
    max_retries: int
    scan_delay: float  # seconds between probes to one host (0 = none)
    max_parallelism: int  # probes in flight at once


TIMINGS: tuple[Timing, ...] = (
    Timing("paranoid", 300.0, 0.1, 300.0, 10, 300.0, 1),
    Timing("sneaky", 15.0, 0.1, 15.0, 10, 15.0, 1),
    Timing("polite", 1.0, 0.1, 10.0, 10, 0.4, 1),
    Timing("normal", 1.0, 0.1, 10.0, 10, 0.0, 1024),
    Timing("aggressive", 0.5, 0.1, 1.25, 6, 0.0, 2048),
    Timing("insane", 0.25, 0.05, 0.3, 2, 0.0, 4096),
)


def timing(level: int | str) -> Timing:
    """Return the template for ``level``: 0–5, ``"T4"``, or a name such as ``"aggressive"``."""
    if isinstance(level, str):
        text = level.strip().lower().removeprefix("-").removeprefix("t")
        for t in TIMINGS:
            if text == t.name:
                return t
        level = int(text) if text.isdigit() else -1
    if not 0 <= level <= 5:
        raise ConfigError(
            f"unknown timing template {level!r}",
            token=str(level),
            hint="use 0-5 (T0 paranoid … T5 insane) or a name such as 'aggressive'",
        )
    return TIMINGS[level]


def fd_budget(reserve: int = 64) -> int:
    """How many sockets may be open at once, from RLIMIT_NOFILE minus a reserve.

    A scan that ignores the limit dies with EMFILE (``ulimit -n 256`` is common in
    containers). The soft limit is raised to the hard limit first, as nmap does.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(8, soft - reserve)


@dataclass(frozen=True)
class ScanConfig:
    """Everything a scan needs, validated. Build it with keyword arguments.

    ``targets`` and ``ports`` use nmap's grammar (see ``prtip_nb.targets``). Unset timing
    values (``None``) come from the ``timing`` template.
    """

    targets: tuple[str, ...]
    ports: str | None = None
    top_ports: int | None = None
    exclude: tuple[str, ...] = ()
    exclude_file: str | None = None
    input_file: str | None = None
    family: int | None = None
    method: str = "connect"
    timing: int = 3
    rate: float | None = None  # pins the rate (probes/s); None: adaptive (see net.ratectl)
    min_rate: float | None = None  # bounds of the adaptive rate (nmap's --min-rate/--max-rate)
    max_rate: float | None = None
    max_retries: int | None = None
    timeout: float | None = None
    host_timeout: float | None = None
    concurrency: int | None = None
    workers: int | None = None
    seed: int | None = None
    shard: tuple[int, int] = (1, 1)
    keep: str = "all"
    output: str | None = None
    hold: str = "auto"  # rows kept in memory with output= (see held_rows)
    telemetry_interval: float = 0.25  # seconds between telemetry rows / Progress events
    service: bool = False  # -sV: service and version detection on the open TCP ports
    version_intensity: int = 7  # --version-intensity 0..9: probes with rarity <= this
    # --verify: a light layer-7 check of the open TCP ports (ports.verified, and hosts that
    # accept every port flagged: hosts.pseudo_services). None: on with -sV, else off.
    verify: bool | None = None
    os: bool = False  # -O: OS detection after the port scan (IPv4; raw sockets)
    osscan_limit: bool = False  # --osscan-limit: only hosts with an open and a closed TCP port
    osscan_guess: bool = False  # --osscan-guess: print guesses when no match is perfect
    os_db: str | None = None  # nmap-os-db path; None: the installed nmap's
    # Reverse DNS (net.rdns): "up" hosts (nmap's default), "all" targets (-R), "never" (-n);
    # True/False are "up"/"never". dns_servers (--dns-servers): else /etc/resolv.conf's.
    resolve: str | bool = "up"
    dns_servers: tuple[str, ...] = ()
    traceroute: bool = False  # --traceroute: the path to each host up (engine.tracestage)
    # --script / -sC: names, categories, expressions, files, modules or Script objects
    # (prtip_nb.nse.select); run after the port scan and -sV on the open TCP ports.
    scripts: tuple[Any, ...] = ()
    script_args: str | dict[str, Any] | None = None  # --script-args
    script_timeout: float | None = None  # --script-timeout: caps each script's own budget
    # -sV with nmap's own probes: "nmap" (the installed nmap's nmap-service-probes) or the
    # path of such a file (nmap's --versiondb); None: prtip_nb's database (service.nmapdb).
    service_probes: str | None = None
    # -g / --source-port: the source port of the SYN (-sS) and UDP (-sU) probes; None: a free
    # one from 40000-59999. udp_source_port: the UDP probes' own, when it must differ.
    source_port: int | None = None
    udp_source_port: int | None = None
    # What kind of run this config records: -sn (a ping sweep, pn.discover) or -sL (a list
    # scan); pn.discover and the CLI set them, a port scan (pn.scan) refuses them.
    ping_only: bool = False
    list_only: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.targets, str):
            object.__setattr__(self, "targets", (self.targets,))
        elif not isinstance(self.targets, tuple):
            object.__setattr__(self, "targets", tuple(self.targets))
        if isinstance(self.scripts, str) or not isinstance(self.scripts, Sequence):
            object.__setattr__(self, "scripts", (self.scripts,) if self.scripts else ())
        elif not isinstance(self.scripts, tuple):
            object.__setattr__(self, "scripts", tuple(self.scripts))
        if self.script_timeout is not None and not (
            isinstance(self.script_timeout, int | float) and self.script_timeout > 0
        ):
            raise ConfigError(f"script_timeout must be a positive number of seconds, "
                              f"not {self.script_timeout!r}")
        if isinstance(self.exclude, str):
            object.__setattr__(self, "exclude", (self.exclude,))
        elif not isinstance(self.exclude, tuple):
            object.__setattr__(self, "exclude", tuple(self.exclude))
        if self.method not in METHODS:
            raise ConfigError(
                f"unknown scan method {self.method!r}",
                token=str(self.method),
                hint="use 'connect' (-sT), 'syn' (-sS, with U: ports -sS -sU), 'udp' (-sU) "
                "or 'auto'",
            )
        timing(self.timing)  # validates
        if self.family not in (None, 4, 6):
            raise ConfigError(f"family must be 4, 6 or None, not {self.family!r}")
        for name in ("rate", "min_rate", "max_rate"):
            value = getattr(self, name)
            # isfinite: inf passed "> 0" and then failed deep in the rate limiter mid-scan.
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or not value > 0
            ):
                raise ConfigError(
                    f"{name} must be a finite positive number of packets per second, "
                    f"not {value!r}",
                    token=str(value),
                    hint="leave rate unset (None, or --rate auto) to let the rate adapt to the "
                    "path",
                )
        if self.min_rate is not None and self.max_rate is not None \
                and self.min_rate > self.max_rate:
            raise ConfigError(
                f"min_rate ({self.min_rate:g}) is above max_rate ({self.max_rate:g})",
                hint="--min-rate must not exceed --max-rate",
            )
        for name in ("max_retries", "concurrency", "workers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ConfigError(f"{name} must be a non-negative integer, not {value!r}")
        if self.concurrency == 0 or self.workers == 0:
            raise ConfigError("concurrency and workers must be at least 1 when given")
        for name in ("timeout", "host_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
        if not 0.01 <= self.telemetry_interval <= 60:
            raise ConfigError(
                f"telemetry_interval must be between 0.01 and 60 seconds, "
                f"not {self.telemetry_interval!r}"
            )
        if self.keep not in KEEP:
            raise ConfigError(
                f"keep must be one of {', '.join(KEEP)}, not {self.keep!r}",
                hint="'all' keeps a row per probed port; 'open' keeps only open ports",
            )
        if self.hold not in HOLD:
            raise ConfigError(
                f"hold must be one of {', '.join(HOLD)}, not {self.hold!r}",
                hint="'open' holds only open ports in memory (the dataset under output= has "
                "every row); 'all' holds every row; 'auto' picks 'open' for a scan of more "
                f"than {HOLD_AUTO_PROBES:,} probes that writes a dataset",
            )
        if self.hold == "open" and self.output is None:
            raise ConfigError(
                "hold='open' needs output=: the rows not held in memory must go somewhere",
                hint="pass output='data/scans' (-o DIR), or keep='open' to drop them",
            )
        vi = self.version_intensity
        if isinstance(vi, bool) or not isinstance(vi, int) or not 0 <= vi <= 9:
            raise ConfigError(
                f"version_intensity must be an integer 0..9, not {vi!r}",
                hint="0 sends only the probes hinted for each port; 9 sends every probe",
            )
        if self.verify is not None and not isinstance(self.verify, bool):
            raise ConfigError(
                f"verify must be True, False or None, not {self.verify!r}",
                hint="None (the default) checks the open TCP ports when service=True",
            )
        self._check_resolve()
        self._check_side_options()
        k, n = self.shard
        if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n):
            raise ConfigError(f"shard must be k/n with 1 <= k <= n, not {k}/{n}")

    def _check_resolve(self) -> None:
        value = self.resolve
        if isinstance(value, bool):
            value = "up" if value else "never"
        if not isinstance(value, str) or value not in RESOLVE:
            raise ConfigError(
                f"resolve must be one of {', '.join(RESOLVE)} (or True/False), "
                f"not {self.resolve!r}",
                hint="'up': names of the hosts that are up (nmap's default); 'all': of every "
                "target (-R); 'never': no reverse DNS (-n)",
            )
        object.__setattr__(self, "resolve", value)
        if self.dns_servers:
            servers: Any = self.dns_servers
            servers = [servers] if isinstance(servers, str) else servers
            if not isinstance(servers, list | tuple):
                raise ConfigError(f"dns_servers must be a list of addresses, not {servers!r}")
            object.__setattr__(self, "dns_servers", check_dns_servers(servers))
        else:  # [] from a stored config's JSON: a tuple, as the field says (and hashable)
            object.__setattr__(self, "dns_servers", ())

    def _check_side_options(self) -> None:
        """service_probes, the source ports and the -sn / -sL flags (once ``extra``)."""
        probes = self.service_probes
        if isinstance(probes, os.PathLike):
            probes = os.fspath(probes)
            object.__setattr__(self, "service_probes", probes)
        if probes is not None and (not isinstance(probes, str) or not probes.strip()):
            raise ConfigError(
                f"service_probes must be 'nmap' or the path of an nmap-service-probes file, "
                f"not {probes!r}",
                hint="'nmap' reads the installed nmap's file; None uses prtip_nb's own probes",
            )
        if probes not in (None, "nmap") and not os.path.isfile(probes):
            raise ConfigError(
                f"service_probes file {probes!r} does not exist",
                token=probes,
                hint="give the path of an nmap-service-probes file (nmap's --versiondb), or "
                "'nmap' for the installed nmap's",
            )
        for name in ("source_port", "udp_source_port"):
            port = getattr(self, name)
            if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                                     or not 1 <= port <= 65535):
                raise ConfigError(
                    f"{name} must be a port number 1-65535, not {port!r}",
                    token=str(port),
                    hint="e.g. 53 (-g 53); None lets the scan pick a free port",
                )
        if (self.source_port is not None or self.udp_source_port is not None) \
                and self.method == "connect":
            raise ConfigError(
                "a source port (-g) needs a SYN (-sS) or UDP (-sU) scan: a connect scan "
                "(-sT) sends from ports the kernel picks",
                hint="use method='syn' or 'udp' (needs root or CAP_NET_RAW), or drop the "
                "source port",
            )
        for name in ("ping_only", "list_only"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if self.ping_only and self.list_only:
            raise ConfigError(
                "ping_only (-sn) and list_only (-sL) exclude each other",
                hint="-sn pings the targets; -sL only lists them and sends nothing",
            )

    @property
    def template(self) -> Timing:
        return timing(self.timing)

    @property
    def retries(self) -> int:
        return self.template.max_retries if self.max_retries is None else self.max_retries

    @property
    def probe_timeout(self) -> float:
        """Seconds to wait for an answer to one probe, counted from when it was sent."""
        return self.template.initial_rtt_timeout if self.timeout is None else self.timeout

    def held_rows(self, probes: int) -> str:
        """What the in-memory result holds of a scan of ``probes`` probes: "all" rows, or
        "open" only (the dataset under ``output`` then holds every row)."""
        if self.output is None or self.hold == "all":
            return "all"
        if self.hold == "open" or probes > HOLD_AUTO_PROBES:
            return "open"
        return "all"

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict; the scan's Parquet metadata records it."""
        # A Script object is recorded by its id (the metadata is JSON).
        names = tuple(x if isinstance(x, str) else str(getattr(x, "id", x)) for x in self.scripts)
        out = dataclasses.asdict(dataclasses.replace(self, scripts=names))
        out["scripts"] = list(names)
        out["targets"] = list(self.targets)
        out["exclude"] = list(self.exclude)
        out["dns_servers"] = list(self.dns_servers)
        out["shard"] = f"{self.shard[0]}/{self.shard[1]}"
        return out

    def replace(self, **changes: Any) -> ScanConfig:
        return dataclasses.replace(self, **changes)


#: What the ``extra`` dict of configs stored before its fields existed (Parquet footers,
#: checkpoints, Dask jobs) held, as (key, value written, field, value now). A value of None
#: is copied as it is.
_EXTRA_FIELDS: tuple[tuple[str, Any, str, Any], ...] = (
    ("discovery", "-sn", "ping_only", True),
    ("list", "-sL", "list_only", True),
    ("service_probes", None, "service_probes", None),
    ("source_port", None, "source_port", None),
    ("udp_source_port", None, "udp_source_port", None),
)

_FIELDS_OF_EXTRA = frozenset(name for _, _, name, _ in _EXTRA_FIELDS)


def upgrade_json(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored ``ScanConfig.to_json()`` dict in today's shape: the ``extra`` dict that
    configs written before issue 14 (2026-12) carried becomes its fields (``{"discovery":
    "-sn"}`` -> ``ping_only=True``, ``{"list": "-sL"}`` -> ``list_only=True``, the
    source ports and service_probes as they were) and the fields it lacks take their
    defaults, so an old config has today's keys. A field already present wins. Keys of
    ``extra`` it does not know stay under ``extra`` (``resume.config_from_json`` names them
    and refuses the config; a reader of metadata ignores them). A dict without ``extra``
    (today's shape, or an import's) is returned as it is."""
    out = dict(doc)
    if "extra" not in out:
        return out
    extra = out.pop("extra")
    rest = dict(extra) if isinstance(extra, Mapping) else {}
    for key, written, name, value in _EXTRA_FIELDS:
        if key in rest and (written is None or rest[key] == written):
            got = rest.pop(key)
            if got is not None:
                out.setdefault(name, got if value is None else value)
    for f in dataclasses.fields(ScanConfig):
        if f.name in _FIELDS_OF_EXTRA:
            out.setdefault(f.name, f.default)
    if rest:
        out["extra"] = rest
    return out


# net.privileges installs its check here when it opens raw sockets before dropping root:
# config sits below net in the layers, so net tells config rather than config asking net.
def _no_raw_sockets_held() -> bool:
    return False


_raw_sockets_held: Callable[[], bool] = _no_raw_sockets_held


def set_raw_sockets_check(check: Callable[[], bool]) -> None:
    global _raw_sockets_held
    _raw_sockets_held = check


def is_privileged() -> bool:
    """True when raw sockets can be opened (root, or CAP_NET_RAW in the effective set), or
    were opened before root was dropped (net.privileges' pool)."""
    if os.geteuid() == 0 or _raw_sockets_held():
        return True
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 13))  # CAP_NET_RAW
    except OSError:
        pass
    return False


def as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def check_dns_servers(servers: Iterable[str]) -> tuple[str, ...]:
    """``--dns-servers`` checked (also by ``net.rdns``): addresses; comma or space separated
    text is split."""
    out: list[str] = []
    for item in servers:
        if not isinstance(item, str):
            raise ConfigError(f"a DNS server must be an address as text, not {item!r}",
                              hint="e.g. dns_servers=['198.51.100.53']")
        for word in item.replace(",", " ").split():
            try:
                out.append(str(ipaddress.ip_address(word)))
            except ValueError:
                raise ConfigError(
                    f"DNS server {word!r} is not an IP address",
                    token=word,
                    hint="give addresses, e.g. --dns-servers 198.51.100.53,2001:db8::53",
                ) from None
    return tuple(dict.fromkeys(out))
