"""Where an engine's transistors go: each datapath step synthesised on its own.

Why: the whole-engine figure says how far from the 4,700-transistor budget an engine is,
not which part to shrink.  Every engine is a chain of combinational steps
(:attr:`sieve_hw.engine.StreamEngine.STEPS`); here each step becomes a small combinational
module (its inputs are the signals the previous steps hand over, the constant record ``k``
an input port) and goes through the same generic Yosys script and CMOS estimate as the
engines (:func:`synth.yosys.generic`).  The register ranks are not included: their cost is
the engine's ``transistors_registers``.  Step figures add up to slightly more than the
engine's logic because Yosys cannot optimise across step boundaries here.
"""

from __future__ import annotations

from pathlib import Path

from amaranth import Module, Signal, Value
from amaranth.back import rtlil
from amaranth.hdl import Elaboratable, Fragment

from sieve.errors import SieveError

from . import yosys

__all__ = ["StepModule", "step_modules", "breakdown"]


def _shapes_after(steps, sig: dict[str, Value], k) -> dict[str, Value]:
    """What ``steps`` hand over from ``sig``, built in a scratch module that is then turned into
    a fragment (that is all it is for; Amaranth warns about a module nobody elaborates)."""
    scratch = Module()
    for step in steps:
        sig = step(scratch, sig, k)
    Fragment.get(scratch, None)
    return sig


class StepModule(Elaboratable):
    """Step ``index`` of an engine's ``steps`` as a combinational module with ports."""

    def __init__(self, steps, index: int):
        from sieve_hw.constants import CONST_LAYOUT

        self.k = Signal(CONST_LAYOUT, name="k")
        sig = _shapes_after(steps[:index], {"x": Signal(32)}, self.k)
        self.inputs = {n: Signal(Value.cast(v).shape(), name=f"in_{n}") for n, v in sig.items()}
        self.steps = steps
        self.index = index
        probe = _shapes_after(steps[index:index + 1], dict(self.inputs), self.k)
        self.outputs: dict[str, Signal] = {n: Signal(Value.cast(v).shape(), name=f"out_{n}") for n, v in probe.items()}

    def elaborate(self, platform):
        m = Module()
        out = self.steps[self.index](m, dict(self.inputs), self.k)
        m.d.comb += [self.outputs[n].eq(v) for n, v in out.items()]
        return m

    def ports(self) -> list[Value]:
        return [self.k.as_value(), *self.inputs.values(), *self.outputs.values()]


def step_modules(engine: str, stages: int | None = None) -> list[tuple[str, StepModule]]:
    """(step name, module) for every step of ``engine`` at depth ``stages`` (None: default)."""
    from sieve_hw.compressor import Compressor
    from sieve_hw.decompressor import Decompressor

    cls = {"compressor": Compressor, "decompressor": Decompressor}.get(engine)
    if cls is None:
        raise SieveError(f"no step breakdown for {engine!r}; engines: compressor, decompressor")
    steps = cls.steps_for(cls.DEFAULT_STAGES if stages is None else stages)
    return [(step.__name__, StepModule(steps, i)) for i, step in enumerate(steps)]


def breakdown(out_dir: Path, engine: str, stages: int | None = None, timeout: float | None = 600.0) -> list[dict]:
    """Generic-cell CMOS figures of every step of ``engine``: one dict per step, in order."""
    rows = []
    for name, mod in step_modules(engine, stages):
        top = f"{engine}_{name}"
        work = Path(out_dir) / top
        work.mkdir(parents=True, exist_ok=True)
        (work / f"{top}.il").write_text(rtlil.convert(mod, name=top, ports=mod.ports(), emit_src=False))
        rec = yosys.generic(f"{top}.il", top, work, timeout)
        rows.append({"engine": engine, "stages": stages, "step": name, "transistors": rec["transistors"],
                     "cells": rec["cells"],
                     "top_cells": list(rec["transistors_by_type"].items())[:4],
                     "input_bits": sum(len(Value.cast(v)) for v in mod.inputs.values()),
                     "output_bits": sum(len(v) for v in mod.outputs.values())})
    return rows
