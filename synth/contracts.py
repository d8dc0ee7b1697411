"""The price of each run-time freedom: the engines synthesised for narrower format families.

Why: the report's "cost of configurability" compares two extremes, every legal Format at run
time against one format baked in.  Between them sit the families a deployment actually needs
(:mod:`sieve_hw.contracts`: e.g. only the formats ``sieve search`` emits).  Here every engine,
at every depth it offers, is synthesised for each contract with the same generic Yosys script
and CMOS estimate as the main report (:func:`synth.yosys.generic`), so the steps between the
extremes say which freedom costs what.
"""

from __future__ import annotations

import sys
from pathlib import Path

from amaranth.back import rtlil
from tqdm import tqdm

from sieve.errors import SieveError

from . import yosys

__all__ = ["contract_rows"]


def _engines():
    from sieve_hw.compressor import Compressor
    from sieve_hw.decompressor import Decompressor

    return {"compressor": Compressor, "decompressor": Decompressor}


def contract_rows(out_dir: Path, engines: tuple[str, ...] = ("compressor", "decompressor"),
                  contracts: tuple[str, ...] | None = None, timeout: float | None = 600.0) -> list[dict]:
    """Generic-cell CMOS figures of ``engines`` at every depth for every contract (default all).

    One dict per (engine, depth, contract); a failed synthesis is a row with ``error``.
    """
    from sieve_hw.contracts import CONTRACTS

    names = tuple(CONTRACTS) if contracts is None else contracts
    unknown = sorted(set(names) - set(CONTRACTS))
    if unknown:
        raise SieveError(f"unknown contract(s) {unknown}; known: {', '.join(CONTRACTS)}")
    classes = _engines()
    jobs = [(e, s, c) for e in engines for s in sorted(classes[e].CUTS) for c in names]
    rows = []
    for engine, stages, name in tqdm(jobs, desc="contracts", file=sys.stderr):
        top = f"{engine}_s{stages}_{name}"
        work = Path(out_dir) / top
        work.mkdir(parents=True, exist_ok=True)
        cls = classes[engine]
        design = engine if stages == cls.DEFAULT_STAGES else f"{engine}_s{stages}"  # as the main flow names it
        row = {"engine": engine, "stages": stages, "design": design, "contract": name,
               "summary": CONTRACTS[name].summary}
        try:
            dut = cls(stages=stages, contract=name)
            (work / f"{top}.il").write_text(rtlil.convert(dut, name=top, emit_src=False))
            rec = yosys.generic(f"{top}.il", top, work, timeout)
        except SieveError as exc:
            rows.append({**row, "error": str(exc)})
            continue
        rows.append({**row, "transistors": rec["transistors"], "transistors_logic": rec["transistors_logic"],
                     "transistors_registers": rec["transistors_registers"], "ff_bits": rec["ff_bits"]})
    return rows
