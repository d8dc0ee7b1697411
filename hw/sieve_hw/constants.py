"""Constant calculator: Format record in, engine constants out (a short register pipeline).

This is the dissertation's shared constant calculator (§4.4.2): it turns the per-layer
format into the numbers that configure every compressor and decompressor lane, so that the
engines themselves do only per-value work.  Its outputs include exactly the eight
:class:`sieve.EngineConstants` (``min_bits`` ... ``man_shift``; a test compares them with
:func:`sieve.engine_constants` for every legal Format) plus derived constants the engines
use (thresholds, masks, the special codes), and ``error`` for an illegal record (see
:mod:`sieve_hw.config`).  All of it is a function of the record alone, so one calculator
serves any number of lanes.

Why registered: done in one clock the calculator is ~40 logic levels (40 MHz on an iCE40
HX8K) and would set the clock of every lane unit, whose engines run at >= 100 MHz.  The
constants only change at a format change, which already waits for the pipelines to drain,
so the calculator may take a few cycles instead: :class:`ConstCalc` registers the record,
cuts the long chains with :data:`CALC_RANKS` register ranks and registers its outputs, and
holds ``busy`` high until they are valid, :attr:`ConstCalc.LATENCY` cycles after the load.
The fixed-format path (:func:`fixed_constants`) stays combinational: it folds to constants.

The *multicycle* calculator (``ConstCalc(registered=False)``, design ``constcalc_mc``) is the
small one: it registers only the record and computes the constants from it combinationally,
with no rank or output register (741 flip-flops fewer for the full contract).  Its ``k`` is
therefore undefined while ``busy`` is high and valid from cycle :attr:`ConstCalc.LATENCY` on,
for as long as the record is held: a multicycle path of ``LATENCY - 1`` clock cycles
(``set_multicycle_path`` in a timing flow).  That is all a lane unit needs, because its
engines take no value while the calculator is busy and none is in flight when a record is
loaded; ``error`` is still registered, so it keeps its old value until cycle ``LATENCY``.
"""
from __future__ import annotations

from typing import Callable

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import FORMAT_LAYOUT

__all__ = ["CALC_RANKS", "CONST_LAYOUT", "DISSERTATION_FIELDS", "ConstCalc", "Rank", "calc_constants",
           "fixed_constants", "register_rank"]

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
    "dec_km1": unsigned(5),            # (dec_k - 1) mod 32: the tiny-value shift minus e_code
    "ieee": unsigned(1),
    "fn": unsigned(1),
})


#: ``rank(value, name) -> value``: where :func:`calc_constants` may place a register.
Rank = Callable[[Value, str], Value]
#: Register ranks on the calculator's deepest path (record -> ... -> overflow threshold).
CALC_RANKS = 4


def register_rank(m: Module) -> Rank:
    """A :data:`Rank` that registers ``value`` (no reset, no enable: the record is held still)."""
    def rank(value, name):
        value = Value.cast(value)
        if isinstance(value, Const):
            return value
        r = Signal(value.shape(), name=name, reset_less=True)
        m.d.sync += r.eq(value)
        return r
    return rank


def _fp32_bits(m: Module, name: str, e_field, mant23, rank: Rank):
    """fp32 bit pattern of 2^(e_field-127) * (1 + mant23/2^23), e_field >= -23 (may be subnormal).

    Two sections: the normal test and the subnormal shift amount, then the shift itself.
    """
    out = Signal(32, name=name)
    normal = rank(e_field >= 1, f"{name}_normal")
    sh = Signal(5, name=f"{name}_sh")
    m.d.comb += sh.eq(Mux(e_field >= 1, 0, 1 - e_field))
    sh = rank(sh, f"{name}_sh")
    e8 = rank(e_field[:8], f"{name}_e8")
    mant = rank(mant23, f"{name}_mant")
    sig = Cat(mant, Const(1, 1))
    m.d.comb += out.eq(Mux(normal, Cat(mant, e8), sig >> sh))
    return out


def calc_constants(m: Module, fmt, rank: Rank | None = None) -> tuple[data.View, Signal]:
    """Add the calculator's logic for record ``fmt`` to ``m``; return (constants view, error).

    ``rank(value, name)`` places a register on the long chains (Max -> its fp32 pattern ->
    the overflow threshold) and is called at fixed points, :data:`CALC_RANKS` deep on the
    deepest path; ``None`` (fixed formats) keeps the whole calculator combinational.  The
    ranks are deliberately *unbalanced* (no value is carried alongside others): the
    calculator is only used with a record held still, so every output is simply valid
    :data:`CALC_RANKS` clock edges after the record last changed.
    """
    if rank is None:
        def rank(value, name):
            return value
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
    m.d.comb += exp_mask.eq(~(Const(0xFF, 8) << E))  # (1 << E) - 1 as a mask shifter, no borrow chain
    man_all = Signal(23, name="man_all")
    m.d.comb += man_all.eq(~(Const(0x7FFFFF, 23) << M))  # (1 << M) - 1 (M <= 23 when legal)
    man_shift = Signal(5, name="man_shift_w")
    m.d.comb += man_shift.eq(23 - M)
    m0 = M == 0

    # --- section 1 (record -> rank 1): the Max code's fields, Min's exponent
    top = Signal(8, name="top_field")
    # exp_mask - ieee - (fn & m0): the all-ones field minus 0 or 1 only clears bit 0
    m.d.comb += top.eq(Cat(exp_mask[0] & ~(ieee | (fn & m0)), exp_mask[1:]))
    max_man = Signal(23, name="max_man")
    m.d.comb += max_man.eq(Cat(man_all[0] & ~(fn & ~m0), man_all[1:]))  # man_all - (fn & ~m0), no borrow
    sub_en = Signal(name="sub_en_w")
    m.d.comb += sub_en.eq(fmt.subnormals & ~m0)
    min_e = Signal(signed(11), name="min_e")
    m.d.comb += min_e.eq(Mux(sub_en, adj + 1 - M, adj + 1))
    top_r, max_man_r, min_e_r = rank(top, "top_r1"), rank(max_man, "max_man_r1"), rank(min_e, "min_e_r1")
    adj_r = rank(adj, "adj_r1")
    dec_k = Signal(10, name="dec_k_w")
    m.d.comb += dec_k.eq(adj + man_shift)
    dec_k_r = rank(dec_k, "dec_k_r1")
    width_r, w1_r = rank(width, "width_r1"), rank(w1, "width_m1_r1")

    # --- section 2 (rank 1 -> rank 2): Max's exponent and mantissa as an fp32, its code
    max_e = Signal(signed(11), name="max_e")
    m.d.comb += max_e.eq(top_r + adj_r)
    max_e_r = rank(max_e, "max_e_r2")
    max_mant_r = rank((max_man_r << man_shift)[:23], "max_mant_r2")
    max_code = Signal(31, name="max_code")
    m.d.comb += max_code.eq((top_r << M) | max_man_r)
    max_code = rank(max_code, "max_code_r2")
    max_exponent = Signal(signed(11), name="max_exponent")
    m.d.comb += max_exponent.eq(top_r - b)
    max_exponent = rank(max_exponent, "max_exponent_r2")
    zero23 = Const(0, 23)
    # Min and Min/2 (Min is the smallest subnormal when subnormals are on): ranks 2 and 3
    min_bits = _fp32_bits(m, "min_bits_w", min_e_r, zero23, rank)
    half_min_bits = _fp32_bits(m, "half_min_bits_w", rank(min_e_r - 1, "half_min_e_r2"), zero23, rank)

    # --- sections 3-4 (rank 2 -> rank 4): Max's fp32 pattern (sh at rank 3, shift after it)
    max_bits = _fp32_bits(m, "max_bits_w", max_e_r, max_mant_r, rank)
    # overflow threshold: the largest fp32 pattern whose rounded value is still <= Max.
    # ulp of Max in fp32 bit units: 2^man_shift when Max is an fp32 normal, finer below.
    ulp_sh = Signal(6, name="ulp_sh")
    m.d.comb += ulp_sh.eq(Mux(max_e_r >= 1, man_shift, man_shift + max_e_r - 1))
    ulp_sh = rank(ulp_sh, "ulp_sh_r3")
    # tie parity of Max: its mantissa LSB; with M == 0 the emulator takes the fp32 exponent
    # LSB (fp32 normal Max) or the hidden one (fp32 subnormal Max, always odd)
    odd = Signal(name="max_odd")
    m.d.comb += odd.eq(Mux(m0, Mux(max_e_r >= 1, max_e_r[0], 1), max_man_r[0]))
    odd = rank(odd, "max_odd_r3")
    # 2^ulp_sh - 1 and 2^ulp_sh / 2 as shifters (no borrow chains)
    ulp_m1 = Signal(24, name="ulp_m1")
    m.d.comb += ulp_m1.eq(~(Const(0xFFFFFF, 24) << ulp_sh))
    half_ulp = Signal(24, name="half_ulp")
    m.d.comb += half_ulp.eq((Const(1, 25) << ulp_sh) >> 1)
    rne = fmt.rounding == 0
    # thr = max_bits + addend, the addend ready in parallel with max_bits (rank 4);
    # half_ulp - odd = odd ? 2^(ulp_sh-1) - 1 = ulp_m1 >> 1 : half_ulp (ulp_sh >= 1 there)
    addend = Signal(25, name="ovf_addend")
    with m.If(~rne):
        m.d.comb += addend.eq(ulp_m1)
    with m.Elif(ulp_sh == 0):
        m.d.comb += addend.eq(0)
    with m.Else():
        m.d.comb += addend.eq(Mux(odd, ulp_m1 >> 1, half_ulp))
    addend = rank(addend, "ovf_addend_r4")
    max_bits_r = rank(max_bits, "max_bits_r4")
    # --- section 5 (rank 4 -> output): one 33-bit addition
    thr = Signal(33, name="ovf_thr")
    m.d.comb += thr.eq(max_bits_r + addend)

    inf_code = Signal(31, name="inf_code")
    m.d.comb += inf_code.eq(rank(exp_mask, "exp_mask_r1") << M)
    inf_code = rank(inf_code, "inf_code_r2")
    ovf_mag = Signal(31, name="ovf_mag_w")
    m.d.comb += ovf_mag.eq(Mux(ov_inf, inf_code, max_code))

    # legality (mirrors sieve.Format.validate); the two Max-exponent tests use rank 2
    record_illegal = [  # from the record alone: rank 1
        (E < 1) | (E > 8),
        M > 23,
        fmt.overflow == 3,
        ieee & (E < 2),
        ieee & m0,
        fn & ((E + M) < 2),
        fnuz & ~sgn,
        ov_inf & ~ieee,
        ov_nan & none,
        (1 - b - M) < -149,
    ]
    illegal = [
        rank(Cat(*record_illegal).any(), "record_illegal_r1"),
        max_exponent < (1 - b),
        max_exponent > 127,
    ]
    m.d.comb += err.eq(Cat(*illegal).any())

    m.d.comb += [
        k.min_bits.eq(min_bits),
        k.half_min_bits.eq(half_min_bits),
        k.max_bits.eq(max_bits_r),
        k.sign_shift.eq(Mux(sgn, 32 - width_r, 0)),
        k.adjusted_bias.eq(adj_r),
        k.exp_mask.eq(exp_mask),
        k.exp_shift.eq(M),
        k.man_shift.eq(man_shift),
        k.ovf_bits.eq(thr),
        k.kra.eq(man_shift + 1 + adj_r),
        k.kra1.eq(man_shift + 2 + adj_r),
        k.nadj.eq(-adj_r),
        k.nadj1.eq(1 - adj_r),
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
        k.sign_onehot.eq(Mux(sgn, Const(1, 32) << w1_r, 0)),
        k.man_mask.eq(man_all),
        k.m_onehot.eq(Const(1, 24) << M),
        k.sign_win.eq(Mux(sgn, Const(1, 9) << E, 0)),
        k.dec_k.eq(dec_k_r),
        k.dec_k2.eq(dec_k_r + 2),
        k.dec_kc.eq(Mux(dec_k_r > 24, 24, dec_k_r)),
        k.dec_km1.eq(dec_k_r - 1),
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
    """The registered constant calculator with a load/busy handshake.

    ``load`` (taken while ``busy`` is low) latches ``fmt``; ``busy`` is then high for
    ``LATENCY - 1`` cycles, and ``k``/``error`` change to the new record's constants at the
    clock edge where ``busy`` falls: counting the cycle in which ``load`` was taken as cycle 0,
    the new ``k``/``error`` are visible from cycle :attr:`LATENCY` on and stay until the
    next load.  After reset ``error`` is 1 (nothing loaded yet) and ``busy`` is 0.
    """

    #: record register + :data:`CALC_RANKS` ranks + output register
    LATENCY = CALC_RANKS + 2

    def __init__(self, family=None, registered: bool = True):
        #: the :class:`~.contracts.Contract` whose formats alone are accepted (a record outside
        #: its family is an error); None: every legal Format
        self.family = family
        #: False: the multicycle calculator (no rank or output register; ``k`` undefined while busy)
        self.registered = registered
        self.latency = self.LATENCY
        super().__init__({
            "fmt": In(FORMAT_LAYOUT),
            "load": In(1),
            "busy": Out(1),
            "k": Out(CONST_LAYOUT),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        record = Signal(FORMAT_LAYOUT, name="fmt_reg", reset_less=True)
        count = Signal(range(self.LATENCY), name="calc_count")
        take = self.load & (count == 0)
        with m.If(take):
            m.d.sync += [record.eq(self.fmt), count.eq(self.LATENCY - 1)]
        with m.Elif(count != 0):
            m.d.sync += count.eq(count - 1)
        k_new, err_new = calc_constants(m, record, register_rank(m) if self.registered else None)
        if self.family is not None and self.family.record:  # a record outside the family is refused too
            err_family = Signal(name="err_family")
            m.d.comb += err_family.eq(err_new | ~self.family.record_ok(record))
            err_new = err_family
        err = Signal(name="err_reg", init=1)  # unconfigured after reset
        if self.registered:
            k = Signal(CONST_LAYOUT, name="k_reg", reset_less=True)
            with m.If(count == 1):  # every rank has settled on the new record
                m.d.sync += [k.eq(k_new), err.eq(err_new)]
        else:  # multicycle: the constants follow the held record through the combinational calculator
            k = k_new
            with m.If(count == 1):
                m.d.sync += err.eq(err_new)
        m.d.comb += [self.k.eq(k), self.error.eq(err), self.busy.eq(count != 0)]
        return m
