"""Yosys scripts per target and the parsing of their ``stat -json`` output into figures.

Every figure comes from Yosys's JSON (``tee -q -o file.json stat -json``), never from its
text log.  The CMOS transistor estimate needs ``dffunmap`` first: ``stat -tech cmos`` only
knows the plain ``$_DFF_P_``/``$_DFF_N_`` flip-flops (16 transistors each); the enable and
sync-reset flip-flops that ``synth`` leaves behind have no cost and Yosys would silently
omit them (its figure then ends in ``+``).  ``dffunmap`` rewrites them as a plain flip-flop
plus the multiplexer that implements the enable / reset, so both are counted.

NAND2 equivalents = transistors / 4: a static CMOS two-input NAND gate has 4 transistors
(2 PMOS in parallel, 2 NMOS in series), the usual unit of gate-equivalent area.

A cross-check figure re-maps the same netlist with ``abc -g cmos3`` (NAND, NOR, AOI3, OAI3,
NOT only) before costing it: Yosys's generic ``$_MUX_`` costs 12 transistors, and this shows
how much of a figure is that gate library rather than the design.
"""

from __future__ import annotations

import json
from pathlib import Path

from sieve.errors import SieveError

from .tools import run_yosys

#: Yosys's own ``stat -tech cmos`` transistor table (kernel/cost.h).  Kept here to
#: cross-check Yosys's total and to name any cell type that the estimate would miss.
CMOS_TRANSISTORS: dict[str, int] = {
    "$_BUF_": 1, "$_NOT_": 2, "$_AND_": 6, "$_NAND_": 4, "$_OR_": 6, "$_NOR_": 4,
    "$_ANDNOT_": 6, "$_ORNOT_": 6, "$_XOR_": 12, "$_XNOR_": 12, "$_AOI3_": 6, "$_OAI3_": 6,
    "$_AOI4_": 8, "$_OAI4_": 8, "$_MUX_": 12, "$_NMUX_": 10, "$_DFF_P_": 16, "$_DFF_N_": 16,
}
TRANSISTORS_PER_NAND2 = 4
#: Cells that carry no logic (Amaranth hierarchy scope markers kept after flattening).
IGNORED_CELLS = frozenset({"$scopeinfo"})


def _front(il_name: str, top: str) -> str:
    return f"read_rtlil {il_name}\nhierarchy -check -top {top}\n"


def _strip(cells: dict[str, int]) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(cells.items()) if k not in IGNORED_CELLS}


def load_stat(path: Path) -> dict:
    """The whole-design section of a ``stat -json`` file (counts by cell type, transistors)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SieveError(f"cannot read Yosys statistics {path}: {exc}; rerun the synthesis") from exc
    design = data.get("design")
    if design is None:
        modules = data.get("modules") or {}
        if len(modules) != 1:
            raise SieveError(f"{path} has no 'design' section and {len(modules)} modules; expected a flat design")
        design = next(iter(modules.values()))
    return design


def cells_by_type(stat: dict) -> dict[str, int]:
    """Cell counts by type without the logic-free bookkeeping cells."""
    return _strip(stat.get("num_cells_by_type", {}))


def ff_bits(cells: dict[str, int]) -> int:
    """Flip-flop bits among fine-grained generic cells (``$_DFF*``, ``$_SDFF*``, ``$_DFFE*`` ...)."""
    return sum(n for t, n in cells.items() if t.startswith(("$_DFF", "$_SDFF", "$_ALDFF", "$_DFFSR")))


def transistor_estimate(stat: dict) -> tuple[int, bool]:
    """Yosys's ``estimated_num_transistors`` and whether it is complete (no ``+`` suffix)."""
    raw = stat.get("estimated_num_transistors")
    if raw is None:
        raise SieveError("Yosys statistics lack 'estimated_num_transistors'; was `stat -tech cmos` run?")
    text = str(raw).strip()
    complete = not text.endswith("+")
    return int(text.rstrip("+")), complete


def generic(il_name: str, top: str, cwd: Path, timeout: float | None) -> dict:
    """``synth -flatten``: generic cells, then the CMOS estimate with flip-flops unmapped."""
    script = (
        _front(il_name, top)
        + f"synth -flatten -top {top}\n"
        + "delete t:$scopeinfo\n"
        + "tee -q -o generic_stat.json stat -json\n"
        + "tee -q -o generic_cmos_raw.json stat -json -tech cmos\n"
        + "dffunmap\n"
        + "tee -q -o generic_cmos.json stat -json -tech cmos\n"
        + "abc -g cmos3\n"
        + "opt_clean\n"
        + "tee -q -o generic_cmos_mapped.json stat -json -tech cmos\n"
    )
    seconds = run_yosys(script, cwd, "generic", timeout)
    cells = cells_by_type(load_stat(cwd / "generic_stat.json"))
    cmos_stat = load_stat(cwd / "generic_cmos.json")
    cmos_cells = cells_by_type(cmos_stat)
    transistors, complete = transistor_estimate(cmos_stat)
    raw_transistors, raw_complete = transistor_estimate(load_stat(cwd / "generic_cmos_raw.json"))
    mapped_transistors, mapped_complete = transistor_estimate(load_stat(cwd / "generic_cmos_mapped.json"))
    uncosted = sorted(t for t in cmos_cells if t not in CMOS_TRANSISTORS)
    ours = sum(CMOS_TRANSISTORS.get(t, 0) * n for t, n in cmos_cells.items())
    if complete and ours != transistors:
        raise SieveError(
            f"transistor cross-check failed in {cwd}: Yosys says {transistors}, its cost table gives {ours}; "
            "update synth.yosys.CMOS_TRANSISTORS for this Yosys version"
        )
    ff_count = cmos_cells.get("$_DFF_P_", 0) + cmos_cells.get("$_DFF_N_", 0)
    ff_transistors = ff_count * CMOS_TRANSISTORS["$_DFF_P_"]
    by_type = {t: CMOS_TRANSISTORS.get(t, 0) * n for t, n in cmos_cells.items()}
    return {
        "seconds": round(seconds, 2),
        "cells": sum(cells.values()),
        "cells_by_type": cells,
        "ff_bits": ff_bits(cells),
        "transistors": transistors,
        "transistors_complete": complete,
        "transistors_uncosted_cells": uncosted,
        "transistors_ff": ff_transistors,
        # before dffunmap Yosys costs only the combinational cells: that is the logic; the
        # rest is storage (flip-flops plus the enable / sync-reset gates dffunmap exposes)
        "transistors_logic": raw_transistors if complete else None,
        "transistors_registers": transistors - raw_transistors if complete else None,
        "transistors_without_dffunmap": raw_transistors,
        "transistors_without_dffunmap_complete": raw_complete,
        "nand2_eq": round(transistors / TRANSISTORS_PER_NAND2, 1),
        # cross-check: the same netlist re-mapped by ABC to static CMOS gates (NAND, NOR,
        # AOI3, OAI3, NOT), so that the figure does not hinge on Yosys's 12-transistor MUX
        "transistors_cmos_mapped": mapped_transistors if mapped_complete else None,
        "cmos_cells_by_type": cmos_cells,
        "transistors_by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
    }


def _ice40_summary(cells: dict[str, int]) -> dict:
    return {
        "lut4": cells.get("SB_LUT4", 0),
        "carry": cells.get("SB_CARRY", 0),
        "ff": sum(n for t, n in cells.items() if t.startswith("SB_DFF")),
        "bram": sum(n for t, n in cells.items() if t.startswith("SB_RAM")),
        "dsp": cells.get("SB_MAC16", 0),
    }


def _vendor_cells(il_name: str, top: str, cwd: Path, timeout: float | None, tag: str,
                  synth_command: str) -> tuple[float, dict[str, int]]:
    """Run one vendor ``synth_*`` command on the bare design; (seconds, cell counts by type)."""
    script = (
        _front(il_name, top)
        + f"{synth_command}\n"
        + "delete t:$scopeinfo\n"
        + f"tee -q -o {tag}_stat.json stat -json\n"
    )
    seconds = run_yosys(script, cwd, tag, timeout)
    return seconds, cells_by_type(load_stat(cwd / f"{tag}_stat.json"))


def ice40(il_name: str, top: str, cwd: Path, timeout: float | None) -> dict:
    """``synth_ice40`` of the bare design: LUT4 / carry / FF counts (same for HX8K and UP5K)."""
    seconds, cells = _vendor_cells(il_name, top, cwd, timeout, "ice40", f"synth_ice40 -top {top}")
    return {"seconds": round(seconds, 2), **_ice40_summary(cells), "cells_by_type": cells}


def ice40_harness(il_name: str, harness_v: str, cwd: Path, timeout: float | None) -> tuple[str, dict]:
    """``synth_ice40`` of design + I/O harness -> netlist JSON for nextpnr (and its counts)."""
    script = (
        f"read_rtlil {il_name}\nread_verilog {harness_v}\n"
        "hierarchy -check -top sieve_synth_harness\n"
        "synth_ice40 -top sieve_synth_harness -json harness_ice40.json\n"
        "delete t:$scopeinfo\n"
        "tee -q -o harness_ice40_stat.json stat -json\n"
    )
    run_yosys(script, cwd, "harness_ice40", timeout)
    cells = cells_by_type(load_stat(cwd / "harness_ice40_stat.json"))
    return "harness_ice40.json", _ice40_summary(cells)


def ecp5(il_name: str, top: str, cwd: Path, timeout: float | None) -> dict:
    """``synth_ecp5``: LUT4, CCU2C carry cells (2 LUT4 each) and flip-flops."""
    seconds, cells = _vendor_cells(il_name, top, cwd, timeout, "ecp5", f"synth_ecp5 -top {top}")
    lut4 = cells.get("LUT4", 0)
    ccu2 = cells.get("CCU2C", 0)
    return {
        "seconds": round(seconds, 2),
        "lut4": lut4,
        "ccu2c": ccu2,
        "lut4_total": lut4 + 2 * ccu2,
        "ff": cells.get("TRELLIS_FF", 0),
        "widemux": cells.get("PFUMX", 0) + cells.get("L6MUX21", 0),
        "bram": cells.get("DP16KD", 0),
        "dsp": sum(n for t, n in cells.items() if t.startswith(("MULT18X18", "ALU54"))),
        "cells_by_type": cells,
    }


def xc7(il_name: str, top: str, cwd: Path, timeout: float | None) -> dict:
    """``synth_xilinx -family xc7`` out of context (no I/O buffers): LUT1..6, CARRY4, FFs."""
    seconds, cells = _vendor_cells(il_name, top, cwd, timeout, "xc7",
                                   f"synth_xilinx -family xc7 -flatten -noiopad -noclkbuf -top {top}")
    lut_by_size = {t: n for t, n in cells.items() if t in {f"LUT{k}" for k in range(1, 7)}}
    return {
        "seconds": round(seconds, 2),
        "lut": sum(lut_by_size.values()),
        "lut_by_size": lut_by_size,
        "carry4": cells.get("CARRY4", 0),
        "ff": sum(n for t, n in cells.items() if t in {"FDRE", "FDSE", "FDCE", "FDPE"}),
        "widemux": cells.get("MUXF7", 0) + cells.get("MUXF8", 0),
        "srl": sum(n for t, n in cells.items() if t.startswith("SRL")),
        "bram": sum(n for t, n in cells.items() if t.startswith("RAMB")),
        "dsp": sum(n for t, n in cells.items() if t.startswith("DSP48")),
        "cells_by_type": cells,
    }
