"""iCE40 place and route with nextpnr: achieved Fmax and the critical path, from ``--report`` JSON.

The clock is constrained (``--freq``, default 100 MHz, the issue's target) so that placement
and routing are timing driven toward it; ``--timing-allow-fail`` keeps a design that misses
it from being an error, because the achieved figure is what we report.  The seed is fixed
so that a rerun gives the same numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sieve.errors import SieveError

from .tools import nextpnr_ice40, run

#: Device name -> (nextpnr device flag, package, logic cells available).
DEVICES: dict[str, tuple[str, str, int]] = {
    "hx8k": ("--hx8k", "ct256", 7680),
    "up5k": ("--up5k", "sg48", 5280),
}


@dataclass(frozen=True)
class PnrSettings:
    """How to run nextpnr: constraint, seed and a time limit (None = unlimited)."""

    freq_mhz: float = 100.0
    seed: int = 1
    timeout: float | None = 900.0


def place_and_route(netlist: str, device: str, cwd: Path, settings: PnrSettings) -> dict:
    """Place and route ``cwd/netlist`` on ``device``; return Fmax, utilisation, critical path."""
    if device not in DEVICES:
        raise SieveError(f"unknown iCE40 device {device!r}; known: {sorted(DEVICES)}")
    flag, package, _ = DEVICES[device]
    report = f"pnr_{device}.json"
    args = [
        flag, "--package", package, "--json", netlist, "--report", report,
        "--freq", f"{settings.freq_mhz:g}", "--seed", str(settings.seed),
        "--timing-allow-fail", "--pcf-allow-unconstrained", "-q", "-l", f"pnr_{device}.log",
    ]
    seconds = run(nextpnr_ice40(), args, cwd, f"pnr_{device}.log", settings.timeout)
    return {"pnr_seconds": round(seconds, 2), **parse_report(cwd / report)}


def parse_report(path: Path) -> dict:
    """Fmax (worst clock), its constraint, utilisation and a critical-path summary."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SieveError(f"cannot read nextpnr report {path}: {exc}") from exc
    fmax = data.get("fmax") or {}
    if not fmax:
        raise SieveError(f"{path} has no clock in 'fmax'; the design has no clocked logic to time")
    clock, worst = min(fmax.items(), key=lambda kv: kv[1]["achieved"])
    util = {k: v for k, v in (data.get("utilization") or {}).items() if v.get("used")}
    return {
        "fmax_mhz": round(float(worst["achieved"]), 2),
        "fmax_constraint_mhz": float(worst["constraint"]),
        "fmax_clock": clock,
        "utilization": util,
        "critical_path": critical_path(data, clock),
    }


def critical_path(data: dict, clock: str) -> dict | None:
    """The clock-to-clock critical path: start/end cells, logic vs routing delay, LUT levels."""
    for path in data.get("critical_paths", []):
        if path.get("from", "").endswith(clock) and path.get("to", "").endswith(clock):
            steps = path.get("path", [])
            if not steps:
                return None
            logic = sum(s["delay"] for s in steps if s.get("type") in {"logic", "clk-to-q", "setup"})
            routing = sum(s["delay"] for s in steps if s.get("type") == "routing")
            levels = sum(1 for s in steps if s.get("type") == "logic")
            return {
                "from_cell": steps[0]["from"]["cell"],
                "to_cell": steps[-1]["to"]["cell"],
                "delay_ns": round(logic + routing, 3),
                "logic_ns": round(logic, 3),
                "routing_ns": round(routing, 3),
                "logic_steps": levels,
            }
    return None
