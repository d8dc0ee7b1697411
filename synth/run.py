"""``python -m synth.run --out build/synth``: synthesise the SIEVE engines, write the report.

Every design of :data:`sieve_hw.generate.DESIGNS` is synthesised configurable (format a
run-time input); the engines and lane units also with formats baked in (``--fixed``), to
show what configurability costs.  Each design x target becomes one record of
``report.json``; ``report.md`` is the table.  Exit 0 when every record is ``ok`` or
``skipped`` (a reason is recorded, e.g. a design larger than the device), 1 when some
target failed or timed out (the report is still written), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from sieve.cfloat import Format, FormatError
from sieve.errors import SieveError

from . import TARGETS, report, throughput
from .contracts import contract_rows
from .flow import FlowSettings, RtlilWriter, Variant, hw_rtlil_writer, run_variant
from .nextpnr import PnrSettings
from .tools import nextpnr_ice40, yosys

#: The formats baked in for the fixed-format comparison: the float8 e4m3 layout, and an
#: unsigned 8-bit activation format of the kind the search picks for post-ReLU tensors.
DEFAULT_FIXED = ("e4m3", "ue3m4b5")
#: Designs that also get fixed-format variants (the constant calculator with a fixed
#: format is a set of constants: nothing to compare); the engines at every depth, so the cost
#: of configurability is measured at equal depth.
FIXED_DESIGNS = ("compressor", "decompressor", "lanes1", "lanes8")
QUICK_DESIGNS = ("constcalc", "compressor", "decompressor", "lanes1")
#: Designs whose iCE40 targets are skipped by default (they cannot fit any iCE40 device).
NO_ICE40 = ("lanes32",)


def known_designs() -> list[str]:
    """The designs the RTL generator offers (each engine at its default depth)."""
    try:
        from sieve_hw import generate
    except ImportError as exc:
        raise SieveError(f"cannot import sieve_hw.generate ({exc}); run `make setup` or check hw/sieve_hw") from exc
    return list(generate.DESIGNS)


def default_designs() -> list[str]:
    """What ``make synth`` builds: every design, plus each engine at every other depth it
    offers (``compressor_s1`` ...), so the report shows every configuration."""
    from sieve_hw import generate

    out = []
    for design in known_designs():
        out.append(design)
        if design in generate.DEPTHS:
            default = generate.latency(design)
            out += [f"{design}_s{n}" for n in generate.DEPTHS[design] if n != default]
    return out


def _variant_of_known(design: str, known: list[str]) -> bool:
    """A depth variant (``compressor_s1``, ``lanes8_s3``) of a known design that elaborates."""
    from sieve_hw import generate

    base, stages = generate.split_design(design)
    if stages is None or base not in known:
        return False
    try:
        generate.latency(design)
    except ValueError:
        return False
    return True


def plan_variants(designs: list[str], fixed: list[Format]) -> list[Variant]:
    """Configurable variants of every design, then fixed-format variants where they apply."""
    out = [Variant(d) for d in designs]
    out += [Variant(d, f) for d in designs if _gets_fixed(d) for f in fixed]
    return out


def _gets_fixed(design: str) -> bool:
    """A design of :data:`FIXED_DESIGNS`, or an engine at another depth (``compressor_s1``)."""
    return design in FIXED_DESIGNS or report.is_engine(design)


def hw_revision() -> str | None:
    """The last git commit touching hw/ (``+dirty`` when hw/ has uncommitted changes)."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "log", "-1", "--format=%h", "--", "hw"], cwd=root,
                             capture_output=True, text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hw"], cwd=root,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (rev + ("+dirty" if dirty else "")) or None


def measure_throughput(formats: list[Format], values: int) -> list[dict]:
    """Steady-state throughput per format (a failure is recorded, not raised)."""
    runs = []
    for fmt in tqdm(formats, desc="throughput", unit="format", file=sys.stderr):
        try:
            runs.append(throughput.measure(fmt, values))
        except (SieveError, ImportError) as exc:
            runs.append({"format": str(fmt), "values": values, "error": str(exc)})
    return runs


def step_breakdown(out_dir: Path) -> list[dict]:
    """Per-step logic transistors of each engine (both compressor step forms); failures recorded."""
    from .breakdown import breakdown
    from sieve_hw.compressor import Compressor
    from sieve_hw.decompressor import Decompressor

    rows: list[dict] = []
    forms = [("compressor", min(Compressor.CUTS)), ("compressor", Compressor.DEFAULT_STAGES),
             ("decompressor", Decompressor.DEFAULT_STAGES)]
    for engine, depth in tqdm(forms, desc="step breakdown", file=sys.stderr):
        try:
            rows += breakdown(out_dir, engine, depth)
        except SieveError as exc:
            rows.append({"engine": engine, "stages": depth, "step": "error", "transistors": 0, "top_cells": [],
                         "input_bits": 0, "output_bits": 0, "error": str(exc)})
    return rows


def synthesize(out_dir: Path, jobs: list[tuple[Variant, RtlilWriter]], settings: FlowSettings,
               command: str, workers: int = 1, throughput_runs: list[dict] | None = None,
               breakdown: bool = False, contracts: bool = False, asic: bool = False) -> dict:
    """Run every (variant, RTLIL writer) through the flow; write and return the report
    (``asic``: also the silicon section, :mod:`synth.asic`, which the report leads with)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ys = yosys()  # fail early, and pay YoWASP's one-off compile before the progress bar
    revision = hw_revision()  # at the start: the RTL may change while a long run goes on
    pnr_version = None
    if any(t.startswith("ice40") for t in settings.targets):
        pnr_version = nextpnr_ice40().version
    start = time.perf_counter()
    bar = tqdm(total=len(jobs) * len(settings.targets), desc="synth", unit="step", file=sys.stderr)

    def one(job: tuple[Variant, RtlilWriter]) -> list[dict]:
        variant, writer = job
        started = []

        def tick(label: str) -> None:  # called as each target starts: the previous one is done
            if started:
                bar.update(1)
            started.append(label)
            bar.set_postfix_str(label)

        try:
            recs = run_variant(variant, writer, out_dir / variant.slug, settings, tick)
        except SieveError as exc:  # the design itself could not be generated or read
            recs = [{"design": variant.design, "variant": variant.name,
                     "format": None if variant.fixed_format is None else str(variant.fixed_format),
                     "target": t, "status": "failed", "error": str(exc)} for t in settings.targets]
        bar.update(len(settings.targets) - max(0, len(started) - 1))
        return recs

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(one, jobs))
    bar.close()
    records = [r for recs in results for r in recs]
    rows = step_breakdown(out_dir / "breakdown") if breakdown else None
    # every engine depth for each narrower run-time contract, on this run's generic / HX8K settings
    contract_figures = contract_rows(out_dir / "contracts", settings=settings) if contracts else None
    silicon = None
    if asic:  # sky130 cells + OpenSTA: the engines and the SIEVE unit in silicon units
        from . import asic as asic_flow

        try:
            silicon = asic_flow.run(out_dir / "asic")
        except SieveError as exc:  # e.g. no ../shared/pdk or no OpenSTA: the rest of the report stands
            silicon = {"error": str(exc)}
    meta = {
        "command": command,
        "hw_revision": revision,
        "yosys": ys.version,
        "nextpnr_ice40": pnr_version,
        "freq_mhz": settings.pnr.freq_mhz,
        "seed": settings.pnr.seed,
        "targets": list(settings.targets),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return report.write(out_dir, records, meta, throughput_runs, rows, contract_figures, silicon)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m synth.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="build/synth", help="output directory (default build/synth)")
    p.add_argument("--designs", help="comma-separated designs (default: every design of sieve_hw.generate.DESIGNS)")
    p.add_argument("--targets", help=f"comma-separated targets (default all: {','.join(TARGETS)})")
    p.add_argument("--fixed", default=",".join(DEFAULT_FIXED),
                   help=f"comma-separated formats baked in for {','.join(FIXED_DESIGNS)} ('none' to skip; default {','.join(DEFAULT_FIXED)})")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: designs {','.join(QUICK_DESIGNS)}, one fixed format")
    p.add_argument("--freq", type=float, default=100.0, help="nextpnr clock constraint in MHz (default 100)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placer seed (default 1)")
    p.add_argument("--pnr-timeout", type=float, default=900.0, help="seconds per nextpnr run (default 900)")
    p.add_argument("--no-pnr", default="", help="comma-separated designs whose place and route is skipped")
    p.add_argument("--no-ice40", default=",".join(NO_ICE40),
                   help="comma-separated designs whose iCE40 targets are skipped entirely ('none' to map all; "
                        f"default {','.join(NO_ICE40)}: ~30 k LUT4, 4x an HX8K, and ~9 min of synth_ice40)")
    p.add_argument("--throughput-values", type=int, default=1000,
                   help="values streamed per engine in the throughput simulation (0 skips it; default 1000)")
    p.add_argument("--no-breakdown", action="store_true",
                   help="skip the per-step transistor breakdown of the engines (synth.breakdown, ~1 min)")
    p.add_argument("--no-contracts", action="store_true",
                   help="skip the engines synthesised for narrower format families (synth.contracts, ~3 min)")
    p.add_argument("--no-asic", action="store_true",
                   help="skip the silicon section (synth.asic: sky130 cells, OpenSTA timing and power, the SIEVE unit;"
                        " ~4 min; needs ../shared/pdk/sky130 and Debian's opensta)")
    p.add_argument("--jobs", type=int, default=1, help="design variants synthesised in parallel (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = "python -m synth.run " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        targets = tuple(_csv(args.targets)) if args.targets else TARGETS
        bad = sorted(set(targets) - set(TARGETS))
        if bad:
            raise SieveError(f"unknown target(s) {bad}; known: {list(TARGETS)}")
        fixed_text = [] if args.fixed.strip().lower() == "none" else _csv(args.fixed)
        if args.quick:
            fixed_text = fixed_text[:1]
        try:
            fixed = [Format.parse(t) for t in fixed_text]
        except (FormatError, ValueError) as exc:
            raise SieveError(f"bad --fixed format: {exc}") from exc
        known = known_designs()
        designs = _csv(args.designs) if args.designs else default_designs()
        if args.quick and not args.designs:
            designs = [d for d in QUICK_DESIGNS if d in known]
        unknown = sorted(d for d in designs if d not in known and not _variant_of_known(d, known))
        if unknown:
            raise SieveError(f"unknown design(s) {unknown}; known: {known}")
        settings = FlowSettings(
            targets=targets,
            pnr=PnrSettings(freq_mhz=args.freq, seed=args.seed, timeout=args.pnr_timeout),
            skip_pnr=frozenset(_csv(args.no_pnr)),
            skip_ice40=frozenset() if args.no_ice40.strip().lower() == "none" else frozenset(_csv(args.no_ice40)),
        )
        jobs = [(v, hw_rtlil_writer(v.design, v.fixed_format)) for v in plan_variants(designs, fixed)]
        values = min(args.throughput_values, 200) if args.quick else args.throughput_values
        runs = measure_throughput(fixed or [Format.parse(DEFAULT_FIXED[0])], values) if values > 0 else []
        rep = synthesize(Path(args.out), jobs, settings, command, workers=args.jobs, throughput_runs=runs,
                         breakdown=not (args.no_breakdown or args.quick),
                         contracts=not (args.no_contracts or args.quick), asic=not (args.no_asic or args.quick))
    except SieveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bad_records = [r for r in rep["records"] if r["status"] not in {"ok", "skipped"}]
    bad_records += [{"design": "lanes1", "variant": "throughput", "target": t["format"], "status": "failed",
                     "error": t["error"]} for t in rep["throughput"] if "error" in t]
    if rep.get("asic"):
        from .asic import all_ok

        if "error" in rep["asic"] or not all_ok(rep["asic"]):
            bad_records.append({"design": "asic", "variant": "sky130", "target": "asic", "status": "failed",
                                "error": "a design failed to map or time, or its gate-level simulation disagreed "
                                         "with the emulator (see the silicon section)"})
    print(f"wrote {args.out}/report.json and report.md ({len(rep['records'])} records)")
    for c in rep["checks"]:
        print(f"  {c['engine']:<13} {c['check']}: {c['value']} ({c['limit']}) {'pass' if c['pass'] else 'MISS'}")
    for r in bad_records:
        print(f"  {r['design']} {r['variant']} {r['target']}: {r['status']}: {r.get('error', '')}", file=sys.stderr)
    return 1 if bad_records else 0


if __name__ == "__main__":
    sys.exit(main())
