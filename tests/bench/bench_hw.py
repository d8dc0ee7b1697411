"""Benchmark ``hw``: the engines' area and Fmax, measured in one run against the issue's targets.

Figures: steady-state values per cycle of each engine (Amaranth simulation, outputs checked
against the emulator), transistors, iCE40 Fmax.  Peers in the same run: the dissertation's
budget (0.06 mm^2 for 64 engines at 45 nm, about 4,700 transistors per engine), the iCE40
HX8K 100 MHz target, and the same engines with the format baked in (the cost of run-time
configurability).  The lane units show how the shared
constant calculator amortises (transistors per engine for N = 1, 8).

Writes ``out_dir/hw.json`` and ``out_dir/hw.md``; the full synthesis report (every design x
target record) goes to ``out_dir/hw-synth/report.{json,md}``.
"""

from __future__ import annotations

from pathlib import Path

from sieve.cfloat import Format
from sieve.io_utils import write_json, write_text
from synth import TARGETS
from synth.flow import FlowSettings, hw_rtlil_writer
from synth.report import LANE_COUNTS, TRANSISTOR_LIMIT, _num
from synth.run import DEFAULT_FIXED, measure_throughput, plan_variants, synthesize


def _per_engine(rep: dict) -> list[dict]:
    rows = []
    for r in rep["records"]:
        if r["target"] != "generic" or r["status"] != "ok" or r["variant"] != "configurable":
            continue
        engines = 2 * LANE_COUNTS[r["design"]] if r["design"] in LANE_COUNTS else 1
        if r["design"] == "constcalc":
            continue
        rows.append({"design": r["design"], "engines": engines, "transistors": r["transistors"],
                     "transistors_per_engine": round(r["transistors"] / engines),
                     "vs_budget": round(r["transistors"] / engines / TRANSISTOR_LIMIT, 3)})
    return rows


def run(out_dir: Path, quick: bool) -> dict:
    designs = ["compressor", "decompressor"] + ([] if quick else ["lanes1", "lanes8"])
    fixed = [Format.parse(t) for t in (DEFAULT_FIXED[:1] if quick else DEFAULT_FIXED)]
    targets = ("generic", "ice40-hx8k") if quick else TARGETS
    settings = FlowSettings(targets=targets)
    jobs = [(v, hw_rtlil_writer(v.design, v.fixed_format)) for v in plan_variants(designs, fixed)]
    command = "python -m tests.bench.run --only hw" + (" --quick" if quick else "")
    runs = measure_throughput(fixed, 200 if quick else 2000)
    rep = synthesize(Path(out_dir) / "hw-synth", jobs, settings, command, throughput_runs=runs)
    result = {
        "command": command,
        "meta": rep["meta"],
        "checks": rep["checks"],
        "all_targets_met": bool(rep["checks"]) and all(c["pass"] for c in rep["checks"]),
        "throughput": rep["throughput"],
        "configurability": rep["configurability"],
        "per_engine": _per_engine(rep),
        "failed_records": [f"{r['design']} {r['variant']} {r['target']}: {r.get('error')}"
                           for r in rep["records"] if r["status"] not in {"ok", "skipped"}],
        "report": str(Path(out_dir) / "hw-synth" / "report.md"),
    }
    write_json(Path(out_dir) / "hw.json", result)
    lines = ["# bench hw", "", f"`{command}` — full table in `{result['report']}`", "",
             "| engine | check | value | target | pass |", "|---|---|---:|---|---|"]
    lines += [f"| {c['engine']} | {c['check']} | {_num(c['value'])} | {c['limit']} | {'yes' if c['pass'] else 'NO'} |"
              for c in result["checks"]]
    lines += ["", "| design | engines | transistors | per engine | ÷ 4,700 budget |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['design']} | {r['engines']} | {r['transistors']:,} | {r['transistors_per_engine']:,} | {r['vs_budget']} |"
              for r in result["per_engine"]]
    lines += ["", "| design | fixed format | configurable ÷ fixed (transistors) | iCE40 LUT4 ratio |", "|---|---|---:|---:|"]
    lines += [f"| {c['design']} | {c['fixed']} | {c['transistor_ratio']} | {c.get('ice40-hx8k_lut4_ratio', '–')} |"
              for c in result["configurability"]]
    if result["failed_records"]:
        lines += ["", "Failed:"] + [f"- {f}" for f in result["failed_records"]]
    write_text(Path(out_dir) / "hw.md", "\n".join(lines) + "\n")
    return result
