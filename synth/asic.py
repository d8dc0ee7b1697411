"""``python -m synth.asic --out build/synth/asic``: the engines in silicon units (sky130 + OpenSTA).

Why: transistor estimates and iCE40 Fmax are proxies; the dissertation's figures are silicon
(0.06 mm², 0.23 W, less than one clock cycle at 45 nm).  Here every engine is mapped onto real
standard cells (:mod:`synth.asic_map`), timed and powered by OpenSTA (:mod:`synth.sta`), and
converted to technology-neutral and 45 nm-equivalent units (:mod:`synth.asic_units`):

* the combinational engines (depth 0, no register, as the dissertation's) for every contract
  and for the fixed formats, the constant calculator per contract, and the default pipelined
  engines beside them;
* the SIEVE unit per contract, as the dissertation built it: 32 compressors + 32 decompressors
  + one calculator.  Its area is one engine's mapped area × 32 per side plus the calculator (not
  64 engines synthesised: the engines share nothing but the constant record); its path is the
  longer engine's; its power is 32 × each engine's plus the calculator's, with switching
  activity from a real resnet20 layer (:mod:`synth.asic_data`).

``synth.run`` calls :func:`run` (``make synth``; ``--no-asic`` skips it) and the report leads
with :func:`markdown`'s silicon table.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from sieve.errors import SieveError
from sieve.io_utils import write_json, write_text

from . import asic_units as U
from .asic_map import DEFAULT_DELAY_PS, map_design, netlist_ports
from .sta import IDLE, at_period, fo4_ns, power, sta_tool, timing

ENGINES = ("compressor", "decompressor")
#: The fixed formats of the silicon table (those of ``synth.run``'s fixed-format comparison).
FIXED = ("se4m3b7", "ue3m4b5")
#: The constant calculators: the registered one (741 flip-flops for ``full``) and the multicycle one
#: (record register only, ``k`` valid LATENCY cycles after a load), which the unit uses.
CALCULATORS = ("constcalc", "constcalc_mc")
UNIT_CALCULATOR = "constcalc_mc"
#: The contract the issue's area goal is judged on (``sieve search``'s formats, RNE).
HEADLINE_CONTRACT = "search"


@dataclass(frozen=True)
class Job:
    """One design to map: ``design`` (e.g. ``compressor_s0``), a contract or a fixed format."""

    design: str
    contract: str = "full"
    fixed: str | None = None
    #: mapping goal (:data:`synth.asic_map.MODES`)
    mode: str = "delay"

    @property
    def slug(self) -> str:
        return f"{self.design}__{self.fixed or self.contract}" + ("" if self.mode == "delay" else f"__{self.mode}")

    @property
    def engine(self) -> str:
        from sieve_hw.generate import split_design

        return split_design(self.design)[0]


def plan(contracts: tuple[str, ...] | None = None, fixed: tuple[str, ...] = FIXED, pipelined: bool = True) -> list[Job]:
    """The combinational engines per contract and fixed format, the calculator per contract, and
    (``pipelined``) the default-depth engines of the ``full`` and headline contracts."""
    from sieve_hw.contracts import CONTRACTS

    names = tuple(CONTRACTS) if contracts is None else contracts
    unknown = sorted(set(names) - set(CONTRACTS))
    if unknown:
        raise SieveError(f"unknown contract(s) {unknown}; known: {', '.join(CONTRACTS)}")
    jobs = [Job(f"{e}_s0", c) for c in names for e in ENGINES]
    jobs += [Job(calc, c) for c in names for calc in CALCULATORS]
    jobs += [Job(f"{e}_s0", fixed=f) for f in fixed for e in ENGINES]
    if pipelined:
        jobs += [Job(e, c) for c in names if c in ("full", HEADLINE_CONTRACT) for e in ENGINES]
    if HEADLINE_CONTRACT in names:  # the other end of the trade-off: the headline unit mapped for area
        jobs += [Job(d, HEADLINE_CONTRACT, mode="area") for d in (*(f"{e}_s0" for e in ENGINES), UNIT_CALCULATOR)]
    return jobs


def run_job(job: Job, work_root: Path, streams: dict | None, fo4: float, delay_ps: int = DEFAULT_DELAY_PS,
            gate_level: bool = True) -> dict:
    """Map, time, check (gate-level simulation against the emulator) and power one design; one
    record (``status`` ok or failed with ``error``)."""
    from sieve_hw import generate

    from . import asic_data

    rec = {"design": job.design, "engine": job.engine, "contract": job.contract, "fixed": job.fixed,
           "mode": job.mode, "slug": job.slug}
    try:
        d = Path(work_root) / job.slug
        d.mkdir(parents=True, exist_ok=True)
        try:
            il = generate.write_rtlil(job.design, d, fixed_format=job.fixed, contract=job.contract)
            top = generate.top_name(job.design, job.fixed, job.contract)
            rec["latency"] = generate.latency(job.design)
        except generate.DesignError as exc:
            raise SieveError(str(exc)) from exc
        rec["top"] = top
        mapped = map_design(il, top, work_root, delay_ps, mode=job.mode)
        rec.update(mapped)
        ports = netlist_ports(Path(mapped["netlist"]))
        t = timing(Path(mapped["netlist"]), top, work_root, ports)
        rec["timing"] = {k: v for k, v in t.items() if k != "stages"}
        rec["critical_path"] = t["stages"]
        rec.update(_units(rec["area_um2"], t["min_period_ns"], fo4))
        if gate_level and job.engine in ENGINES:
            from .asic_gatelevel import check, family_formats

            rec["gate_level"] = check(Path(mapped["netlist"]), top, job.engine, family_formats(job.contract, job.fixed),
                                      d / "gatelevel", rec["latency"], configurable="k" in ports)
        if streams is not None and job.engine in ENGINES:
            rec["power"] = _engine_power(job, Path(mapped["netlist"]), top, work_root, ports, streams,
                                         t["min_period_ns"], asic_data)
        elif streams is not None:  # the calculator between format changes: only its clock toggles
            rec["power"] = power(Path(mapped["netlist"]), top, work_root, ports, _k1_period(), {"k852": IDLE})
        rec["status"] = "ok"
    except SieveError as exc:
        rec.update(status="failed", error=str(exc))
    return rec


def _k1_period() -> float:
    return round(1000.0 / U.TEGRA_K1_MHZ, 5)


def _units(area_um2: float, period_ns: float, fo4: float) -> dict:
    f = U.fo4(period_ns, fo4)
    return {"nand2_eq": round(U.nand2_eq(area_um2), 1), "area_45nm_um2": round(U.area_45nm_um2(area_um2), 1),
            "delay_ns": period_ns, "delay_fo4": round(f, 2), "delay_45nm_ns": round(U.delay_45nm_ns(f), 4)}


def _engine_power(job: Job, netlist: Path, top: str, work_root: Path, ports: set[str], streams: dict,
                  period_ns: float, asic_data) -> dict:
    """Power per data stream at the engine's own minimum period and at the Tegra K1 clock."""
    import sieve

    fmt = sieve.Format.parse(job.fixed or asic_data.POWER_FORMAT)
    k_word = asic_data.constants_word(fmt) if "k" in ports else None
    from sieve_hw.constants import CONST_LAYOUT

    out: dict = {"format": str(fmt)}
    cases, toggles = {}, {}
    for name, values in streams.items():
        words = asic_data.fp32_words(values) if job.engine == "compressor" else asic_data.codes(values, fmt)
        acts = asic_data.port_activities(words, k_word, CONST_LAYOUT.size)
        cases[name] = {p: a for p, a in acts.items() if p.split("[")[0] in ports}
        toggles[name] = round(sum(a for a, _ in asic_data.bit_activity(words)) / 32, 4)
    for name, own in power(netlist, top, work_root, ports, period_ns, cases).items():
        out[name] = {"own": own, "k852": at_period(own, _k1_period()), "mean_input_toggles": toggles[name]}
    return out


def units(records: list[dict]) -> list[dict]:
    """The SIEVE unit per contract: 32 × each combinational engine + the calculator."""
    by = {(r["design"], r["contract"], r["fixed"], r.get("mode", "delay")): r for r in records if r.get("status") == "ok"}
    out = []
    for contract, mode in dict.fromkeys((r["contract"], r.get("mode", "delay")) for r in records if r["fixed"] is None):
        c, d = by.get(("compressor_s0", contract, None, mode)), by.get(("decompressor_s0", contract, None, mode))
        calc = by.get((UNIT_CALCULATOR, contract, None, mode))
        if not (c and d and calc):
            continue
        row = _unit(contract if mode == "delay" else f"{contract}, mapped for {mode}", c, d, calc)
        before = by.get(("constcalc", contract, None, mode))
        if before:  # the registered calculator it replaces
            row["registered_calculator_area_um2"] = before["area_um2"]
            row["area_45nm_mm2_with_registered_calculator"] = round(
                U.area_45nm_um2(row["area_um2"] - calc["area_um2"] + before["area_um2"]) / 1e6, 4)
        out.append(row)
    for fmt in dict.fromkeys(r["fixed"] for r in records if r["fixed"]):
        c, d = by.get(("compressor_s0", "full", fmt, "delay")), by.get(("decompressor_s0", "full", fmt, "delay"))
        if c and d:
            out.append(_unit(f"fixed {fmt}", c, d, None))
    return out


def _unit(name: str, c: dict, d: dict, calc: dict | None) -> dict:
    n = U.UNIT_LANES
    area = n * (c["area_um2"] + d["area_um2"]) + (calc["area_um2"] if calc else 0.0)
    area45 = U.area_45nm_um2(area) / 1e6  # mm²
    path = max(c["delay_ns"], d["delay_ns"])
    path_fo4 = max(c["delay_fo4"], d["delay_fo4"])
    row = {"unit": name, "lanes": n, "area_um2": round(area, 1), "nand2_eq": round(U.nand2_eq(area)),
           "area_45nm_mm2": round(area45, 4), "calculator_area_um2": calc["area_um2"] if calc else 0.0,
           "calculator": calc["design"] if calc else None,
           "calculator_path_ns": calc["delay_ns"] if calc else None,
           # the multicycle calculator's record -> constants path must settle in LATENCY - 1 cycles
           # of the unit's clock (its engines' longest path)
           "calculator_cycles": (math.ceil(calc["delay_ns"] / max(c["delay_ns"], d["delay_ns"]))
                                 if calc else None),
           "longest_path_ns": path, "longest_path_fo4": path_fo4,
           "longest_path_45nm_ns": round(U.delay_45nm_ns(path_fo4), 4),
           "cycle_fo4": round(U.cycle_fo4(), 1), "fits_one_cycle": path_fo4 <= U.cycle_fo4(),
           "cycle_margin_fo4": round(U.cycle_fo4() - path_fo4, 1),
           "meets_dissertation_area": area45 <= U.DISSERTATION_AREA_MM2, "meets_goal_area": area45 <= U.GOAL_AREA_MM2}
    if "power" in c and "power" in d:
        streams = [s for s in c["power"] if isinstance(c["power"][s], dict) and s in d["power"]]
        p = {}
        for s in streams:
            p[s] = n * (c["power"][s]["k852"]["total_w"] + d["power"][s]["k852"]["total_w"])
        calc_w = calc["power"]["k852"]["total_w"] if calc and "power" in calc else 0.0
        w130 = sum(p.values()) / len(p) + calc_w
        row.update(power_130nm_w_852mhz=round(w130, 5), power_streams_w={s: round(v, 5) for s, v in p.items()},
                   calculator_power_w=round(calc_w, 6),
                   power_45nm_est_w=round(w130 * U.power_scale_to_45nm(), 5))
    return row


def run(out_dir: Path, contracts: tuple[str, ...] | None = None, fixed: tuple[str, ...] = FIXED,
        pipelined: bool = True, with_power: bool = True, delay_ps: int = DEFAULT_DELAY_PS,
        gate_level: bool = True) -> dict:
    """Map, time and power every job; write ``asic.json`` / ``asic.md`` in ``out_dir``; return the section."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sta = sta_tool()
    from .tools import yosys

    ys = yosys()
    fo4 = fo4_ns(out_dir)
    streams, power_note = None, None
    if with_power:
        from .asic_data import resnet20_streams

        try:
            streams = resnet20_streams()
        except SieveError as exc:
            power_note = str(exc)
    records = []
    jobs = plan(contracts, fixed, pipelined)
    for job in tqdm(jobs, desc="asic", unit="design", file=sys.stderr):
        records.append(run_job(job, out_dir, streams, fo4["fo4_ns"], delay_ps, gate_level))
    section = {"meta": {"yosys": ys.version, "opensta": sta.version, "abc_delay_target_ps": delay_ps,
                        "seconds": round(time.perf_counter() - start, 1), "power_note": power_note,
                        "sources": U.sources()},
               "fo4": fo4, "records": records, "units": units(records)}
    write_json(out_dir / "asic.json", section)
    write_text(out_dir / "asic.md", "\n".join(markdown(section)) + "\n")
    return section


def verdict(units_: list[dict]) -> list[str]:
    """Which unit configurations meet the dissertation's figures (area, one cycle, power) and the goal."""
    def meets(u):
        power_ok = u.get("power_45nm_est_w") is not None and u["power_45nm_est_w"] <= U.DISSERTATION_POWER_W
        return {"≤ 0.06 mm²": u["meets_dissertation_area"], "≤ 0.04 mm²": u["meets_goal_area"],
                "one 852 MHz cycle": u["fits_one_cycle"], "≤ 0.23 W (45 nm est.)": power_ok}
    out = ["", f"Against the dissertation ({U.DISSERTATION_AREA_MM2} mm², less than one {U.TEGRA_K1_MHZ:g} MHz cycle,"
           f" {U.DISSERTATION_POWER_W} W) and the goal ({U.GOAL_AREA_MM2} mm²):", ""]
    for u in units_:
        m = meets(u)
        met = [k for k, v in m.items() if v]
        missed = [k for k, v in m.items() if not v]
        all_three = m["≤ 0.06 mm²"] and m["one 852 MHz cycle"] and m["≤ 0.23 W (45 nm est.)"]
        out.append(f"- `{u['unit']}`: {'**meets all three dissertation figures**' if all_three else 'does not meet all three'}"
                   f" — meets {', '.join(met) or 'none'}; misses {', '.join(missed) or 'none'}.")
    return out


def _calculator_lines(section: dict) -> list[str]:
    """The constant calculator before (registered ranks and output register) and after (multicycle)."""
    by = {(r["design"], r["contract"]): r for r in section["records"]
          if r.get("status") == "ok" and not r["fixed"] and r.get("mode", "delay") == "delay"}
    units_by = {u["unit"]: u for u in section["units"]}
    rows = []
    for contract in dict.fromkeys(c for _, c in by):
        a, b = by.get(("constcalc", contract)), by.get(("constcalc_mc", contract))
        if not (a and b):
            continue
        u = units_by.get(contract, {})
        rows.append(f"| {contract} | {a['ff']} · {a['area_um2']:,.0f} · {a['area_45nm_um2']:,.0f} "
                    f"| {b['ff']} · {b['area_um2']:,.0f} · {b['area_45nm_um2']:,.0f} | {a['area_um2'] / b['area_um2']:.2f}× "
                    f"| {b['delay_ns']:.2f} ({_f(u.get('calculator_cycles'), 'd')} unit cycles; ≤ 5 allowed) "
                    f"| {_f(u.get('area_45nm_mm2_with_registered_calculator'), '.4f')} → {_f(u.get('area_45nm_mm2'), '.4f')} |")
    if not rows:
        return []
    return ["", "### The constant calculator: registered (before) → multicycle (after)", "",
            "It runs once per format change. Before: record register, 4 register ranks and a registered constant"
            " record (`constcalc`). After: the record register only; the constants are computed combinationally"
            " from it and read when `busy` falls, LATENCY = 6 cycles after the load (`constcalc_mc`, a multicycle"
            " path; equal to the registered one bit for bit, `sim/test_constcalc.py`). 'path' is its record → constants"
            " delay; it must settle within LATENCY − 1 = 5 cycles of the unit's clock.", "",
            "| contract | registered: FF · µm² · 45 nm-eq µm² | multicycle: FF · µm² · 45 nm-eq µm² | shrink "
            "| multicycle path ns | unit 45 nm-eq mm² before → after |",
            "|---|---:|---:|---:|---|---|"] + rows


def _nan_cells(section: dict) -> int:
    """Cells whose internal power OpenSTA returned as NaN, over every power run (counted as 0 W)."""
    n = 0
    for r in section["records"]:
        for v in (r.get("power") or {}).values():
            if isinstance(v, dict):
                n += (v.get("own") or v).get("nan_cells", 0)
    return n


def _gate_level_cell(g: dict | None) -> str:
    if not g:
        return "–"
    verdict = "0 mismatches" if g["mismatches"] == 0 else f"**{g['mismatches']:,} mismatches** ({g['first']})"
    return f"{g['vectors']:,} values, {g['formats']} formats: {verdict}"


def _f(v, spec=",.0f") -> str:
    return "–" if v is None else format(v, spec)


def markdown(section: dict) -> list[str]:
    """The silicon table (units, then engines) as Markdown lines."""
    fo4 = section["fo4"]["fo4_ns"]
    meta = section["meta"]
    yosys_version = meta["yosys"].split(" (")[0]  # "Yosys 0.70"
    lines = ["## Silicon: sky130 cells + OpenSTA, the SIEVE unit against the dissertation", "",
             f"{yosys_version} (`abc -liberty`, delay target {meta['abc_delay_target_ps']} ps), "
             f"OpenSTA {meta['opensta']}, SkyWater sky130_fd_sc_hd typical corner (25 °C, 1.8 V). "
             f"FO4 (sky130, measured) = {fo4 * 1000:.1f} ps. ASIC section: {meta['seconds']:.0f} s.", "",
             "### The SIEVE unit (32 compressors + 32 decompressors + 1 constant calculator, combinational engines)", "",
             "Area = 32 × (compressor + decompressor) mapped area + the multicycle calculator's (`constcalc_mc`,"
             " below; one engine mapped, not 64);"
             " path = the longer engine's input → output path (constant record false: it only changes at a drained"
             " format boundary). Power at 852 MHz with resnet20 `layer2.0.conv1` data (mean of its weight and"
             " activation streams), every engine busy every cycle.", "",
             "| unit | area sky130 µm² | NAND2 eq | 45 nm-eq mm² | ≤ 0.06 mm² | ≤ 0.04 mm² | longest path ns | FO4 "
             f"| 45 nm-eq ns | fits {U.TEGRA_K1_MHZ:g} MHz (≤ {U.cycle_fo4():.1f} FO4) | power 130 nm W @{U.TEGRA_K1_MHZ:g} MHz "
             "| 45 nm est. W |",
             "|---|---:|---:|---:|---|---|---:|---:|---:|---|---:|---:|"]
    for u in section["units"]:
        lines.append(
            f"| {u['unit']} | {u['area_um2']:,.0f} | {u['nand2_eq']:,} | {u['area_45nm_mm2']:.4f} "
            f"| {'yes' if u['meets_dissertation_area'] else '**no**'} | {'yes' if u['meets_goal_area'] else '**no**'} "
            f"| {u['longest_path_ns']:.2f} | {u['longest_path_fo4']:.1f} | {u['longest_path_45nm_ns']:.3f} "
            f"| {'yes' if u['fits_one_cycle'] else '**no**'} (margin {u['cycle_margin_fo4']:+.1f} FO4) "
            f"| {_f(u.get('power_130nm_w_852mhz'), '.4f')} | {_f(u.get('power_45nm_est_w'), '.4f')} |")
    if meta.get("power_note"):
        lines += ["", f"Power not measured: {meta['power_note']}"]
    lines += verdict(section["units"])
    lines += _calculator_lines(section)
    lines += ["", "### Engines (sky130 mapped)", "",
              "| design | contract / format | latency | cells | FF | area µm² | NAND2 eq | 45 nm-eq µm² | path ns | FO4 "
              "| 45 nm-eq ns | levels | path incl. `k` ns | power mW @ own Fmax (weights / activations) "
              "| gate-level vs emulator |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in section["records"]:
        name = (r["fixed"] or r["contract"]) + ("" if r.get("mode", "delay") == "delay" else f" ({r['mode']}-mapped)")
        if r.get("status") != "ok":
            lines.append(f"| {r['design']} | {name} | | failed: {r.get('error', '')} ||||||||||||")
            continue
        t = r["timing"]
        pw = r.get("power") or {}
        own = " / ".join(f"{pw[s]['own']['total_w'] * 1e3:.3f}" for s in ("weights", "activations") if s in pw) or "–"
        lines.append(
            f"| {r['design']} | {name} | {r['latency']} | {r['cells']:,} | {r['ff']} | {r['area_um2']:,.0f} "
            f"| {r['nand2_eq']:,.0f} | {r['area_45nm_um2']:,.0f} | {r['delay_ns']:.3f} | {r['delay_fo4']:.1f} "
            f"| {r['delay_45nm_ns']:.3f} | {t['logic_levels']} | {_f(t.get('with_constants_min_period_ns'), '.3f')} | {own} "
            f"| {_gate_level_cell(r.get('gate_level'))} |")
    lines += ["", "Pipelined engines and `constcalc`: 'path' is the minimum clock period (register to register,"
              " inputs and outputs at the clock edge). `constcalc_mc`: the record register → constants delay, a"
              " multicycle path with LATENCY − 1 = 5 cycles to settle.", "", "Where each constant comes from:", ""]
    lines += [f"- {s}" for s in meta["sources"]]
    lines += ["- Timing: inputs arrive at the clock edge with a 0.1 ns slew, outputs drive four `inv_1` inputs"
              " (9.2 fF), nets costed by the Liberty's default wire-load model (`Small`): pre-layout, no placement"
              " or routing, no post-mapping timing repair beyond ABC's buffering and sizing.",
              "- Power: Debian's OpenSTA (2019) reads no VCD/SAIF, so the measured per-bit toggle rates and duty"
              " cycles of the real data are set on the input ports (`set_power_activity -input_ports`, the record"
              " `k` static at its value) and OpenSTA propagates them through the cells' functions (a vectorless"
              " estimate seeded with real port activity). 130 nm at 1.8 V is what was measured; the 45 nm figure"
              " is the scaling rule above applied to it. The calculators are powered idle (record held: only their"
              " clock toggles). Power is summed per instance; cells whose internal power this OpenSTA returns as"
              f" NaN (an exactly static output) count 0: {_nan_cells(section)} in this run.", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m synth.asic", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="build/synth/asic")
    p.add_argument("--contracts", help="comma-separated contracts (default all)")
    p.add_argument("--fixed", default=",".join(FIXED), help="fixed formats ('none' to skip)")
    p.add_argument("--no-pipelined", action="store_true", help="skip the default-depth engines")
    p.add_argument("--no-power", action="store_true", help="skip the power runs (and resnet20)")
    p.add_argument("--delay-ps", type=int, default=DEFAULT_DELAY_PS, help="ABC delay target in ps")
    p.add_argument("--no-gate-level", action="store_true", help="skip the gate-level simulation against the emulator")
    args = p.parse_args(argv)
    try:
        contracts = tuple(c.strip() for c in args.contracts.split(",")) if args.contracts else None
        fixed = () if args.fixed.strip().lower() == "none" else tuple(f.strip() for f in args.fixed.split(","))
        section = run(Path(args.out), contracts, fixed, not args.no_pipelined, not args.no_power, args.delay_ps,
                      not args.no_gate_level)
    except SieveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(markdown(section)))
    return 0 if all_ok(section) else 1


def all_ok(section: dict) -> bool:
    """Every design mapped, timed and (where checked) equal to the emulator at gate level."""
    return all(r["status"] == "ok" and (r.get("gate_level") or {}).get("mismatches", 0) == 0
               for r in section["records"])


if __name__ == "__main__":
    sys.exit(main())
