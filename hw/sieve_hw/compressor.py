"""Compressor engine: one fp32 value per clock in, one custom-float code per clock out.

Datapath (equal bit for bit to :func:`sieve.encode`; stage A, register, stage B):

A. normalise fp32 subnormal inputs (leading-zero count + left shift), so every nonzero input
   is ``2^(e_v-127) * 1.g``; the code exponent ``ec = e_v - adj`` says everything about
   range: ``ec <= 0`` is the underflow path, ``ec == 0`` is ``[Min/2, Min)``; one comparator
   against the calculator's ``ovf_bits`` detects overflow.  Build one pre-shift word ``P``
   and shift amount: normal values ``{ec, g}`` by ``man_shift``; the subnormal path
   ``{1, g}`` by ``man_shift + 1 - ec``; subnormals off: ``1 << 23`` (round up to Min) or 0.
B. one right shifter that also yields guard and sticky bits, then a single incrementer adds
   the rounding (nearest-even or truncation), so a carry walks into the exponent for free;
   the same incrementer turns the format's overflow code (``ovf_mag``) into Inf or NaN
   (+1) when needed; OR in the ieee quiet-NaN bit, clear the magnitude of unsigned
   negatives and of NaN in formats without a NaN code, place the sign (one-hot constant).

Ports (``wiring.Component``): ``i_valid``/``i_ready``/``i_data`` (fp32 bits), ``o_valid``/
``o_ready``/``o_data`` (code, right-aligned, bits above the width are 0) and, for the
configurable engine, ``k`` (:data:`sieve_hw.constants.CONST_LAYOUT`).  Latency:
:data:`LATENCY` clock cycles from acceptance to ``o_valid``.

Deliberate deviation from the emulator (documented in ``sim/golden.py``): an fp32-subnormal
input that rounds above Max (only formats whose Max is below 2^-126) overflows as the Format
spec says; the emulator currently returns an out-of-range code there.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed

from .lzc import lzc23
from .engine import LATENCY, StreamEngine

__all__ = ["Compressor", "LATENCY"]


def _shift_right_grs(m: Module, word, amt, name: str):
    """``word >> amt`` plus guard bit ``word[amt-1]`` and sticky ``|word[amt-2:0]``."""
    w = Cat(Const(0, 1), word)  # bit 0 is the guard slot
    sticky = Const(0, 1)
    for i, step in enumerate((16, 8, 4, 2, 1)):
        sel = amt[4 - i]
        nxt = Signal(len(w), name=f"{name}_s{step}")
        m.d.comb += nxt.eq(Mux(sel, w >> step, w))
        sticky = sticky | (sel & w[:step].any())
        w = nxt
    return w[1:], w[0], sticky


def compress_stage_a(m: Module, x, k):
    """Classification and the pre-shift word; returns a dict of signals for stage B.

    fp32 subnormal inputs are normalised first (leading-zero count, left shift), so every
    nonzero input is ``2^(e_v-127) * 1.g`` and the code exponent is ``ec = e_v - adj``:
    below the smallest normal iff ``ec <= 0``, in ``[Min/2, Min)`` iff ``ec == 0``.
    """
    s = x[31]
    mag = x[:31]
    ex = x[23:31]
    f = x[:23]
    ex_zero = Signal(name="c_ex_zero")
    m.d.comb += ex_zero.eq(ex == 0)
    ex_ones = ex == 0xFF
    f_nz = f.any()
    is_nan = ex_ones & f_nz
    is_inf = ex_ones & ~f_nz
    zero_in = ex_zero & ~f_nz

    lz = lzc23(m, f, "c_lz")
    nsh = Signal(5, name="c_nsh")
    m.d.comb += nsh.eq(Mux(ex_zero, lz + 1, 0))
    g = Signal(23, name="c_g")  # normalised mantissa (hidden bit dropped)
    m.d.comb += g.eq(f << nsh)
    e_v = Signal(signed(10), name="c_ev")
    m.d.comb += e_v.eq(Mux(ex_zero, -lz, ex))
    ec = Signal(signed(11), name="c_ec")
    m.d.comb += ec.eq(e_v - k.adjusted_bias)

    low = Signal(name="c_low")
    m.d.comb += low.eq((ec <= 0) | zero_in)
    half = Signal(name="c_half")
    m.d.comb += half.eq((ec == 0) & ~zero_in & k.rne)
    ovf = Signal(name="c_ovf")
    m.d.comb += ovf.eq(mag > k.ovf_bits)

    r = Signal(signed(12), name="c_r")
    m.d.comb += r.eq(k.kr - ec)
    amt_low = Mux(r[5:].any(), 31, r[:5])  # r > 0 on the underflow path
    lowsub = low & k.sub_en

    p = Signal(31, name="c_p")
    keep_g = ~low | k.sub_en
    hidden = Mux(low, Mux(k.sub_en, ~zero_in, half), ec[0])
    m.d.comb += p.eq(Cat(g & keep_g.replicate(23), hidden, ec[1:8] & (~low).replicate(7)))
    amt = Signal(5, name="c_amt")
    m.d.comb += amt.eq(Mux(lowsub, amt_low, k.man_shift))

    uneg = Signal(name="c_uneg")  # a negative input of an unsigned format: 0 unless it is a NaN
    m.d.comb += uneg.eq(~k.signed & s)
    nan_sel = Signal(name="c_nan_sel")
    m.d.comb += nan_sel.eq(is_nan | (~uneg & ((is_inf & k.inf_nan) | (~ex_ones & ovf & k.ovf_nan))))
    selk = Signal(name="c_selk")  # the code is a constant of the format: ovf_mag (+1)
    m.d.comb += selk.eq(nan_sel | is_inf | ovf)
    bump = Signal(name="c_bump")  # Inf = Max + 1 (ieee), NaN = Max + 1 (fn) or Inf + nan_bit (ieee)
    m.d.comb += bump.eq(Mux(nan_sel, k.bump_nan, is_inf & k.bump_inf))
    kill = Signal(name="c_kill")  # magnitude forced to 0: unsigned negatives, NaN without a NaN code
    m.d.comb += kill.eq(Mux(nan_sel, k.nan_zero, uneg))
    lsb0 = Signal(name="c_lsb0")  # tie parity when man_bits == 0 (the emulator's rule)
    m.d.comb += lsb0.eq(ex_zero | ex[0])
    # fnuz has no -0: a result that is zero loses its sign (known here, or once rounding is known)
    zfa = Signal(name="c_zfa")
    zfb = Signal(name="c_zfb")
    m.d.comb += [zfa.eq(k.fnuz & ~selk & (zero_in | (low & ~k.sub_en & ~half))),
                 zfb.eq(k.fnuz & ~selk & lowsub & (amt_low >= 24))]
    return {"s": s, "p": p, "amt": amt, "nan_sel": nan_sel, "selk": selk, "bump": bump, "kill": kill,
            "lsb0": lsb0, "zfa": zfa, "zfb": zfb}


def compress_stage_b(m: Module, a: dict, k):
    """Shift, round (or take the format's constant), add NaN bit and sign: the 32-bit code."""
    t, guard, sticky = _shift_right_grs(m, a["p"], a["amt"], "c_sh")
    lsb = Mux(k.m0, a["lsb0"], t[0])
    round_up = Signal(name="c_round_up")
    m.d.comb += round_up.eq(k.rne & guard & (sticky | lsb))
    mag = Signal(32, name="c_mag")
    m.d.comb += mag.eq(Mux(a["selk"], k.ovf_mag, t) + Mux(a["selk"], a["bump"], round_up))
    s = a["s"]
    nan_sign = (k.nan_sign_keep & s) | (k.nan_sign_inv & ~s) | k.nan_sign_one
    sign_out = Mux(a["nan_sel"], nan_sign, s & ~(a["zfa"] | (a["zfb"] & ~round_up)))
    out = Signal(32, name="c_out")
    m.d.comb += out.eq(((mag | (k.nan_bit & a["nan_sel"].replicate(32))) & ~a["kill"].replicate(32))
                       | (k.sign_onehot & sign_out.replicate(32)))
    return out


class Compressor(StreamEngine):
    """fp32 → code engine (configurable via ``k``, or ``fixed_format`` baked in)."""

    prefix = "c"
    stage_a = staticmethod(compress_stage_a)
    stage_b = staticmethod(compress_stage_b)
