"""OpenSTA on a mapped sky130 netlist: minimum period, critical path, FO4 delay, power.

Why these constraints: every input arrives at the clock edge (``set_input_delay 0``) with a
realistic slew and every output drives a fan-out of four (:data:`INPUT_SLEW_NS`,
:data:`OUTPUT_LOAD_PF`); a design with a ``clk`` port is timed against that clock, a
combinational one against a virtual clock, so its minimum period is its longest input → output
path.  The minimum period is ``period - worst slack`` at a relaxed period (OpenSTA's slack is
linear in the period when every path starts and ends at the clock's edges, so no bisection is
needed).  The constant record ``k`` of a configurable engine comes from the calculator's output
register and only changes at a drained format boundary, so its paths are false paths
(``set_false_path -from k``); they are reported separately.  Nets are costed with the Liberty's
default wire-load model (``Small``): a pre-layout estimate.

Debian's OpenSTA (2.0.17, 2019) has no JSON report, no VCD/SAIF reader, and its propagation of
switching activity overwrites activities set on internal pins; so the critical path is parsed
from the ``report_checks`` text and the power of :func:`power` comes from activities (toggles
per cycle and duty) set on the input ports from simulated real data, propagated through the
cells' functions by OpenSTA (a vectorless estimate seeded with measured port activity).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sieve.errors import SieveError

from .asic_map import LIBERTY, OUTPUT_LOAD_PF, liberty

#: Environment variable naming the OpenSTA binary (default: ``sta`` on PATH; Debian ``opensta``).
ENV_STA = "SIEVE_STA"
#: Slew of every input (ns): about what a sky130 inverter driving a fan-out of four gives.
INPUT_SLEW_NS = 0.1
#: The period used to measure slack (ns): long enough that every path meets it.
RELAXED_PERIOD_NS = 100.0
#: The cell that the FO4 measurement chains.
FO4_CELL = "sky130_fd_sc_hd__inv_1"
#: Ports that are the constant record (false paths) and the clock / reset ports.
CONSTANT_PORTS = ("k",)
CLOCK_PORT = "clk"


@dataclass(frozen=True)
class Sta:
    path: str
    version: str


@lru_cache(maxsize=None)
def sta_tool() -> Sta:
    """The OpenSTA binary, or a SieveError saying how to install it."""
    path = os.environ.get(ENV_STA) or shutil.which("sta")
    if not path:
        raise SieveError("no OpenSTA found: `apt-get install opensta` (binary `sta`, see scripts/setup-system.sh)"
                         f" or set {ENV_STA}")
    try:
        proc = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SieveError(f"cannot run OpenSTA at {path}: {exc}") from exc
    return Sta(path, (proc.stdout + proc.stderr).strip().splitlines()[0] if proc.returncode == 0 else "unknown")


def run_sta(tcl: str, cwd: Path, name: str, timeout: float | None = 600.0) -> str:
    """Write ``cwd/name.tcl``, run OpenSTA on it, return its output (also ``cwd/name.log``).

    OpenSTA exits 0 after a failing command; any ``Error:`` line is raised here instead."""
    cwd = Path(cwd)
    (cwd / f"{name}.tcl").write_text(tcl + "\nexit\n")
    try:
        proc = subprocess.run([sta_tool().path, "-no_splash", "-exit", f"{name}.tcl"], cwd=cwd,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise SieveError(f"OpenSTA passed its {timeout:.0f} s limit in {cwd}") from exc
    out = proc.stdout + proc.stderr
    (cwd / f"{name}.log").write_text(out)
    errors = [ln for ln in out.splitlines() if ln.startswith("Error")]
    if proc.returncode != 0 or errors:
        raise SieveError(f"OpenSTA failed in {cwd}: {(errors or [out.strip()[-300:]])[0]}; see {name}.log")
    return out


def _setup(lib: str, netlist: str, top: str, period_ns: float, clocked: bool, constants: bool) -> str:
    clock = (f"create_clock -name clk -period {period_ns} [get_ports {CLOCK_PORT}]" if clocked
             else f"create_clock -name vclk -period {period_ns}")
    name = "clk" if clocked else "vclk"
    data_inputs = f"[all_inputs]" if not clocked else f"[delete_from_list [all_inputs] [get_ports {CLOCK_PORT}]]"
    lines = [
        f"read_liberty {lib}", f"read_verilog {netlist}", f"link_design {top}", clock,
        f"set_input_delay 0 -clock {name} {data_inputs}",
        f"set_output_delay 0 -clock {name} [all_outputs]",
        f"set_input_transition {INPUT_SLEW_NS} {data_inputs}",
        f"set_load {OUTPUT_LOAD_PF} [all_outputs]",
    ]
    if constants:
        lines.append("set_false_path -from [get_ports {k[*]}]")
    return "\n".join(lines) + "\n"


_PATH_LINE = re.compile(r"^\s*(-?[\d.]+)\s+(-?[\d.]+)\s+([\^v])\s+(\S+)\s+\((\S+)\)\s*$")
_SLACK = re.compile(r"^\s*(-?[\d.]+)\s+slack\s+\((MET|VIOLATED)\)")
_ARRIVAL = re.compile(r"^\s*(-?[\d.]+)\s+data arrival time")


def parse_path(text: str) -> dict:
    """The first path of a ``report_checks -format full`` text: end points, stages, arrival, slack."""
    start = re.search(r"^Startpoint: (\S+)", text, re.M)
    end = re.search(r"^Endpoint: (\S+)", text, re.M)
    if not (start and end):
        raise SieveError("OpenSTA reported no path (is the design empty or every path false?)")
    body = text[start.start():]
    stages, arrival, slack = [], None, None
    for line in body.splitlines():
        if m := _PATH_LINE.match(line):
            stages.append({"delay_ns": float(m.group(1)), "time_ns": float(m.group(2)), "edge": m.group(3),
                           "pin": m.group(4), "cell": m.group(5)})
        elif arrival is None and (m := _ARRIVAL.match(line)):
            arrival = float(m.group(1))
        elif m := _SLACK.match(line):
            slack = float(m.group(1))
            break
    if arrival is None or slack is None:
        raise SieveError("cannot parse OpenSTA's path report (no arrival or slack line)")
    cells = [s for s in stages if s["cell"] not in ("in", "out")]
    return {"startpoint": start.group(1), "endpoint": end.group(1), "arrival_ns": arrival, "slack_ns": slack,
            "logic_levels": len(cells), "stages": stages}


MARK = "@@sieve-sta-section@@"


def timing(netlist: Path, top: str, work_root: Path, ports: set[str]) -> dict:
    """Minimum period and critical path of the mapped ``netlist`` (inside ``work_root``).

    One OpenSTA session: the path with the record ``k`` timed too (``with_constants_min_period_ns``),
    then ``k`` declared false and the data path reported (the figure that counts)."""
    work_root = Path(work_root).resolve()
    liberty(work_root)
    netlist = Path(netlist).resolve()
    rel = netlist.relative_to(work_root).as_posix()
    clocked = CLOCK_PORT in ports
    constants = "k" in ports
    tcl = _setup(LIBERTY, rel, top, RELAXED_PERIOD_NS, clocked, False)
    report = "report_checks -path_delay max -format full -digits 4\n"
    tcl += report
    if constants:
        tcl += f"puts {MARK}\nset_false_path -from [get_ports {{k[*]}}]\n" + report
    text = run_sta(tcl, work_root, f"{netlist.parent.name}_sta")
    sections = text.split(MARK)
    paths = [parse_path(sec) for sec in sections]
    for path in paths:
        path["min_period_ns"] = round(RELAXED_PERIOD_NS - path["slack_ns"], 4)
    res = dict(paths[-1])
    res["clocked"] = clocked
    if constants:
        res["with_constants_min_period_ns"] = paths[0]["min_period_ns"]
    return res


FO4_NETLIST = """module sieve_fo4(input a, output y);
{body}
endmodule
"""


def fo4_netlist(stages: int = 5) -> str:
    """A chain of ``stages`` inverters, each driving the next plus three dummy copies (fan-out 4)."""
    lines = []
    for i in range(1, stages + 1):
        src = "a" if i == 1 else f"n{i - 1}"
        dst = "y" if i == stages else f"n{i}"
        lines.append(f"  wire {dst};" if dst != "y" else "")
        lines.append(f"  {FO4_CELL} x{i}(.A({src}), .Y({dst}));")
        if i < stages:
            lines += [f"  {FO4_CELL} d{i}{c}(.A({dst}), .Y());" for c in "abc"]
    return FO4_NETLIST.format(body="\n".join(ln for ln in lines if ln))


def fo4_ns(work_root: Path) -> dict:
    """The FO4 inverter delay (ns) of the library: the middle stage of a fan-out-4 chain, the mean of
    its rising and falling delays (both read from OpenSTA's path reports)."""
    work_root = Path(work_root).resolve()
    liberty(work_root)
    (work_root / "fo4.v").write_text(fo4_netlist())
    base = _setup(LIBERTY, "fo4.v", "sieve_fo4", RELAXED_PERIOD_NS, False, False)
    delays = {}
    for edge in ("rise", "fall"):
        text = run_sta(base + f"report_checks -{edge}_to [get_ports y] -format full -digits 5\n", work_root,
                       f"fo4_{edge}")
        stage = next(s for s in parse_path(text)["stages"] if s["pin"] == "x3/Y")
        delays[edge] = stage["delay_ns"]
    return {"fo4_ns": round((delays["rise"] + delays["fall"]) / 2, 5), "x3_rise_ns": delays["rise"],
            "x3_fall_ns": delays["fall"], "cell": FO4_CELL}


#: Duty cycles are kept this far from exactly 0 or 1: Debian's OpenSTA (2019) computes NaN for some
#: cells' state-dependent internal power when an input is exactly static (a 0/0 in its duty formula).
STATIC_DUTY_EPS = 1e-6
#: A :func:`power` case in which no net toggles but the clock (a held register file, an idle block).
IDLE: dict = {}


POWER_SUM = """set sieve_corner [sta::cmd_corner]
set sieve_p {{0.0 0.0 0.0}}
set sieve_nan 0
foreach sieve_inst [get_cells *] {{
  lassign [sta::instance_power $sieve_inst $sieve_corner] pi ps pl pt
  if {{[string match -nocase *nan* "$pi $ps $pl"]}} {{ incr sieve_nan; set pi 0.0 }}
  lassign $sieve_p a b c
  set sieve_p [list [expr {{$a + $pi}}] [expr {{$b + $ps}}] [expr {{$c + $pl}}]]
}}
puts "SIEVE_POWER {name} $sieve_p $sieve_nan"
"""
_POWER_LINE = re.compile(r"^SIEVE_POWER (\S+) (\S+) (\S+) (\S+) (\d+)$")


def power(netlist: Path, top: str, work_root: Path, ports: set[str], period_ns: float,
          cases: dict[str, dict[str, tuple[float, float]]]) -> dict[str, dict]:
    """Power at ``period_ns`` for each case of per-input-port-bit (toggles per cycle, duty)
    activities, in one OpenSTA session; ``{case: {internal_w, switching_w, leakage_w, total_w, nan_cells}}``.

    Inputs without an entry keep OpenSTA's default (0.1, 0.5).  Use :func:`at_period` for another
    clock: OpenSTA's dynamic power is energy per transition × transitions per second.  The sum is
    ``report_power``'s, taken per instance: Debian's OpenSTA (2019) returns NaN internal power for
    a cell whose output its propagation finds exactly static (a 0/0 in its duty formula), which
    would make the whole report NaN; such a cell's internal power is counted as 0 and the number of
    such cells is returned (``nan_cells``, a handful at most)."""
    work_root = Path(work_root).resolve()
    netlist = Path(netlist).resolve()
    rel = netlist.relative_to(work_root).as_posix()
    tcl = _setup(LIBERTY, rel, top, period_ns, CLOCK_PORT in ports, False)
    for name in cases:
        if cases[name] is IDLE:  # nothing toggles but the clock
            tcl += "set_power_activity -global -activity 0 -duty 0.5\n"
        for port, (act, duty) in sorted(cases[name].items()):
            duty = min(max(duty, STATIC_DUTY_EPS), 1 - STATIC_DUTY_EPS)
            tcl += f"set_power_activity -input_ports [get_ports {{{port}}}] -activity {act:.6g} -duty {duty:.6g}\n"
        tcl += POWER_SUM.format(name=name)
    text = run_sta(tcl, work_root, f"{netlist.parent.name}_power")
    out = {}
    for line in text.splitlines():
        if m := _POWER_LINE.match(line.strip()):
            internal, switching, leakage = (float(m.group(i)) for i in (2, 3, 4))
            out[m.group(1)] = {"period_ns": period_ns, "internal_w": internal, "switching_w": switching,
                               "leakage_w": leakage, "total_w": internal + switching + leakage,
                               "nan_cells": int(m.group(5))}
    missing = sorted(set(cases) - set(out))
    if missing:
        raise SieveError(f"OpenSTA gave no power for {missing} in {work_root}")
    return out


def at_period(result: dict, period_ns: float) -> dict:
    """A :func:`power` result moved to another clock period: the dynamic parts scale with the clock
    rate (same toggles per cycle), leakage does not."""
    f = result["period_ns"] / period_ns
    internal, switching = result["internal_w"] * f, result["switching_w"] * f
    return {"period_ns": period_ns, "internal_w": internal, "switching_w": switching,
            "leakage_w": result["leakage_w"], "total_w": internal + switching + result["leakage_w"]}
