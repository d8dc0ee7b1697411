"""Constant calculator: Format record in, engine constants out (combinational).

This is the dissertation's shared constant calculator (§4.4.2): it turns the per-layer
format into the numbers that configure every compressor and decompressor lane, so that the
engines themselves do only per-value work.  Its outputs include exactly the eight
:class:`sieve.EngineConstants` (``min_bits`` ... ``man_shift``; a test compares them with
:func:`sieve.engine_constants` for every legal Format) plus derived constants the engines
use (thresholds, masks, the special codes), and ``error`` for an illegal record (see
:mod:`sieve_hw.config`).  All of it is a function of the record alone, so one calculator
serves any number of lanes; :mod:`sieve_hw.lanes` registers its outputs.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import FORMAT_LAYOUT

__all__ = ["CONST_LAYOUT", "DISSERTATION_FIELDS", "ConstCalc", "calc_constants", "fixed_constants"]

#: The constants that equal ``sieve.engine_constants(fmt)`` field for field.
DISSERTATION_FIELDS = ("min_bits", "half_min_bits", "max_bits", "sign_shift", "adjusted_bias",
                       "exp_mask", "exp_shift", "man_shift")

CONST_LAYOUT = data.StructLayout({
    # --- the dissertation's constants (== sieve.EngineConstants)
    "min_bits": unsigned(32),
    "half_min_bits": unsigned(32),
    "max_bits": unsigned(32),
    "sign_shift": unsigned(6),
    "adjusted_bias": signed(10),
    "exp_mask": unsigned(8),
    "exp_shift": unsigned(5),
    "man_shift": unsigned(5),
    # --- derived, compressor
    "ovf_bits": unsigned(31),          # above this magnitude: overflow
    "kra": signed(11),                 # subnormal shift = kra - e_v  (= man_shift + 1 + adj)
    "kra1": signed(11),                # kra + 1
    "nadj": signed(11),                # -adj
    "nadj1": signed(11),               # 1 - adj
    "m0": unsigned(1),                 # man_bits == 0 (tie parity from the fp32 exponent)
    "sub_en": unsigned(1),             # subnormals on and man_bits > 0
    "rne": unsigned(1),                # round to nearest even (else truncate)
    "ovf_mag": unsigned(31),           # magnitude code of an overflowing value (Max, or Inf)
    "ovf_nan": unsigned(1),            # overflow gives NaN
    "inf_nan": unsigned(1),            # an Inf input gives NaN
    "bump_inf": unsigned(1),           # Inf input code = ovf_mag + 1 (ieee, Max saturation)
    "bump_nan": unsigned(1),           # NaN code = ovf_mag + 1 (+ nan_bit): ieee w/o ovinf, fn
    "nan_bit": unsigned(31),           # 1 << (M-1) for ieee (the quiet bit), else 0
    "nan_zero": unsigned(1),           # NaN magnitude is 0 (specials none, fnuz)
    "nan_sign_keep": unsigned(1),      # NaN sign bit = input sign (ieee, fn)
    "nan_sign_inv": unsigned(1),       # NaN sign bit = inverted input sign (no NaN code)
    "nan_sign_one": unsigned(1),       # NaN sign bit = 1 (fnuz)
    "fnuz": unsigned(1),
    "signed": unsigned(1),
    "sign_onehot": unsigned(32),       # 1 << (width - 1) when signed, else 0
    # --- derived, decompressor
    "man_mask": unsigned(23),          # (1 << M) - 1
    "m_onehot": unsigned(24),          # 1 << M (the hidden bit under the code's mantissa)
    "sign_win": unsigned(9),           # 1 << exp_bits when signed: the sign in (code >> M)
    "dec_k": unsigned(10),             # adj + man_shift (>= 0 for legal formats)
    "dec_k2": unsigned(10),            # dec_k + 2
    "dec_kc": unsigned(5),             # min(dec_k, 24)
    "ieee": unsigned(1),
    "fn": unsigned(1),
})


def _fp32_bits(m: Module, name: str, e_field, mant23):
    """fp32 bit pattern of 2^(e_field-127) * (1 + mant23/2^23), e_field >= -23 (may be subnormal)."""
    out = Signal(32, name=name)
    normal = e_field >= 1
    sh = Signal(5, name=f"{name}_sh")
    m.d.comb += sh.eq(Mux(normal, 0, 1 - e_field))
    sig = Cat(mant23, Const(1, 1))
    m.d.comb += out.eq(Mux(normal, Cat(mant23, e_field[:8]), sig >> sh))
    return out


def calc_constants(m: Module, fmt) -> tuple[data.View, Signal]:
    """Add the calculator's logic for record ``fmt`` to ``m``; return (constants view, error)."""
    k = Signal(CONST_LAYOUT, name="k")
    err = Signal(name="error")
    E, M, b = fmt.exp_bits, fmt.man_bits, fmt.bias
    sgn = fmt.signed
    ieee = Signal(name="is_ieee")
    fn = Signal(name="is_fn")
    fnuz = Signal(name="is_fnuz")
    none = Signal(name="is_none")
    m.d.comb += [ieee.eq(fmt.specials == 1), fn.eq(fmt.specials == 2), fnuz.eq(fmt.specials == 3),
                 none.eq(fmt.specials == 0)]
    ov_inf, ov_nan = (fmt.overflow == 1), (fmt.overflow == 2)

    width = Signal(6, name="width")
    m.d.comb += width.eq(sgn + E + M)
    w1 = Signal(5, name="width_m1")
    m.d.comb += w1.eq(width - 1)
    adj = Signal(signed(10), name="adj")
    m.d.comb += adj.eq(127 - b)
    exp_mask = Signal(8, name="exp_mask")
    m.d.comb += exp_mask.eq((Const(1, 9) << E) - 1)
    man_all = Signal(23, name="man_all")
    m.d.comb += man_all.eq((Const(1, 24) << M) - 1)
    man_shift = Signal(5, name="man_shift_w")
    m.d.comb += man_shift.eq(23 - M)
    m0 = M == 0

    top = Signal(8, name="top_field")
    m.d.comb += top.eq(exp_mask - ieee - (fn & m0))
    max_man = Signal(23, name="max_man")
    m.d.comb += max_man.eq(man_all - (fn & ~m0))
    max_code = Signal(31, name="max_code")
    m.d.comb += max_code.eq((top << M) | max_man)
    inf_code = Signal(31, name="inf_code")
    m.d.comb += inf_code.eq(exp_mask << M)

    sub_en = Signal(name="sub_en_w")
    m.d.comb += sub_en.eq(fmt.subnormals & ~m0)

    # fp32 patterns of Max, Min, Min/2 (Min is the smallest subnormal when subnormals are on)
    max_e = Signal(signed(11), name="max_e")
    m.d.comb += max_e.eq(top + adj)
    max_bits = _fp32_bits(m, "max_bits_w", max_e, (max_man << man_shift)[:23])
    min_e = Signal(signed(11), name="min_e")
    m.d.comb += min_e.eq(Mux(sub_en, adj + 1 - M, adj + 1))
    zero23 = Const(0, 23)
    min_bits = _fp32_bits(m, "min_bits_w", min_e, zero23)
    half_min_bits = _fp32_bits(m, "half_min_bits_w", min_e - 1, zero23)

    # overflow threshold: the largest fp32 pattern whose rounded value is still <= Max.
    # ulp of Max in fp32 bit units: 2^man_shift when Max is an fp32 normal, finer below.
    ulp_sh = Signal(6, name="ulp_sh")
    m.d.comb += ulp_sh.eq(Mux(max_e >= 1, man_shift, man_shift + max_e - 1))
    ulp_m1 = Signal(24, name="ulp_m1")
    m.d.comb += ulp_m1.eq((Const(1, 25) << ulp_sh) - 1)
    half_ulp = Signal(24, name="half_ulp")
    m.d.comb += half_ulp.eq((Const(1, 25) << ulp_sh) >> 1)
    # tie parity of Max: its mantissa LSB; with M == 0 the emulator takes the fp32 exponent
    # LSB (fp32 normal Max) or the hidden one (fp32 subnormal Max, always odd)
    odd = Signal(name="max_odd")
    m.d.comb += odd.eq(Mux(m0, Mux(max_e >= 1, max_e[0], 1), max_man[0]))
    thr = Signal(33, name="ovf_thr")
    rne = fmt.rounding == 0
    with m.If(~rne):
        m.d.comb += thr.eq(max_bits + ulp_m1)
    with m.Elif(ulp_sh == 0):
        m.d.comb += thr.eq(max_bits)
    with m.Else():
        m.d.comb += thr.eq(max_bits + half_ulp - odd)

    ovf_mag = Signal(31, name="ovf_mag_w")
    m.d.comb += ovf_mag.eq(Mux(ov_inf, inf_code, max_code))

    # legality (mirrors sieve.Format.validate)
    max_exponent = Signal(signed(11), name="max_exponent")
    m.d.comb += max_exponent.eq(top - b)
    illegal = [
        (E < 1) | (E > 8),
        M > 23,
        fmt.overflow == 3,
        ieee & (E < 2),
        ieee & m0,
        fn & ((E + M) < 2),
        fnuz & ~sgn,
        ov_inf & ~ieee,
        ov_nan & none,
        max_exponent < (1 - b),
        max_exponent > 127,
        (1 - b - M) < -149,
    ]
    m.d.comb += err.eq(Cat(*illegal).any())

    m.d.comb += [
        k.min_bits.eq(min_bits),
        k.half_min_bits.eq(half_min_bits),
        k.max_bits.eq(max_bits),
        k.sign_shift.eq(Mux(sgn, 32 - width, 0)),
        k.adjusted_bias.eq(adj),
        k.exp_mask.eq(exp_mask),
        k.exp_shift.eq(M),
        k.man_shift.eq(man_shift),
        k.ovf_bits.eq(thr),
        k.kra.eq(man_shift + 1 + adj),
        k.kra1.eq(man_shift + 2 + adj),
        k.nadj.eq(-adj),
        k.nadj1.eq(1 - adj),
        k.m0.eq(m0),
        k.sub_en.eq(sub_en),
        k.rne.eq(rne),
        k.ovf_mag.eq(ovf_mag),
        k.ovf_nan.eq(ov_nan),
        k.inf_nan.eq(~ieee & ov_nan),
        k.bump_inf.eq(ieee & ~ov_inf),
        k.bump_nan.eq((ieee & ~ov_inf) | fn),
        k.nan_bit.eq(Mux(ieee, (Const(1, 24) << M) >> 1, 0)),
        k.nan_zero.eq(none | fnuz),
        k.nan_sign_keep.eq(sgn & (ieee | fn)),
        k.nan_sign_inv.eq(sgn & none),
        k.nan_sign_one.eq(sgn & fnuz),
        k.fnuz.eq(fnuz),
        k.signed.eq(sgn),
        k.sign_onehot.eq(Mux(sgn, Const(1, 32) << w1, 0)),
        k.man_mask.eq(man_all),
        k.m_onehot.eq(Const(1, 24) << M),
        k.sign_win.eq(Mux(sgn, Const(1, 9) << E, 0)),
        k.dec_k.eq(adj + man_shift),
        k.dec_k2.eq(adj + man_shift + 2),
        k.dec_kc.eq(Mux(adj + man_shift > 24, 24, adj + man_shift)),
        k.ieee.eq(ieee),
        k.fn.eq(fn),
    ]
    return k, err


def fixed_constants(m: Module, fmt) -> data.View:
    """Constants of a Format known at generation time: the calculator fed a constant record.

    Synthesis folds every gate of it away, so a fixed-format engine pays nothing for it.
    """
    from .config import pack_format

    record = Signal(FORMAT_LAYOUT, name="fixed_fmt")
    m.d.comb += record.as_value().eq(pack_format(fmt))
    k, _ = calc_constants(m, record)
    return k


class ConstCalc(wiring.Component):
    """Combinational constant calculator: ``fmt`` (the record) in, ``k`` and ``error`` out."""

    def __init__(self):
        super().__init__({
            "fmt": In(FORMAT_LAYOUT),
            "k": Out(CONST_LAYOUT),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        k, err = calc_constants(m, self.fmt)
        m.d.comb += [self.k.eq(k), self.error.eq(err)]
        return m
