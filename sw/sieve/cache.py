"""Where SIEVE keeps things it computed once (trained models, decoded images) and where
the project's ``../shared`` data lives.

Everything cached is keyed by what produced it, written atomically and guarded by an
``fcntl`` file lock, so two pytest-xdist workers asking for the same model train it once:
the second waits for the lock and then finds the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]   # the checkout: sw/sieve/cache.py -> repo


def cache_root() -> Path:
    """``$SIEVE_CACHE`` when set, else ``~/.cache/sieve``."""
    env = os.environ.get("SIEVE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sieve"


def cache_dir(kind: str) -> Path:
    """A sub-directory of the cache (``models``, ``data`` ...), created on demand."""
    path = cache_root() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_dir() -> Path:
    """The project's ``../shared`` (``$SIEVE_SHARED`` overrides); may not exist."""
    env = os.environ.get("SIEVE_SHARED")
    if env:
        return Path(env).expanduser()
    candidates = [_PACKAGE_ROOT.parent / "shared", Path.cwd().parent / "shared", Path.cwd() / "shared"]
    for cand in candidates:
        if cand.is_dir():
            return cand
    return candidates[0]


def shared_path(*parts: str) -> Path:
    """A path under :func:`shared_dir` (existence is the caller's business)."""
    return shared_dir().joinpath(*parts)


def recipe_hash(recipe: dict) -> str:
    """A short stable hash of a JSON-able recipe (key order does not matter)."""
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``path + '.lock'`` for the duration of the block."""
    lock_path = Path(str(path) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
