"""Compressor engine: one fp32 value per clock in, one custom-float code per clock out.

Datapath (equal bit for bit to :func:`sieve.encode`), five combinational steps; the
pipeline depth (``stages``, 1-4) decides after which of them a register rank sits
(:data:`Compressor.CUTS`, see :mod:`sieve_hw.engine`):

0. ``inspect``: classify the fp32 input, leading-zero count of its fraction, one comparator
   against the calculator's ``ovf_bits`` for overflow.
1. ``normalise``: fp32 subnormals are shifted left so every nonzero input is
   ``2^(e_v-127) * 1.g``; the code exponent ``ec = e_v - adj`` says everything about range
   (``ec <= 0``: underflow path, ``ec == 0``: ``[Min/2, Min)``).  Depths >= 3 use a form
   whose exponent carry chains run side by side (:func:`normalise_fast`).
2. ``classify``: one pre-shift word ``P`` and shift amount: normal values ``{ec, g}`` by
   ``man_shift``; the subnormal path ``{1, g}`` by ``man_shift + 1 - ec``; subnormals off:
   ``1 << 23`` (round up to Min) or 0; a format constant (``ovf_mag``, or 0 for a killed
   magnitude) enters unshifted.
3. ``shift``: one right shifter that also yields guard and sticky bits.
4. ``round_assemble``: a single incrementer adds the rounding (nearest-even or truncation),
   so a carry walks into the exponent for free, or turns ``ovf_mag`` into Inf or NaN (+1);
   OR in the ieee quiet-NaN bit and the sign (one-hot constant).

Depths (iCE40 HX8K, measured by ``make synth``): 1 rank after ``classify`` (least area),
2 after ``normalise`` and ``shift``, 3 after ``normalise``/``classify``/``shift``, 4 (the
default) after every step but the last — the depth that meets 100 MHz.

Ports (``wiring.Component``): ``i_valid``/``i_ready``/``i_data`` (fp32 bits), ``o_valid``/
``o_ready``/``o_data`` (code, right-aligned, bits above the width are 0) and, for the
configurable engine, ``k`` (:data:`sieve_hw.constants.CONST_LAYOUT`).  Latency: ``stages``
clock cycles from acceptance to ``o_valid`` (``Compressor(stages=...).latency``).

Deliberate deviation from the emulator (documented in ``sim/golden.py``): an fp32-subnormal
input that rounds above Max (only formats whose Max is below 2^-126) overflows as the Format
spec says; the emulator currently returns an out-of-range code there.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed

from .contracts import contract as get_contract, fp32_subnormals_give_zero
from .lzc import lzc23
from .engine import StreamEngine

__all__ = ["Compressor"]


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


def inspect(m: Module, sig: dict, k, count_zeros: bool = True) -> dict:
    """Step 0: classify the fp32 input, count the leading zeros of its fraction, compare for overflow."""
    x = sig["x"]
    ex = x[23:31]
    f = x[:23]
    ex_zero = Signal(name="c_ex_zero")
    m.d.comb += ex_zero.eq(ex == 0)
    ex_ones = Signal(name="c_ex_ones")
    m.d.comb += ex_ones.eq(ex == 0xFF)
    f_nz = Signal(name="c_f_nz")
    m.d.comb += f_nz.eq(f.any())
    lz = lzc23(m, f, "c_lz") if count_zeros else None
    ovf = Signal(name="c_ovf")
    m.d.comb += ovf.eq(x[:31] > k.ovf_bits)
    lsb0 = Signal(name="c_lsb0")  # tie parity when man_bits == 0 (the emulator's rule)
    m.d.comb += lsb0.eq(ex_zero | ex[0])
    out = {"s": x[31], "f": f, "ex": ex, "ex_zero": ex_zero, "lz": lz, "ex_ones": ex_ones, "f_nz": f_nz,
           "zero_in": ex_zero & ~f_nz, "ovf": ovf, "lsb0": lsb0}
    return out if count_zeros else {n: v for n, v in out.items() if n != "lz"}


def inspect_plain(m: Module, sig: dict, k) -> dict:
    """Step 0 without the leading-zero count (for :func:`unnormalised`)."""
    return inspect(m, sig, k, count_zeros=False)


def _normalised_mantissa(m: Module, sig: dict):
    """The fp32 mantissa shifted left past its leading zeros when the input is an fp32
    subnormal (hidden bit dropped), so every nonzero input reads ``2^(e_v-127) * 1.g``."""
    nsh = Signal(5, name="c_nsh")
    m.d.comb += nsh.eq(Mux(sig["ex_zero"], sig["lz"] + 1, 0))
    g = Signal(23, name="c_g")
    m.d.comb += g.eq(sig["f"] << nsh)
    return g


def _step1_outputs(m: Module, sig: dict, g, ec, low, r) -> dict:
    """What step 1 hands on, the same in both forms: the underflow shift amount clamped to 31
    (``r > 0`` on the underflow path) and the signals step 2 reads."""
    amt_low = Signal(5, name="c_amt_low")
    m.d.comb += amt_low.eq(Mux(r[5:].any(), 31, r[:5]))
    out = {n: v for n, v in sig.items() if n not in ("f", "ex", "ex_zero", "lz")}
    out.update(g=g, ec=ec[:9], low=low, amt_low=amt_low)
    return out


def normalise(m: Module, sig: dict, k) -> dict:
    """Step 1 (area-lean form): normalise fp32 subnormals (left shift by the leading-zero count
    + 1), so every nonzero input is ``2^(e_v-127) * 1.g``; the code exponent ``ec = e_v - adj``
    and what follows from it by serial arithmetic (fewest gates)."""
    ex_zero, lz = sig["ex_zero"], sig["lz"]
    g = _normalised_mantissa(m, sig)
    e_v = Signal(signed(10), name="c_ev")
    m.d.comb += e_v.eq(Mux(ex_zero, -lz, sig["ex"]))
    ec = Signal(signed(11), name="c_ec")
    m.d.comb += ec.eq(e_v - k.adjusted_bias)
    low = Signal(name="c_low")  # ec <= 0: the underflow path
    m.d.comb += low.eq((ec <= 0) | sig["zero_in"])
    r = Signal(signed(12), name="c_r")
    m.d.comb += r.eq(k.kra - e_v)  # = man_shift + 1 - ec
    return _step1_outputs(m, sig, g, ec, low, r)


def normalise_fast(m: Module, sig: dict, k) -> dict:
    """Step 1 (fast form, deep pipelines): as :func:`normalise`, but the exponent arithmetic
    runs beside the shifter with no carry chain feeding another."""
    ex_zero, lz = sig["ex_zero"], sig["lz"]
    g = _normalised_mantissa(m, sig)
    # The input exponent e_v is ex (normal) or -lz (fp32 subnormal).  What follows from the
    # code exponent ec = e_v - adj is computed beside the shifter, each quantity by one adder
    # or comparator on multiplexed operands (-lz = ~lz + 1 folded into the constants), so no
    # carry chain feeds another.
    ex_s = Cat(sig["ex"], Const(0, 2)).as_signed()  # 10-bit signed
    opa = Signal(signed(10), name="c_opa")  # e_v - 1 (subnormal) or e_v (normal)
    m.d.comb += opa.eq(Mux(ex_zero, Cat(~lz, Const(0x1F, 5)).as_signed(), ex_s))
    ec = Signal(signed(11), name="c_ec")
    m.d.comb += ec.eq(opa + Mux(ex_zero, k.nadj1, k.nadj))
    low = Signal(name="c_low")  # ec <= 0: the underflow path
    m.d.comb += low.eq(Mux(ex_zero, opa < k.adjusted_bias, opa <= k.adjusted_bias) | sig["zero_in"])
    r = Signal(signed(12), name="c_r")  # man_shift + 1 - ec = kra - e_v
    m.d.comb += r.eq(Mux(ex_zero, Cat(lz, Const(0, 5)).as_signed(), ~ex_s) + Mux(ex_zero, k.kra, k.kra1))
    return _step1_outputs(m, sig, g, ec, low, r)


def unnormalised(m: Module, sig: dict, k) -> dict:
    """Step 1 for formats without subnormals and with bias <= 125 (no leading-zero count).

    Every fp32 subnormal (< 2^-126) is then below Min/2 = 2^-bias, so its code is a zero: read
    with ``e_v = ex = 0`` its code exponent ``ec = bias - 127`` is below -1, which puts it on
    the underflow path and outside [Min/2, Min) (``ec == 0``), where ``classify`` without
    subnormals gives magnitude 0.  No input needs the normalising shift.
    """
    e_v = Signal(signed(10), name="c_ev")
    m.d.comb += e_v.eq(sig["ex"])
    ec = Signal(signed(11), name="c_ec")
    m.d.comb += ec.eq(e_v - k.adjusted_bias)
    low = Signal(name="c_low")  # ec <= 0: the underflow path
    m.d.comb += low.eq((ec <= 0) | sig["zero_in"])
    r = Signal(signed(12), name="c_r")
    m.d.comb += r.eq(k.kra - e_v)  # = man_shift + 1 - ec (unused without subnormals)
    return _step1_outputs(m, sig, sig["f"], ec, low, r)


def classify(m: Module, sig: dict, k) -> dict:
    """Step 2: range classes, the pre-shift word and its shift amount, specials.

    The code exponent ``ec = e_v - adj`` says everything about range: ``ec <= 0`` is the
    underflow path, ``ec == 0`` is ``[Min/2, Min)``; the calculator's ``ovf_bits`` gave
    overflow.  Normal values: ``{ec, g}`` by ``man_shift``; the subnormal path ``{1, g}``
    by ``man_shift + 1 - ec``; subnormals off: ``1 << 23`` (round up to Min) or 0.
    """
    s, g, zero_in, ovf = sig["s"], sig["g"], sig["zero_in"], sig["ovf"]
    ec, low, amt_low = sig["ec"], sig["low"], sig["amt_low"]
    half = Signal(name="c_half")  # ec == 0, i.e. [Min/2, Min): low and ec = 0 mod 512 (|ec| < 512)
    m.d.comb += half.eq(low & (ec == 0) & ~zero_in & k.rne)
    is_nan = sig["ex_ones"] & sig["f_nz"]
    is_inf = sig["ex_ones"] & ~sig["f_nz"]
    lowsub = low & k.sub_en

    uneg = Signal(name="c_uneg")  # a negative input of an unsigned format: 0 unless it is a NaN
    m.d.comb += uneg.eq(~k.signed & s)
    nan_sel = Signal(name="c_nan_sel")
    m.d.comb += nan_sel.eq(is_nan | (~uneg & ((is_inf & k.inf_nan) | (~sig["ex_ones"] & ovf & k.ovf_nan))))
    selk = Signal(name="c_selk")  # the code is a constant of the format: ovf_mag (+1)
    m.d.comb += selk.eq(nan_sel | is_inf | ovf)
    kill = Signal(name="c_kill")  # magnitude forced to 0: unsigned negatives, NaN without a NaN code
    m.d.comb += kill.eq(Mux(nan_sel, k.nan_zero, uneg))
    # the format's constant (or 0 when killed) enters the shifter unshifted: amt = 0 gives no
    # guard/sticky, so the incrementer only adds the bump (Inf = Max + 1, NaN = Max + 1 or Inf)
    const = Signal(31, name="c_const")
    m.d.comb += const.eq(k.ovf_mag & (~kill).replicate(31))
    bump = Signal(name="c_bump")
    m.d.comb += bump.eq(~kill & Mux(nan_sel, k.bump_nan, is_inf & k.bump_inf))
    fixed = Signal(name="c_fixed")
    m.d.comb += fixed.eq(selk | kill)

    p = Signal(31, name="c_p")
    keep_g = ~low | k.sub_en
    hidden = Mux(low, Mux(k.sub_en, ~zero_in, half), ec[0])
    m.d.comb += p.eq(Mux(fixed, const, Cat(g & keep_g.replicate(23), hidden, ec[1:8] & (~low).replicate(7))))
    amt = Signal(5, name="c_amt")
    m.d.comb += amt.eq(Mux(fixed, 0, Mux(lowsub, amt_low, k.man_shift)))

    # fnuz has no -0: a result that is zero loses its sign (known here, or once rounding is known)
    zfa = Signal(name="c_zfa")
    zfb = Signal(name="c_zfb")
    m.d.comb += [zfa.eq(k.fnuz & ~selk & (zero_in | (low & ~k.sub_en & ~half))),
                 zfb.eq(k.fnuz & ~selk & lowsub & (amt_low >= 24))]
    nan_or = Signal(name="c_nan_or")  # OR in the ieee quiet-NaN bit
    m.d.comb += nan_or.eq(nan_sel & ~kill)
    return {"s": s, "p": p, "amt": amt, "nan_sel": nan_sel, "nan_or": nan_or, "bump": bump,
            "lsb0": sig["lsb0"], "zfa": zfa, "zfb": zfb}


def shift(m: Module, sig: dict, k) -> dict:
    """Step 3: the right shifter with guard and sticky bits."""
    t, guard, sticky = _shift_right_grs(m, sig["p"], sig["amt"], "c_sh")
    out = {n: v for n, v in sig.items() if n not in ("p", "amt")}
    out.update(t=t, guard=guard, sticky=sticky)
    return out


def round_assemble(m: Module, sig: dict, k) -> dict:
    """Step 4: round (or take the format's constant), add NaN bit and sign: the 32-bit code.

    A single incrementer adds the rounding (nearest-even or truncation), so a carry walks
    into the exponent for free; the same incrementer turns the format's overflow code
    (``ovf_mag``) into Inf or NaN (+1) when needed.
    """
    t = sig["t"]
    lsb = Mux(k.m0, sig["lsb0"], t[0])
    round_up = Signal(name="c_round_up")
    m.d.comb += round_up.eq(k.rne & sig["guard"] & (sig["sticky"] | lsb))
    mag = Signal(31, name="c_mag")
    m.d.comb += mag.eq(t + (round_up | sig["bump"]))
    s = sig["s"]
    nan_sign = (k.nan_sign_keep & s) | (k.nan_sign_inv & ~s) | k.nan_sign_one
    sign_out = Mux(sig["nan_sel"], nan_sign, s & ~(sig["zfa"] | (sig["zfb"] & ~round_up)))
    out = Signal(32, name="c_out")
    m.d.comb += out.eq(mag | (k.nan_bit & sig["nan_or"].replicate(31)) | (k.sign_onehot & sign_out.replicate(32)))
    return {"out": out}


class Compressor(StreamEngine):
    """fp32 → code engine (configurable via ``k``, or ``fixed_format`` baked in)."""

    prefix = "c"
    STEPS = (inspect, normalise, classify, shift, round_assemble)
    #: stages -> the steps followed by a register rank (see :mod:`sieve_hw.engine`)
    CUTS = {1: (2,), 2: (1, 3), 3: (1, 2, 3), 4: (0, 1, 2, 3)}
    #: 4 ranks: the shallowest depth that meets 100 MHz on iCE40 HX8K (1 rank: least area)
    DEFAULT_STAGES = 4

    @classmethod
    def steps_for(cls, stages: int, contract: str = "full", fixed_format=None):
        """Deep pipelines (3+ ranks) take step 1's fast form (exponent arithmetic beside the
        normalising shift); the other steps are the same at every depth.  A contract whose
        family never needs fp32 subnormals normalised, or a baked-in format for which every
        fp32 subnormal gives a zero code, takes :func:`unnormalised` (no leading-zero count, no
        normalising shift) at every depth."""
        if fixed_format is not None:
            unneeded = fp32_subnormals_give_zero(fixed_format)
        else:
            unneeded = not get_contract(contract).normalises_fp32_subnormals
        if unneeded:
            return (inspect_plain, unnormalised) + cls.STEPS[2:]
        if stages >= 3:
            return cls.STEPS[:1] + (normalise_fast,) + cls.STEPS[2:]
        return cls.STEPS
