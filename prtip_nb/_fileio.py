"""Writing files as a careful tool does: whole or not at all, never through a planted link.

Every file prtip_nb writes under its final name (Parquet parts, checkpoints, -oN/-oX/-oG
outputs, HTML reports) goes through ``atomic_file``:

- The temporary file comes from ``tempfile.mkstemp`` in the target's own folder: an
  unpredictable name, created with ``O_CREAT | O_EXCL | O_NOFOLLOW``, so a symlink or file
  planted under a guessable name (the old ``.name.tmp``) is never opened, let alone
  truncated, as root. The same folder keeps the final ``os.replace`` on one filesystem,
  hence atomic; ``rename`` replaces a link at the final name, it does not follow it.
- The writer gets the already-open descriptor (pyarrow accepts a Python file), so nothing
  reopens the temporary file by name.
- ``mkstemp`` creates the file 0600. ``private=True`` keeps that (a checkpoint holds the
  scan's secret); otherwise the file gets the usual ``0666 & ~umask`` before it appears.
- ``durable=True`` fsyncs the file and then the folder, for files whose loss after a power
  cut would lie (a checkpoint that counts parts).
- On any error the temporary file is removed: a full disk leaves no debris behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_file", "check_output_dir", "check_writable", "fsync_dir", "process_umask",
           "unsafe_name"]


def process_umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, for a moment,
    for every thread)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """fsync a folder, so a rename in it survives a power cut (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike[str],
    mode: str = "wb",
    *,
    private: bool = False,
    durable: bool = False,
    **open_kw: Any,
) -> Iterator[Any]:  # TextIO or BinaryIO, by mode
    """``with atomic_file(path, "w", encoding="utf-8") as fh: ...``: ``path`` appears, whole,
    only when the block ends without an exception; otherwise nothing changes at ``path``."""
    if "w" not in mode:
        raise ValueError(f"atomic_file writes a new file: mode must contain 'w', not {mode!r}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kw) as fh:
            yield fh
            fh.flush()
            if not private:
                os.fchmod(fh.fileno(), 0o666 & ~process_umask())
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def check_writable(path: str | os.PathLike[str], *, what: str = "output file") -> str | None:
    """Why ``path`` cannot be written, or None when it can (checked without creating it).

    nmap checks its output files before it scans; so do we: a scan must not run for an
    hour and then fail to save. Creates and removes a temporary file beside ``path``, which
    proves what ``atomic_file`` will need (a writable folder with room for a new name).
    """
    p = Path(path)
    if p.is_dir():
        return f"{what} {p} is a directory; give a file name"
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        return f"cannot write {what} {p}: folder {parent} does not exist; create it first"
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{p.name}.", suffix=".tmp")
    except OSError as exc:
        return f"cannot write {what} {p}: {exc.strerror or exc}"
    os.close(fd)
    os.unlink(tmp)
    return None


def check_output_dir(path: str | os.PathLike[str], *, what: str = "output folder") -> str | None:
    """Why a dataset cannot be written under folder ``path`` (created if missing), or None.

    Tries what the writer will do first: create an entry in the nearest existing folder."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        return f"{what} {p} is a file, not a folder; give a folder for the Parquet dataset"
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"cannot create {what} {p}: {probe} is not a folder"
    try:
        made = tempfile.mkdtemp(dir=probe, prefix=".prtip-check-")
    except OSError as exc:
        return f"cannot write {what} {p}: {exc.strerror or exc} in {probe}"
    os.rmdir(made)
    return None


def unsafe_name(value: object) -> str | None:
    """Why ``value`` may not be one component of a path we write (a scan id, a part tag),
    or None when it may: a non-empty string with no separator, NUL or ``..``.

    WHY: scan ids and tags reach paths from files (checkpoints, imports); one with a
    separator or ``..`` would make a scan write outside its folder."""
    if not isinstance(value, str):
        return f"must be text, not {type(value).__name__}"
    if not value:
        return "is empty"
    for bad, name in (("/", "a '/'"), ("\\", "a '\\'"), ("\0", "a NUL byte"), ("..", "'..'")):
        if bad in value:
            return f"contains {name}"
    if value == ".":
        return "is '.'"
    return None
