"""The streaming shell both conversion engines share.

An engine is two combinational halves around one register stage: *stage A* classifies the
input and computes what stage B needs, *stage B* assembles the output from the registered
values.  The shell owns the signature (valid/ready in and out, the constant record ``k``
unless the format is baked in) and the stall-all :class:`~.pipeline.Pipeline`, so the
compressor and decompressor differ only in their two stage functions.
"""

from __future__ import annotations

from typing import Callable, ClassVar

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .constants import CONST_LAYOUT, fixed_constants
from .pipeline import Pipeline

__all__ = ["StreamEngine", "LATENCY"]

#: Clock cycles from acceptance to ``o_valid``: one register stage between stage A and
#: stage B; ``o_data`` is stage B's logic on that register (no output register: a second
#: stage was measured to add ~900 transistors for +4 MHz, the long path being stage A).
LATENCY = 1


class StreamEngine(wiring.Component):
    """One value per clock through ``stage_a`` → register → ``stage_b``.

    Subclasses set ``prefix`` (signal-name prefix) and the two stage functions:
    ``stage_a(m, data, k) -> dict of signals`` and ``stage_b(m, registered, k) -> Value``.
    """

    prefix: ClassVar[str]
    stage_a: ClassVar[Callable]
    stage_b: ClassVar[Callable]

    def __init__(self, fixed_format=None):
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
        p = Pipeline(m, self.i_valid, self.o_ready, LATENCY, self.prefix)
        a = type(self).stage_a(m, self.i_data, k)
        a_r = {name: p.reg(v, f"{self.prefix}_a_{name}") for name, v in a.items()}
        out = type(self).stage_b(m, a_r, k)
        m.d.comb += [self.i_ready.eq(p.en), self.o_valid.eq(p.o_valid), self.busy.eq(p.busy),
                     self.o_data.eq(out)]
        return m
