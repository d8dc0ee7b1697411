"""Map a design onto the SkyWater 130 nm high-density cells with Yosys: netlist + area figures.

Why these steps: ``synth -flatten`` with a parallel-prefix adder map (Han-Carlson, Yosys's
``+/choices``) so that the carry chains are logarithmic before ABC sees them; ``dfflibmap``
for the flip-flops; ABC mapped for delay (``-D`` = the delay target, a ``-constr`` file with
a driving cell and an output load, a delay-oriented script: ``&syn2``/``&if -g``/``&synch2``
restructuring, ``&nf`` mapping, then ``buffer``/``upsize``/``dnsize`` to size and buffer the
high-fanout nets); a ``dont_use`` list keeps out the cells a logic flow must not pick (power
gating ``lpflow``, ``probe``, clock buffers/inverters/gates, delay cells, tri-states);
``hilomap`` ties constants to ``conb_1``.  Area comes from ``stat -liberty`` as JSON, never
the text log.  The netlist (``write_verilog -noattr``) is what OpenSTA times and Icarus
simulates with the cells' Verilog models.

The Liberty (``../shared/pdk/sky130/*.lib.gz``) is unpacked once into the work directory: the
YoWASP Yosys sees only the tree it runs in, so every path here is relative to it.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
from pathlib import Path

from sieve.errors import SieveError

from .tools import run_yosys
from .yosys import cells_by_type, load_stat

ROOT = Path(__file__).resolve().parents[1]
#: Environment variable naming the directory of the sky130 files (default ``../shared/pdk/sky130``).
ENV_PDK = "SIEVE_SKY130"
LIBERTY_GZ = "sky130_fd_sc_hd__tt_025C_1v80.lib.gz"
CELLS_V_GZ = "sky130_fd_sc_hd.v.gz"
PRIMITIVES_V_GZ = "sky130_fd_sc_hd_primitives.v.gz"
#: The name the unpacked Liberty gets in a work directory.
LIBERTY = "sky130_fd_sc_hd__tt_025C_1v80.lib"
#: Cells a logic-synthesis flow must not pick (globs for ``abc`` / ``dfflibmap -dont_use``).  The
#: enable flip-flops (``edf*``) are left out too: their enable pins sit outside ABC's view, so the
#: enable net of a whole register rank (the stall enable, the calculator's load) would stay one
#: unbuffered net of hundreds of loads (33 ns measured); as a flip-flop + mux ABC buffers it.
DONT_USE = ("*lpflow*", "*edf*", "*probe*", "*clkbuf*", "*clkinv*", "*clkdlybuf*", "*dlclkp*", "*sdlclkp*",
            "*dlygate*", "*dlymetal*", "*einv*", "*ebuf*", "*conb*", "*sdf*", "*sedf*", "*dlx*", "*dlrt*",
            "*tap*", "*fill*", "*decap*", "*diode*", "*macro_sparecell*")
#: Tie cell for constants (``hilomap``).
TIE_CELL = "sky130_fd_sc_hd__conb_1"
#: ABC: driving cell of every input and the load on every output while it maps and sizes.
DRIVING_CELL = "sky130_fd_sc_hd__inv_2"
#: Four ``inv_1`` input pins (pF): an output drives a fan-out of four.
OUTPUT_LOAD_PF = 4 * 0.0023
#: The delay-oriented ABC script ({D} is the target in ps, filled in by Yosys).
ABC_SCRIPT = ("+strash;&get,-n;&fraig,-x;&put;scorr;dc2;dretime;strash;"
              "&get,-n;&st;&syn2;&if,-g,-K,6;&synch2;&nf,{D};&put;"
              "&get,-n;&st;&syn2;&if,-g,-K,6;&synch2;&nf,{D};&put;"
              "buffer,-p;upsize,{D};dnsize,{D};stime,-p")
#: Default ABC delay target (ps): below what the engines reach, so ABC maps for speed.
DEFAULT_DELAY_PS = 500


def pdk_dir() -> Path:
    """The directory of the sky130 files, or a SieveError saying how to get them."""
    d = Path(os.environ.get(ENV_PDK) or ROOT.parent / "shared" / "pdk" / "sky130")
    if not (d / LIBERTY_GZ).exists():
        raise SieveError(f"no sky130 Liberty at {d / LIBERTY_GZ}; put ../shared beside the repository "
                         f"or set {ENV_PDK} to a directory holding {LIBERTY_GZ}")
    return d


def unpack(name_gz: str, dest_dir: Path, name: str | None = None) -> Path:
    """Gunzip ``pdk_dir()/name_gz`` into ``dest_dir`` (once); return the unpacked path."""
    dest = Path(dest_dir) / (name or name_gz.removesuffix(".gz"))
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(dest.suffix + ".part")
        with gzip.open(pdk_dir() / name_gz, "rb") as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)
        tmp.replace(dest)
    return dest


def liberty(work_root: Path) -> Path:
    """The unpacked Liberty inside ``work_root``."""
    return unpack(LIBERTY_GZ, work_root, LIBERTY)


#: Mapping goals: ``delay`` (the delay-oriented script above, sizing and buffering) or ``area``
#: (Yosys's default ``abc -liberty`` script: area recovery, no delay target, no sizing).
MODES = ("delay", "area")


def script(il: str, top: str, sub: str, delay_ps: int, mode: str = "delay") -> str:
    """The Yosys script: RTLIL ``il`` → ``sub/mapped.v`` and ``sub/asic_stat.json`` (paths relative)."""
    if mode not in MODES:
        raise SieveError(f"unknown mapping mode {mode!r}; known: {', '.join(MODES)}")
    du = " ".join(f"-dont_use {c}" for c in DONT_USE)
    abc = (f"abc -liberty {LIBERTY} -constr {sub}/abc.constr -D {int(delay_ps)} {du} -script {ABC_SCRIPT}"
           if mode == "delay" else f"abc -liberty {LIBERTY} {du}")
    return (
        f"read_rtlil {il}\n"
        f"hierarchy -check -top {top}\n"
        f"synth -flatten -top {top} -extra-map +/choices/han-carlson.v\n"
        "delete t:$scopeinfo\n"
        f"read_liberty -lib {LIBERTY}\n"
        f"dfflibmap -liberty {LIBERTY} {du}\n"
        f"{abc}\n"
        f"hilomap -singleton -hicell {TIE_CELL} HI -locell {TIE_CELL} LO\n"
        "setundef -zero\n"
        "splitnets\n"
        "opt_clean -purge\n"
        f"tee -q -o {sub}/asic_stat.json stat -json -liberty {LIBERTY}\n"
        f"write_verilog -noattr -noexpr {sub}/mapped.v\n"
    )


def map_design(il_path: Path, top: str, work_root: Path, delay_ps: int = DEFAULT_DELAY_PS,
               timeout: float | None = 900.0, mode: str = "delay") -> dict:
    """Map the RTLIL at ``il_path`` (inside ``work_root``) to sky130 cells; return its figures.

    ``netlist`` is the mapped Verilog's path; areas are sky130 µm² from ``stat -liberty``.
    """
    work_root = Path(work_root).resolve()
    il_path = Path(il_path).resolve()
    try:
        sub = il_path.parent.relative_to(work_root).as_posix()
    except ValueError:
        raise SieveError(f"{il_path} must lie inside the ASIC work directory {work_root}") from None
    liberty(work_root)
    (il_path.parent / "abc.constr").write_text(f"set_driving_cell {DRIVING_CELL}\nset_load {OUTPUT_LOAD_PF}\n")
    seconds = run_yosys(script(f"{sub}/{il_path.name}", top, sub, delay_ps, mode), work_root, f"{sub}/asic_map", timeout)
    return parse_stat(il_path.parent / "asic_stat.json", il_path.parent / "mapped.v", seconds)


def parse_stat(stat_json: Path, netlist: Path, seconds: float = 0.0) -> dict:
    """Area and cell figures from a ``stat -json -liberty`` file."""
    stat = load_stat(stat_json)
    if "area" not in stat:
        raise SieveError(f"{stat_json} has no 'area': was `stat -liberty` run?")
    cells = cells_by_type(stat)
    seq = {t: n for t, n in cells.items() if re.search(r"__\w*d[fl]", t)}
    unknown = sorted(t for t in cells if not t.startswith("sky130_fd_sc_hd__"))
    if unknown:
        raise SieveError(f"{netlist} still holds unmapped cells {unknown}; the Liberty mapping is incomplete")
    return {
        "seconds": round(seconds, 2),
        "netlist": str(netlist),
        "area_um2": round(float(stat["area"]), 4),
        "sequential_area_um2": round(float(stat.get("sequential_area", 0.0)), 4),
        "cells": sum(cells.values()),
        "ff": sum(seq.values()),
        "cells_by_type": cells,
    }


def netlist_ports(netlist: Path) -> set[str]:
    """Top-level port names of a mapped netlist (``input [31:0] i_data;`` → ``i_data``)."""
    text = Path(netlist).read_text()
    return set(re.findall(r"^\s*(?:input|output)\s+(?:\[[^\]]*\]\s*)?(\w+)\s*;", text, re.M))
