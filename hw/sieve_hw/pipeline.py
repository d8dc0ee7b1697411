"""Stream plumbing shared by the engines: a stall-all pipeline with valid/ready.

Every register stage advances together when the last stage is empty or its value is taken
(``en = ~o_valid | o_ready``); upstream sees ``i_ready = en``.  With ``o_ready`` held high
the engine therefore accepts and delivers one value per clock with no bubbles; a stall
freezes every stage, so nothing is lost, duplicated or reordered.  Data registers have no
reset (a reset only clears the valid bits), which keeps them plain enable flip-flops.
"""

from __future__ import annotations

from amaranth import Module, Signal, Value

__all__ = ["Pipeline"]


class Pipeline:
    """Builder for an ``n``-register stall-all pipeline inside module ``m``."""

    def __init__(self, m: Module, i_valid: Value, o_ready: Value, stages: int, name: str = "p"):
        if stages < 1:
            raise ValueError(f"a pipeline needs at least one register stage, got {stages}")
        self.m = m
        self.en = Signal(name=f"{name}_en")
        self.valid = [Signal(name=f"{name}_valid{i}") for i in range(stages)]
        m.d.comb += self.en.eq(~self.valid[-1] | o_ready)
        with m.If(self.en):
            m.d.sync += self.valid[0].eq(i_valid)
            for a, b in zip(self.valid, self.valid[1:]):
                m.d.sync += b.eq(a)
        self._n = 0
        self._name = name

    @property
    def o_valid(self) -> Signal:
        return self.valid[-1]

    @property
    def busy(self) -> Value:
        """High while any stage holds a value (the pipeline is not empty)."""
        out = self.valid[0]
        for v in self.valid[1:]:
            out = out | v
        return out

    def reg(self, value: Value, name: str | None = None) -> Signal:
        """A data register of ``value`` that loads when the pipeline advances."""
        self._n += 1
        value = Value.cast(value)
        r = Signal(value.shape(), name=name or f"{self._name}_r{self._n}", reset_less=True)
        with self.m.If(self.en):
            self.m.d.sync += r.eq(value)
        return r
