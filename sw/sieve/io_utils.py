"""Writing result files so that a failure never leaves a half-written one behind."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import SieveError


def check_output_file(path: str | os.PathLike) -> Path:
    """Refuse, before any work, a path that cannot become a file (one line: what and why).

    Why up front: a command that computes for minutes and then cannot write its result has
    wasted the minutes; these checks cost a few ``stat`` calls.  Missing parent directories
    are fine (they are created), as long as the nearest existing one is a writable directory.
    """
    target = Path(path)
    if target.is_dir():
        raise SieveError(f"output {target} is an existing directory; give a file path (e.g. {target / 'out'})")
    existing = next(p for p in (target.parent, *target.parent.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise SieveError(f"cannot write {target}: {existing} is a file, not a directory; choose another output path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SieveError(f"cannot write {target}: directory {existing} is not writable; choose another output path")
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only on success.

    A path that cannot take the file (an existing directory, a parent that is a file, no
    permission) is a :class:`~sieve.errors.SieveError`, and nothing is left behind.
    """
    target = check_output_file(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise SieveError(f"cannot write {target}: {exc.strerror or exc}; choose another output path") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file owner-only (0600); a result file gets the mode any new file
        # would get (0666 less the umask), so others can read what SIEVE wrote
        os.chmod(tmp_path, 0o666 & ~_umask())
        try:
            os.replace(tmp_path, target)
        except OSError as exc:
            raise SieveError(f"cannot write {target}: {exc.strerror or exc}; choose another output path") from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    """The process's file-creation mask (reading it means setting it, so set it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write pretty-printed JSON (keys in insertion order)."""
    write_text(path, json.dumps(obj, indent=2) + "\n")
