"""N-lane unit: N compressors and N decompressors sharing one constant calculator.

One load/store lane per engine pair (dissertation Figs. 4.10-4.12).  The unit owns the
run-time format:

* ``cfg`` (:data:`sieve_hw.config.FORMAT_LAYOUT`) with ``cfg_valid``/``cfg_ready``.  While
  ``cfg_valid`` is high no engine accepts new data; ``cfg_ready`` rises once every pipeline
  is empty and the constant calculator is idle, so the record takes effect exactly at a
  stream boundary and values already in flight always finish with the constants they
  started with.
* Format-change latency: the shared :class:`~.constants.ConstCalc` is a register pipeline
  (so it does not limit the lane unit's clock).  Counting the cycle in which ``cfg`` is
  accepted (``cfg_valid`` and ``cfg_ready`` high) as cycle 0, ``cfg_ready`` and every
  ``*_i_ready`` stay low through cycle ``cfg_latency - 1``; from cycle ``cfg_latency``
  (= :attr:`ConstCalc.LATENCY` = 6) the new constants and ``cfg_error`` hold and, if the
  record is legal and ``cfg_valid`` is low, the streams open.  ``cfg_error`` keeps the
  previous record's value until then.
* ``cfg_error`` is high while the loaded record is illegal (or, for a unit built for a narrower
  ``contract``, outside its family: :mod:`sieve_hw.contracts`), and also after reset until the
  first record is loaded: the streams are then closed (``*_i_ready`` = 0, nothing comes out).

``calculator="multicycle"`` takes the small calculator (``ConstCalc(registered=False)``: the
record register only, the constants valid ``cfg_latency`` cycles after a load; the same handshake,
since no engine takes a value while it is busy and none is in flight when a record is loaded).
With ``stages=0`` and the multicycle calculator the unit is the dissertation's: combinational
engines, one shared calculator.

``stages`` (generation parameter) sets the pipeline depth of every engine; ``None`` keeps
each engine's default (:attr:`Compressor.DEFAULT_STAGES`, :attr:`Decompressor.DEFAULT_STAGES`),
so the two sides may have different latencies (``self.latency``).

Data ports are flat vectors, lane ``j`` at bits ``[32*j, 32*j+32)`` (and bit ``j`` of the
valid/ready vectors): ``c_*`` is the compressor side (fp32 in, code out), ``d_*`` the
decompressor side (code in, fp32 out).  With ``fixed_format`` the calculator, constant
register and ``cfg*`` ports are dropped and every lane is a pair of fixed-format engines.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .compressor import Compressor
from .config import FORMAT_LAYOUT
from .constants import ConstCalc
from .contracts import contract as get_contract
from .decompressor import Decompressor

__all__ = ["Lanes"]

MAX_LANES = 256


class Lanes(wiring.Component):
    """``lanes`` compressor + decompressor pairs with one shared constant calculator."""

    def __new__(cls, *args, calculator: str = "registered", **kwargs):
        # refuse a bad calculator before Amaranth registers the object as must-use (as StreamEngine)
        if calculator not in ("registered", "multicycle"):
            raise ValueError(f"calculator must be 'registered' or 'multicycle', got {calculator!r}")
        return super().__new__(cls)

    def __init__(self, lanes: int, fixed_format=None, stages: int | None = None, contract: str = "full",
                 calculator: str = "registered"):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= MAX_LANES:
            raise ValueError(f"lanes must be an integer 1..{MAX_LANES}, got {lanes!r}")
        if calculator not in ("registered", "multicycle"):
            raise ValueError(f"calculator must be 'registered' or 'multicycle', got {calculator!r}")
        self.calculator = calculator
        self.lanes = lanes
        self.fixed_format = fixed_format
        #: pipeline depth of each engine (None: the engine's default); latency per side
        self.c_stages, self.contract = Compressor.resolve_parameters(fixed_format, stages, contract)
        self.d_stages, _ = Decompressor.resolve_parameters(fixed_format, stages, contract)
        self.latency = {"compressor": self.c_stages, "decompressor": self.d_stages}
        #: cycles from a format change's acceptance (cycle 0) to the first cycle a value may
        #: be accepted under the new format (None with the format baked in)
        self.cfg_latency = ConstCalc.LATENCY if fixed_format is None else None
        n = lanes
        members = {}
        for side in ("c", "d"):
            members.update({
                f"{side}_i_valid": In(n), f"{side}_i_ready": Out(n), f"{side}_i_data": In(32 * n),
                f"{side}_o_valid": Out(n), f"{side}_o_ready": In(n), f"{side}_o_data": Out(32 * n),
            })
        if fixed_format is None:
            members.update({"cfg": In(FORMAT_LAYOUT), "cfg_valid": In(1), "cfg_ready": Out(1),
                            "cfg_error": Out(1)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n = self.lanes
        engines = []
        for j in range(n):  # with a fixed format, the fixed-format engines (each folds its own constants)
            c = Compressor(self.fixed_format, self.c_stages, self.contract)
            d = Decompressor(self.fixed_format, self.d_stages, self.contract)
            m.submodules[f"comp{j}"] = c
            m.submodules[f"decomp{j}"] = d
            engines.append((c, d))

        if self.fixed_format is None:
            calc = m.submodules.constcalc = ConstCalc(get_contract(self.contract),
                                                      registered=self.calculator == "registered")
            busy = Signal(name="busy")
            m.d.comb += busy.eq(Cat(*(e.busy for pair in engines for e in pair)).any())
            m.d.comb += [
                self.cfg_ready.eq(~busy & ~calc.busy),
                calc.fmt.eq(self.cfg),
                calc.load.eq(self.cfg_valid & ~busy),  # ConstCalc takes it only when idle
                self.cfg_error.eq(calc.error),
            ]
            open_ = ~self.cfg_valid & ~calc.busy & ~calc.error
            for c, d in engines:
                m.d.comb += [c.k.eq(calc.k), d.k.eq(calc.k)]
        else:
            open_ = 1

        for j, (c, d) in enumerate(engines):
            for side, e in (("c", c), ("d", d)):
                iv, ir, idata = (getattr(self, f"{side}_{x}") for x in ("i_valid", "i_ready", "i_data"))
                ov, orr, odata = (getattr(self, f"{side}_{x}") for x in ("o_valid", "o_ready", "o_data"))
                m.d.comb += [
                    e.i_valid.eq(iv[j] & open_),
                    ir[j].eq(e.i_ready & open_),
                    e.i_data.eq(idata[32 * j:32 * j + 32]),
                    ov[j].eq(e.o_valid),
                    e.o_ready.eq(orr[j]),
                    odata[32 * j:32 * j + 32].eq(e.o_data),
                ]
        return m
