"""Elaborate the SIEVE hardware and write Verilog + RTLIL: the API the synthesis flow uses.

``python -m sieve_hw.generate --out build/rtl`` writes every design of :data:`DESIGNS`
(configurable, the format a run-time input) and the fixed-format variants of
:data:`FIXED_DESIGNS` for each format of :data:`FIXED_FORMATS`, plus ``manifest.json``.

Top module names (:func:`top_name`): ``sieve_<design>`` for the configurable netlist and
``sieve_<design>__<format slug>`` for a fixed format (slug: ``str(fmt)`` with ``+`` → ``_``
and ``-`` → ``n``, e.g. ``sieve_compressor__se4m3b7``), then ``__<contract>`` for a design
narrowed to a family of formats (``--contract``, :mod:`.contracts`, e.g. ``sieve_lanes8__search``).
Files are ``<top>.v`` and ``<top>.il``.  Every design has one clock domain: ports ``clk`` and ``rst`` (synchronous,
active high), ``constcalc`` included (a register pipeline, see :class:`~.constants.ConstCalc`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from amaranth.back import rtlil, verilog

import sieve
from sieve.io_utils import write_text as atomic_write_text

from .compressor import Compressor
from .constants import ConstCalc
from .contracts import CONTRACTS, contract as get_contract
from .decompressor import Decompressor
from .engine import check_stages
from .lanes import MAX_LANES, Lanes

__all__ = ["DESIGNS", "FIXED_DESIGNS", "FIXED_FORMATS", "DEPTHS", "elaborate", "latency", "split_design",
           "top_name", "write_verilog", "write_rtlil", "write_both", "main"]

DESIGNS = ["constcalc", "compressor", "decompressor", "lanes1", "lanes8", "lanes32"]
#: Designs that also exist with the format baked in (constcalc has nothing left then).
FIXED_DESIGNS = ["compressor", "decompressor", "lanes1", "lanes8", "lanes32"]
#: Formats ``make rtl`` writes fixed-format variants for (the SIEVE default e4m3 and a preset).
FIXED_FORMATS = ["se4m3b7", "float8_e5m2"]
#: The multicycle constant calculator (``ConstCalc(registered=False)``: the record register only,
#: ``k`` valid LATENCY cycles after a load); not in DESIGNS, so ``make rtl`` / the FPGA flow leave it out.
MULTICYCLE_CALC = "constcalc_mc"
#: Pipeline depths each engine offers (a design name ``<engine>_s<N>`` picks one; the bare
#: name is the engine's default depth).  Latency in clock cycles = the depth.
DEPTHS = {"compressor": sorted(Compressor.CUTS), "decompressor": sorted(Decompressor.CUTS)}


class DesignError(ValueError):
    """An unknown design name or an illegal elaboration parameter."""


def _format(fixed_format) -> sieve.Format | None:
    if fixed_format is None or isinstance(fixed_format, sieve.Format):
        return fixed_format
    if isinstance(fixed_format, str):
        try:
            return sieve.Format.parse(fixed_format)
        except sieve.FormatError as exc:
            raise DesignError(f"fixed_format: {exc}") from None
    raise DesignError(f"fixed_format must be a sieve.Format, its text form or None, got {fixed_format!r}")


def split_design(design: str) -> tuple[str, int | None]:
    """``"compressor_s3"`` -> ``("compressor", 3)``; a name without ``_s<N>`` -> ``(name, None)``."""
    base, sep, tail = design.rpartition("_s")
    if sep and base and tail.isdigit():
        return base, int(tail)
    return design, None


def latency(design: str) -> dict[str, int] | int:
    """Clock cycles from input acceptance to output valid: an int for an engine and for
    constcalc (load to constants valid), ``{"compressor": .., "decompressor": ..}`` for a lane unit.

    Read from the classes (cut tables, defaults, ``ConstCalc.LATENCY``) after the same checks
    :func:`elaborate` makes, so no component is built just to be inspected."""
    base, n, stages = _resolve(design)
    if base in ("constcalc", MULTICYCLE_CALC):
        return ConstCalc.LATENCY
    if n is not None:
        return {"compressor": check_stages(Compressor, stages), "decompressor": check_stages(Decompressor, stages)}
    return check_stages(Compressor if base == "compressor" else Decompressor, stages)


def _lanes(design: str) -> int | None:
    if design.startswith("lanes"):
        tail = design[len("lanes"):]
        if not tail.isdigit():
            raise DesignError(f"design {design!r}: lane count must be a number, e.g. 'lanes8'")
        return int(tail)
    return None


def elaborate(design: str, fixed_format: sieve.Format | str | None = None, contract: str = "full"):
    """The Amaranth component for ``design``: one of :data:`DESIGNS`, or ``lanes<N>`` for any
    N >= 1, optionally with ``_s<N>`` for the pipeline depth (``compressor_s1``, ``lanes8_s3``);
    ``contract`` narrows a configurable design to a family of formats (:mod:`.contracts`)."""
    fmt = _format(fixed_format)
    base, n, stages = _resolve(design)  # every check first: a refusal leaves no half-built component
    if contract not in CONTRACTS:
        raise DesignError(f"unknown contract {contract!r}; known: {', '.join(CONTRACTS)}")
    if fmt is not None and contract != "full":
        raise DesignError(f"design {design!r}: a fixed-format design has no run-time contract to narrow")
    try:
        if n is not None:
            return Lanes(n, fmt, stages, contract)
        if base == "compressor":
            return Compressor(fmt, stages, contract)
        if base == "decompressor":
            return Decompressor(fmt, stages, contract)
        if fmt is not None:
            raise DesignError("constcalc has no fixed-format variant: with the format known there is nothing to compute")
        return ConstCalc(get_contract(contract), registered=base != MULTICYCLE_CALC)
    except ValueError as exc:
        raise DesignError(f"design {design!r}: {exc}") from None


def _resolve(design: str) -> tuple[str, int | None, int | None]:
    """``(base name, lane count or None, depth or None)`` of a design name, or the DesignError
    for an unknown name, a lane count out of range, or a depth its engines do not offer."""
    base, stages = split_design(design)
    n = _lanes(base)
    if n is not None and n < 1:
        raise DesignError(f"design {design!r}: a lane unit needs at least 1 lane")
    if n is not None and n > MAX_LANES:
        raise DesignError(f"design {design!r}: lanes must be an integer 1..{MAX_LANES}, got {n}")
    if n is None and base not in ("compressor", "decompressor"):
        if stages is not None:
            raise DesignError(f"design {design!r}: only engines and lane units have a pipeline depth (_s<N>)")
        if base not in ("constcalc", MULTICYCLE_CALC):
            raise DesignError(f"unknown design {design!r}; known: {', '.join(DESIGNS)} (or lanes<N>, {MULTICYCLE_CALC})")
    engines = (Compressor, Decompressor) if n is not None else {"compressor": (Compressor,),
                                                                "decompressor": (Decompressor,)}.get(base, ())
    try:
        for cls in engines:
            check_stages(cls, stages)
    except ValueError as exc:
        raise DesignError(f"design {design!r}: {exc}") from None
    return base, n, stages


def top_name(design: str, fixed_format=None, contract: str = "full") -> str:
    """Verilog/RTLIL top module name of a design (see the module docstring)."""
    fmt = _format(fixed_format)
    name = f"sieve_{design}"
    if fmt is not None:
        name += "__" + str(fmt).replace("+", "_").replace("-", "n")
    if contract != "full":
        name += f"__{contract}"
    return name


def _texts(design: str, fixed_format, contract: str) -> tuple[str, str]:
    """(RTLIL, Verilog) of one design, elaborated once (Verilog is Yosys' rendering of the RTLIL)."""
    top = top_name(design, fixed_format, contract)
    il = rtlil.convert(elaborate(design, fixed_format, contract), name=top, emit_src=False)
    return il, verilog._convert_rtlil_text(il, strip_internal_attrs=True)


def _write(out_dir, name: str, text: str) -> Path:
    path = Path(out_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def write_verilog(design: str, out_dir, fixed_format=None, contract: str = "full") -> Path:
    """Write ``<out_dir>/<top>.v`` and return its path (top module = :func:`top_name`)."""
    top = top_name(design, fixed_format, contract)
    text = verilog.convert(elaborate(design, fixed_format, contract), name=top, emit_src=False,
                           strip_internal_attrs=True)
    return _write(out_dir, f"{top}.v", text)


def write_rtlil(design: str, out_dir, fixed_format=None, contract: str = "full") -> Path:
    """Write ``<out_dir>/<top>.il`` and return its path (top module = :func:`top_name`)."""
    top = top_name(design, fixed_format, contract)
    return _write(out_dir, f"{top}.il",
                  rtlil.convert(elaborate(design, fixed_format, contract), name=top, emit_src=False))


def write_both(design: str, out_dir, fixed_format=None, contract: str = "full") -> tuple[Path, Path]:
    """Write ``<top>.v`` and ``<top>.il`` from one elaboration; return (verilog, rtlil) paths."""
    top = top_name(design, fixed_format, contract)
    il, v = _texts(design, fixed_format, contract)
    return _write(out_dir, f"{top}.v", v), _write(out_dir, f"{top}.il", il)


def all_variants() -> list[tuple[str, str | None]]:
    """Every (design, fixed format text or None) pair ``make rtl`` writes."""
    out: list[tuple[str, str | None]] = [(d, None) for d in DESIGNS]
    out += [(d, f) for f in FIXED_FORMATS for d in FIXED_DESIGNS]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sieve_hw.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/rtl", help="output directory (default build/rtl)")
    parser.add_argument("--design", action="append", help="only this design (repeatable); default all")
    parser.add_argument("--fixed", action="append", help="fixed formats to also write (default: FIXED_FORMATS)")
    parser.add_argument("--contract", default="full",
                        help="narrow the configurable designs to a family of formats (sieve_hw.contracts: "
                             f"{', '.join(CONTRACTS)}; default full); writes no fixed-format variants")
    args = parser.parse_args(argv)
    out = Path(args.out)
    designs = args.design or DESIGNS
    fixed = args.fixed if args.fixed is not None else FIXED_FORMATS
    contract = args.contract
    try:
        jobs = [(d, None) for d in designs]
        if contract == "full":
            jobs += [(d, f) for f in fixed for d in designs
                     if split_design(d)[0] in FIXED_DESIGNS or _lanes(split_design(d)[0])]
        manifest = []
        for design, fmt in jobs:
            t0 = time.perf_counter()
            c = "full" if fmt is not None else contract
            v, il = write_both(design, out, fmt, c)
            top = top_name(design, fmt, c)
            manifest.append({"design": design, "fixed_format": None if fmt is None else str(_format(fmt)),
                             "contract": c, "top": top, "verilog": v.name, "rtlil": il.name,
                             "latency": latency(design)})
            print(f"{top:40s} {time.perf_counter() - t0:6.1f} s  -> {v}")
        atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    except DesignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
