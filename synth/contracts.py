"""The price of each run-time freedom: the engines synthesised for narrower format families.

Why: the report's "cost of configurability" compares two extremes, every legal Format at run
time against one format baked in.  Between them sit the families a deployment actually needs
(:mod:`sieve_hw.contracts`: e.g. only the formats ``sieve search`` emits).  Here every engine,
at every depth it offers, goes through the main report's flow for each contract (generic
cells and the CMOS estimate; iCE40 HX8K place and route for Fmax), so the steps between the
extremes say which freedom costs what, and whether any family meets both targets at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from sieve.errors import SieveError

from .flow import FlowSettings, Variant, hw_rtlil_writer, run_variant

__all__ = ["contract_rows"]


def _engines():
    from sieve_hw.compressor import Compressor
    from sieve_hw.decompressor import Decompressor

    return {"compressor": Compressor, "decompressor": Decompressor}


def contract_rows(out_dir: Path, engines: tuple[str, ...] = ("compressor", "decompressor"),
                  contracts: tuple[str, ...] | None = None, settings: FlowSettings | None = None) -> list[dict]:
    """Figures of ``engines`` at every depth for every contract (default all).

    The same flow as the main report (:func:`synth.flow.run_variant`) on ``settings.targets``
    among ``generic`` (transistors) and ``ice40-hx8k`` (Fmax); default: both.  One dict per
    (engine, depth, contract); a target that failed leaves its figure None and its ``errors``.
    """
    from sieve_hw.contracts import CONTRACTS

    names = tuple(CONTRACTS) if contracts is None else contracts
    unknown = sorted(set(names) - set(CONTRACTS))
    if unknown:
        raise SieveError(f"unknown contract(s) {unknown}; known: {', '.join(CONTRACTS)}")
    settings = settings or FlowSettings(targets=("generic", "ice40-hx8k"))
    targets = tuple(t for t in settings.targets if t in ("generic", "ice40-hx8k"))
    settings = FlowSettings(targets=targets, pnr=settings.pnr, yosys_timeout=settings.yosys_timeout)
    classes = _engines()
    jobs = [(e, s, c) for e in engines for s in sorted(classes[e].CUTS) for c in names]
    rows = []
    for engine, stages, name in tqdm(jobs, desc="contracts", file=sys.stderr):
        cls = classes[engine]
        design = engine if stages == cls.DEFAULT_STAGES else f"{engine}_s{stages}"  # as the main flow names it
        top = f"{engine}_s{stages}_{name}"  # work directory
        row = {"engine": engine, "stages": stages, "design": design, "contract": name,
               "summary": CONTRACTS[name].summary, "transistors": None, "fmax_mhz": None, "errors": []}
        try:
            writer = hw_rtlil_writer(f"{engine}_s{stages}", contract=name)
            records = run_variant(Variant(design), writer, Path(out_dir) / top, settings)
        except SieveError as exc:
            rows.append({**row, "errors": [str(exc)]})
            continue
        for rec in records:
            if rec.get("status") != "ok":
                row["errors"].append(f"{rec['target']}: {rec.get('error') or rec.get('reason')}")
            elif rec["target"] == "generic":
                row.update(transistors=rec["transistors"], transistors_logic=rec["transistors_logic"],
                           transistors_registers=rec["transistors_registers"], ff_bits=rec["ff_bits"])
            else:
                row["fmax_mhz"] = rec.get("fmax_mhz")
        rows.append(row)
    return rows
