"""Decompressor engine: one custom-float code per clock in, one fp32 value per clock out.

Datapath (equal bit for bit to :func:`sieve.decode`, including the canonical quiet NaN
0x7FC00000/0xFFC00000 with the code's sign), three steps; the pipeline depth (``stages``,
1-3) decides after which of them a register rank sits (:data:`Decompressor.CUTS`):

0. ``fields``: a 9-bit window shifter brings ``{sign, exponent field}`` down from bit
   ``M``; the mantissa is masked, its leading zeros counted.
1. ``exponent``: Inf/NaN/zero per the convention; two adders side by side give the fp32
   exponent: ``e_code + adj`` for normal codes, ``adj + man_shift - lz`` for subnormal codes
   (normalised); the fp32-subnormal test and shift come from comparisons with constants.  Results below 2^-126 become fp32 subnormals: the shift is capped
   (subnormal codes) or shortened by ``1 - e`` (normal codes).
2. ``assemble``: one left shifter puts the significand in place; the NaN quiet bit is ORed in.

Depths: 1 rank on the input code (least area: 32 flip-flops, narrower than any cut inside),
2 (the default; meets 100 MHz on iCE40 HX8K) after ``fields`` and ``exponent``, 3 adds an
output register.

Ports as the compressor's with data directions swapped: ``i_data`` is the right-aligned
code (bits above the format width are ignored), ``o_data`` the fp32 bit pattern.
Latency: ``stages`` clock cycles (``Decompressor(stages=...).latency``).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal

from .lzc import lzc23, shr_window
from .engine import StreamEngine

__all__ = ["Decompressor"]


def fields(m: Module, sig: dict, k) -> dict:
    """Step 0: field extraction, masked mantissa and its leading zeros, raw classification."""
    code = sig["x"]
    win = shr_window(m, code, k.exp_shift, 9, "d_win")  # {sign?, exponent field} at bit 0
    e_code = Signal(8, name="d_ecode")
    m.d.comb += e_code.eq(win[:8] & k.exp_mask)
    sign = Signal(name="d_sign")
    m.d.comb += sign.eq((win & k.sign_win).any())
    ez = Signal(name="d_ez")
    m.d.comb += ez.eq(e_code == 0)
    efull = Signal(name="d_efull")
    m.d.comb += efull.eq(e_code == k.exp_mask)
    mm = Signal(23, name="d_mm")
    m.d.comb += mm.eq(code[:23] & k.man_mask)
    man_full = Signal(name="d_man_full")
    m.d.comb += man_full.eq((code[:23] | ~k.man_mask).all())
    # leading zeros of {0, mm}: lz + 1 directly (1..24), the normalising shift, no incrementer;
    # 24 means mm == 0, so the count also gives man_nz (24 = 0b11000 is the only count >= 24)
    lz1 = lzc23(m, mm, "d_lz1", plus_one=True)
    man_nz = Signal(name="d_man_nz")
    m.d.comb += man_nz.eq(~(lz1[4] & lz1[3]))
    return {"e_code": e_code, "sign": sign, "ez": ez, "efull": efull, "mm": mm, "man_nz": man_nz,
            "man_full": man_full, "lz1": lz1}


def exponent(m: Module, sig: dict, k) -> dict:
    """Step 1: the fp32 exponent, the significand and its left-shift amount."""
    e_code, ez, efull, mm, lz1 = sig["e_code"], sig["ez"], sig["efull"], sig["mm"], sig["lz1"]
    man_nz, sign = sig["man_nz"], sig["sign"]
    sub = Signal(name="d_sub")  # subnormal code: normalise
    m.d.comb += sub.eq(ez & man_nz & k.sub_en)
    # the fp32 exponent (low 8 bits: the out-of-range cases are zeroed or capped below):
    # e_code + adj for normal codes, (dec_k + 2) + ~lz1 = dec_k - lz for subnormal codes
    # (~lz1 = -lz - 2); both adders run beside each other and `sub` only picks one, so no
    # adder waits for the classification (the lane unit's clock hinges on this step)
    e_norm = Signal(8, name="d_enorm")
    e_subn = Signal(8, name="d_esubn")
    m.d.comb += [e_norm.eq(e_code + k.adjusted_bias),
                 e_subn.eq(k.dec_k2 + Cat(~lz1, Const(0x7, 3)))]
    e_low = Mux(sub, e_subn, e_norm)
    # the value is an fp32 subnormal (the fp32 exponent <= 0): e_code <= -adj for normal
    # codes; lz >= dec_k for subnormal codes, which is `cap` (lz1 <= 23 < dec_k when dec_k > 24)
    cap = lz1 > k.dec_kc  # lz >= dec_kc
    tiny = Signal(name="d_tiny")
    m.d.comb += tiny.eq(Mux(sub, cap, e_code <= k.nadj))
    amt = Signal(5, name="d_amt")
    # man_shift - 1 + e[:5] with e = e_code + adj here: e_code + (dec_k - 1), an
    # adder beside the exponent adders instead of after one (the constant from the calculator)
    amt_tiny = Signal(5, name="d_amt_tiny")
    m.d.comb += amt_tiny.eq(e_code[:5] + k.dec_km1)
    with m.If(sub):
        m.d.comb += amt.eq(Mux(cap, k.dec_kc, lz1))
    with m.Elif(tiny):
        m.d.comb += amt.eq(amt_tiny)
    with m.Else():
        m.d.comb += amt.eq(k.man_shift)

    is_inf = k.ieee & efull & ~man_nz
    is_nan = Signal(name="d_is_nan")
    m.d.comb += is_nan.eq((k.ieee & efull & man_nz) | (k.fn & efull & sig["man_full"]) | (k.fnuz & sign & ez & ~man_nz))
    zero = ez & ~sub  # +-0 (or a subnormal code with subnormals off)
    special = is_inf | is_nan
    e_out = Signal(8, name="d_eout")
    m.d.comb += e_out.eq(Mux(special, 0xFF, Mux(zero | tiny, 0, e_low)))
    sig_ = Signal(24, name="d_sig")  # significand with the hidden bit of normal codes
    m.d.comb += sig_.eq(Mux(zero | is_nan | is_inf, 0, mm | (k.m_onehot & (~ez).replicate(24))))
    return {"sig": sig_, "amt": amt, "sign": sign, "e_out": e_out, "is_nan": is_nan}


def assemble(m: Module, sig: dict, k) -> dict:
    """Step 2: shift the significand into place; assemble the fp32 bit pattern."""
    shifted = Signal(23, name="d_shifted")
    m.d.comb += shifted.eq(sig["sig"] << sig["amt"])
    f_out = shifted | Cat(Const(0, 22), sig["is_nan"])
    out = Signal(32, name="d_out")
    m.d.comb += out.eq(Cat(f_out, sig["e_out"], sig["sign"]))
    return {"out": out}


class Decompressor(StreamEngine):
    """code → fp32 engine (configurable via ``k``, or ``fixed_format`` baked in)."""

    prefix = "d"
    STEPS = (fields, exponent, assemble)
    #: stages -> the steps followed by a register rank (see :mod:`sieve_hw.engine`)
    CUTS = {1: (-1,), 2: (0, 1), 3: (0, 1, 2)}
    DEFAULT_STAGES = 2
