"""Leading-zero counter and a windowed right shifter: gate-frugal helpers (not components).

A priority chain of multiplexers would cost ~5x the gates; the tree combines halves as
``zero = zl & zr``, ``count = zl ? {1, cr} : {0, cl}``.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value

__all__ = ["lzc23", "shr_window"]


def _tree(bits: list[Value]) -> tuple[Value, Value]:
    """(all zero, leading zeros) of ``bits`` given MSB first; len(bits) is a power of two."""
    if len(bits) == 1:
        return ~bits[0], Const(0, 0)
    half = len(bits) // 2
    zl, cl = _tree(bits[:half])
    zr, cr = _tree(bits[half:])
    if len(cl) == 0:  # two single bits: the count is 1 exactly when the left one is 0
        return zl & zr, zl
    return zl & zr, Cat(Mux(zl, cr, cl), zl)


def lzc23(m: Module, v: Value, name: str, plus_one: bool = False) -> Signal:
    """Leading zeros of a 23-bit value counted from bit 22; 23 when the value is zero.

    ``plus_one``: the count + 1 (1..24), computed as the leading zeros of ``{0, v}`` (no adder).
    """
    if plus_one:  # 32 bits, MSB = 0 then v[22..0]; the padding stops the count at 24
        padded = Cat(Const(0xFF, 8), v, Const(0, 1))
    else:  # 32 bits, MSB = v[22]; the padding stops the count at 23
        padded = Cat(Const(0x1FF, 9), v)
    bits = [padded[i] for i in reversed(range(32))]
    _, count = _tree(bits)
    lz = Signal(5, name=name)
    m.d.comb += lz.eq(count)
    return lz


def shr_window(m: Module, v: Value, amt: Value, out_width: int, name: str) -> Signal:
    """``(v >> amt)[:out_width]`` as a log shifter that builds only the bits still needed.

    Stages go from the largest step down; after the stage of step ``s`` only the lowest
    ``out_width + s - 1`` bits can still reach the output, so a 9-bit window of a 32-bit
    word costs ~70 multiplexers instead of a full 32-bit shifter's ~160.
    """
    v = Value.cast(v)
    n = len(amt)
    cur = [v[i] if i < len(v) else Const(0, 1) for i in range(len(v))]
    for b in reversed(range(n)):
        step = 1 << b
        keep = out_width + step - 1
        sel = amt[b]
        nxt = []
        for i in range(min(keep, len(cur))):
            hi = cur[i + step] if i + step < len(cur) else Const(0, 1)
            nxt.append(Mux(sel, hi, cur[i]))
        cur = nxt
    out = Signal(out_width, name=name)
    m.d.comb += out.eq(Cat(*cur[:out_width]))
    return out
