"""The streaming shell both conversion engines share, with a generation-time pipeline depth.

An engine's datapath is a short chain of combinational *steps* (``step(m, sig, k) -> dict``:
named signals in, named signals out; the last step returns ``{"out": <32-bit value>}``).
The shell places pipeline registers after some of the steps: which ones is the engine's
*cut table* ``CUTS[stages]`` (the step indices followed by a register; ``-1`` registers
the input itself), so the depth is a generation parameter; ``steps_for(stages)`` may swap a
step for a form that suits the depth (the compressor's exponent arithmetic beside its shifter
from 3 ranks on).  A cut after the last step is an output register.  ``stages`` = number of
register ranks = latency in clock cycles.

Depth 0 (:data:`COMBINATIONAL`, design names ``compressor_s0`` / ``decompressor_s0``) is the
datapath with no register at all, as the dissertation's engines ("the compression /
decompression takes less than one clock cycle"): ``o_valid = i_valid``, ``i_ready =
o_ready``, ``busy`` = 0.  It is what the silicon flow (``synth.asic``) times input to output;
it is not in the cut tables, so the FPGA flow and the depth sweeps leave it alone.

A configurable engine may be elaborated for a narrower run-time *contract*
(:mod:`sieve_hw.contracts`): the constants fixed over that family of formats are wired in, so
synthesis drops the logic only other formats need; the ports stay the same.

The shell owns the signature (valid/ready in and out, the constant record ``k`` unless the
format is baked in) and the stall-all :class:`~.pipeline.Pipeline`: every rank advances
together when the last one is empty or its value is taken, so one value per clock with no
bubbles, and a stall freezes everything (nothing lost, duplicated or reordered).  ``busy``
is high while any rank holds a value; the lane unit accepts a new format only when it is
low, so a format change happens at a drained boundary whatever the depth.
"""

from __future__ import annotations

from typing import Callable, ClassVar

from amaranth import Module, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .constants import CONST_LAYOUT, fixed_constants
from .contracts import contract as get_contract, pin
from .pipeline import Pipeline

__all__ = ["COMBINATIONAL", "StreamEngine", "check_stages"]

#: The depth with no register rank: the engine is its combinational datapath alone.
COMBINATIONAL = 0


def check_stages(cls, stages) -> int:
    """``stages`` resolved against the engine's cut table (``None`` = its default), or ValueError."""
    if stages is None:
        return cls.DEFAULT_STAGES
    if isinstance(stages, bool) or not isinstance(stages, int) or stages not in (COMBINATIONAL, *cls.CUTS):
        raise ValueError(f"{cls.__name__.lower()} stages must be one of {[COMBINATIONAL, *sorted(cls.CUTS)]}, "
                         f"got {stages!r}")
    return stages


class StreamEngine(wiring.Component):
    """One value per clock through ``STEPS`` with registers after the steps ``CUTS[stages]`` names.

    Subclasses set ``prefix`` (signal-name prefix), ``STEPS`` (the step functions, in order),
    ``CUTS`` (stages -> indices of the steps followed by a register rank) and
    ``DEFAULT_STAGES``.  ``latency`` (= ``stages``) is the number of clock cycles from
    acceptance to ``o_valid``.
    """

    prefix: ClassVar[str]
    STEPS: ClassVar[tuple[Callable, ...]]
    CUTS: ClassVar[dict[int, tuple[int, ...]]]
    DEFAULT_STAGES: ClassVar[int]

    @classmethod
    def steps_for(cls, stages: int, contract: str = "full", fixed_format=None) -> tuple[Callable, ...]:
        """The step functions at depth ``stages`` for ``contract`` or a baked-in format (an engine
        may trade area for speed per depth, or drop work its formats never need)."""
        return cls.STEPS

    def __new__(cls, fixed_format=None, stages: int | None = None, contract: str = "full", *, src_loc_at: int = 0):
        # refuse bad parameters before Amaranth registers the object as must-use (a refused
        # engine would otherwise warn "created but never used" when collected)
        cls.resolve_parameters(fixed_format, stages, contract)
        return super().__new__(cls, src_loc_at=src_loc_at + 1)

    @classmethod
    def resolve_parameters(cls, fixed_format, stages, contract: str) -> tuple[int, str]:
        """(depth, contract name) for the parameters, or ValueError."""
        if fixed_format is not None and contract != "full":
            raise ValueError("a fixed-format engine has no run-time contract to narrow; pass contract='full'")
        return check_stages(cls, stages), get_contract(contract).name

    def __init__(self, fixed_format=None, stages: int | None = None, contract: str = "full", *, src_loc_at: int = 0):
        self.stages, self.contract = self.resolve_parameters(fixed_format, stages, contract)
        self.latency = self.stages
        members = {
            "i_valid": In(1), "i_ready": Out(1), "i_data": In(32),
            "o_valid": Out(1), "o_ready": In(1), "o_data": Out(32),
            "busy": Out(1),
        }
        if fixed_format is None:
            members["k"] = In(CONST_LAYOUT)
        self.fixed_format = fixed_format
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        k = self.k if self.fixed_format is None else fixed_constants(m, self.fixed_format)
        if self.fixed_format is None:
            k = pin(m, k, self.contract)
        steps = type(self).steps_for(self.stages, self.contract, self.fixed_format)
        if self.stages == COMBINATIONAL:  # no register: the handshake passes straight through
            sig: dict[str, Value] = {"x": self.i_data}
            for step in steps:
                sig = step(m, sig, k)
            m.d.comb += [self.i_ready.eq(self.o_ready), self.o_valid.eq(self.i_valid), self.busy.eq(0),
                         self.o_data.eq(sig["out"])]
            return m
        cuts = type(self).CUTS[self.stages]
        p = Pipeline(m, self.i_valid, self.o_ready, self.stages, self.prefix)
        sig = {"x": self.i_data}
        if -1 in cuts:  # a rank on the input itself: the narrowest cut (32 bits)
            sig = {"x": p.reg(self.i_data, f"{self.prefix}_rin_x")}
        for i, step in enumerate(steps):
            sig = step(m, sig, k)
            if i in cuts:
                sig = {name: p.reg(v, f"{self.prefix}_r{i}_{name}") for name, v in sig.items()}
        m.d.comb += [self.i_ready.eq(p.en), self.o_valid.eq(p.o_valid), self.busy.eq(p.busy),
                     self.o_data.eq(sig["out"])]
        return m
