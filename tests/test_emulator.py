"""The golden model: exhaustive code round trips, monotonicity, ties, every corner, properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sieve
from sieve import Format, decode, decode_table, encode, quantize
from tests.formats import formats, small_formats

F32 = np.float32


def bits(*patterns: int) -> np.ndarray:
    return np.array(patterns, dtype=np.uint32).view(np.float32)


def zero_aliases(fmt: Format, codes: np.ndarray) -> np.ndarray:
    """With subnormals off, exponent-0 codes with a non-zero mantissa are aliases of ±0:
    they decode to zero and the encoder never produces them."""
    if fmt.subnormals:
        return np.zeros(codes.shape, bool)
    exp = (codes >> fmt.man_bits) & ((1 << fmt.exp_bits) - 1)
    man = codes & ((1 << fmt.man_bits) - 1)
    return (exp == 0) & (man != 0)


# ----------------------------------------------------------------------------- exhaustive
def test_every_code_of_every_format_up_to_16_bits_re_encodes_to_itself():
    checked = 0
    for fmt in small_formats(max_width=16, biases=("default", "high")):
        codes = np.arange(1 << fmt.width, dtype=np.int64)
        values = decode(codes, fmt)
        again = encode(values, fmt).astype(np.int64)
        alias = zero_aliases(fmt, codes)
        assert np.all(values[alias] == 0), fmt
        keep = ~np.isnan(values) & ~alias
        bad = np.nonzero((again != codes) & keep)[0]
        assert bad.size == 0, f"{fmt}: code {codes[bad[0]]} -> {values[bad[0]]!r} -> {again[bad[0]]}"
        # NaN codes re-encode to the canonical NaN of the same sign
        for c in codes[np.isnan(values)]:
            neg = fmt.signed and bool(c >> (fmt.width - 1))
            assert again[c] == fmt.nan_code(neg if fmt.specials != "fnuz" else False), (fmt, c)
        checked += codes.size
    assert checked > 5_000_000


def test_decoded_values_are_distinct_and_ordered_by_magnitude_code():
    for fmt in small_formats(max_width=10):
        table = decode_table(fmt).astype(np.float64)
        mag_codes = np.arange(1 << (fmt.exp_bits + fmt.man_bits))  # sign bit clear
        mags = table[mag_codes[~zero_aliases(fmt, mag_codes)]]
        finite = mags[np.isfinite(mags)]
        assert np.all(np.diff(finite) > 0), fmt
        assert finite.max() == fmt.max_value, fmt
        assert finite[finite > 0].min() == fmt.min_value, fmt


# ----------------------------------------------------------------------------- monotone
@pytest.mark.parametrize("text", ["e4m3", "ue3m2b2", "e5m2+sub+ieee+ovinf", "e2m1+rtz", "e8m7b128+sub", "e3m4b-2+sub+fn+ovnan", "e1m0b0"])
def test_encode_is_monotone(text):
    fmt = Format.parse(text)
    rng = np.random.default_rng(7)
    span = max(abs(np.log2(fmt.max_value)), abs(np.log2(fmt.min_value))) + 3
    with np.errstate(over="ignore"):  # values past float32's range are meant to become +-Inf
        x = np.sort(np.concatenate([
            np.sign(rng.standard_normal(200_000)) * np.exp2(rng.uniform(-span, span, 200_000)),
            np.linspace(-2 * fmt.max_value, 2 * fmt.max_value, 100_001),
        ]).astype(F32))
    q = quantize(x, fmt).astype(np.float64)
    finite = ~np.isnan(q)
    qf = q[finite]
    assert np.all(qf[1:] >= qf[:-1])


# ----------------------------------------------------------------------------- ties
@pytest.mark.parametrize("text", ["e4m3", "e5m2+sub", "ue3m4b5+sub", "e2m6b0", "e7m8b70+sub"])
def test_ties_go_to_even_and_truncation_goes_toward_zero(text):
    fmt = Format.parse(text)
    table = decode_table(fmt).astype(np.float64)
    codes = np.arange(table.size)
    mag = codes[: 1 << (fmt.exp_bits + fmt.man_bits)]
    lo, hi = table[mag[:-1]], table[mag[1:]]
    mid = (lo + hi) / 2
    ok = np.isfinite(mid) & (mid == mid.astype(F32))
    if not fmt.subnormals:  # [0, Min) is the flush rule, tested with the corners
        ok &= lo > 0
    mids = mid[ok].astype(F32)
    got = encode(mids, fmt).astype(np.int64)
    lo_code, hi_code = mag[:-1][ok], mag[1:][ok]
    expect = np.where(lo_code % 2 == 0, lo_code, hi_code)
    assert np.array_equal(got, expect)
    assert np.array_equal(encode(mids, fmt.with_(rounding="truncate")).astype(np.int64), lo_code)
    if fmt.signed:
        neg = encode(-mids, fmt).astype(np.int64)
        assert np.array_equal(neg, expect | (1 << (fmt.width - 1)))


# ----------------------------------------------------------------------------- corners
E4M3 = Format.parse("e4m3")  # Min 2^-6 = 0.015625, Max 480


@pytest.mark.parametrize(
    "x, code",
    [
        (0.0, 0x00),
        (-0.0, 0x80),
        (0.015625, 0x08),             # Min
        (0.0078125, 0x08),            # exactly Min/2 rounds up to Min (dissertation rule)
        (float(np.nextafter(F32(0.0078125), F32(0))), 0x00),  # just below Min/2 flushes
        (-float(np.nextafter(F32(0.0078125), F32(0))), 0x80),  # ... to a signed zero
        (0.012, 0x08),                # between Min/2 and Min
        (1.0, 0x38),
        (1.0625, 0x38),               # tie 1.0 | 1.125 -> even (1.0)
        (1.1875, 0x3A),               # tie 1.125 | 1.25 -> even (1.25)
        (480.0, 0x7F),                # Max
        (496.0, 0x7F),                # Max + ulp/2: saturates
        (1e9, 0x7F),
        (-1e9, 0xFF),
        (np.inf, 0x7F),
        (-np.inf, 0xFF),
        (np.nan, 0x80),               # no NaN code: zero with the opposite sign (ml_dtypes)
        (-np.nan, 0x00),
        (1e-45, 0x00),                # fp32 subnormal
        (-1e-45, 0x80),
    ],
)
def test_corner_codes_e4m3(x, code):
    assert int(encode(np.array([x], dtype=F32), E4M3)[0]) == code


@pytest.mark.parametrize(
    "text, x, code",
    [
        ("e4m3+sub", 2.0 ** -9, 0x01),          # smallest subnormal
        ("e4m3+sub", 2.0 ** -10, 0x00),         # Min/2 ties to even (zero)
        ("e4m3+sub", 3 * 2.0 ** -11, 0x01),     # 0.75 Min
        ("e4m3+sub", 2.0 ** -6 - 2.0 ** -10, 0x08),  # rounds up into the normals
        ("e4m3+rtz", 0.0078125, 0x00),          # truncation flushes everything below Min
        ("e4m3+rtz", 1.99, 0x3F),
        ("e4m3+rtz", 1e9, 0x7F),
        ("ue4m3", -1.0, 0x00),                  # unsigned clamps negatives
        ("ue4m3", -np.inf, 0x00),
        ("ue4m3", np.nan, 0x00),
        ("ue4m3", 1.0, 0x38),
        ("ue4m3+fn+ovnan", -1e9, 0x00),         # a negative overflow is still a negative: 0
        ("ue4m3+fn+ovnan", -np.inf, 0x00),
        ("ue4m3+fn+ovnan", 1e9, 0x7F),          # a positive one is NaN
        ("ue4m3+fn+ovnan", -np.nan, 0x7F),      # NaN stays NaN whatever its sign
        ("ue5m2+ieee+ovinf", -np.inf, 0x00),
        ("ue4m3", np.inf, 0x7F),
        ("e5m2+ieee+ovinf", 1e9, 0x7C),         # overflow to Inf
        ("e5m2+ieee+ovinf", -np.inf, 0xFC),
        ("e5m2+ieee+ovinf", np.nan, 0x7E),      # canonical quiet NaN, sign kept
        ("e5m2+ieee", 1e9, 0x7B),               # ieee codes, saturating overflow
        ("e5m2+ieee", np.inf, 0x7C),            # ... but Inf stays Inf
        ("e4m3+fn+ovnan", 464.0, 0x7E),         # tie 448 | (480=NaN) -> even: 448
        ("e4m3+fn+ovnan", 465.0, 0x7F),         # overflow -> NaN
        ("e4m3+fn+ovnan", -np.inf, 0xFF),
        ("e4m3b8+fnuz+ovnan", -0.0, 0x00),      # no negative zero
        ("e4m3b8+fnuz+ovnan", -1e-30, 0x00),
        ("e4m3b8+fnuz+ovnan", -np.nan, 0x80),
    ],
)
def test_corner_codes_policies(text, x, code):
    assert int(encode(np.array([x], dtype=F32), Format.parse(text))[0]) == code


def test_nan_codes_decode_to_canonical_quiet_nan_with_sign():
    f = Format.parse("e5m2+ieee+ovinf")
    out = decode(np.array([0x7D, 0x7E, 0xFF], dtype=np.uint8), f).view(np.uint32)
    assert list(out) == [0x7FC00000, 0x7FC00000, 0xFFC00000]
    assert decode(np.array([0x80], np.uint8), Format.parse("e4m3b8+fnuz+ovnan")).view(np.uint32)[0] == 0xFFC00000


def test_zero_mantissa_ties_go_to_the_even_code():
    f = Format.parse("e3m0")  # bias 3: 1.0 is code 3, 2.0 code 4, 4.0 code 5
    assert list(encode(np.float32([1.5, 3.0, 6.0]), f)) == [4, 4, 6]


def test_fp32_subnormal_above_a_tiny_max_overflows():
    """A format whose Max is below 2^-126: fp32 subnormals above Max follow the overflow rule
    (found by the RTL comparison: the low region once skipped it)."""
    f = Format.parse("se4m0b150")  # Max = 2^-135
    got = encode(np.float32([1e-39, -1e-39, 2.0 ** -140]), f)
    assert list(got) == [15, 31, 10]


def test_exotic_bias_below_fp32_normals():
    f = Format.parse("e3m2b130+sub")  # Min normal 2^-129 is an fp32 subnormal
    codes = np.arange(1 << f.width)
    vals = decode(codes, f)
    assert np.array_equal(encode(vals, f), codes.astype(np.uint8))
    assert vals[1] == np.float32(2.0 ** -131)


# ----------------------------------------------------------------------------- dtypes
def test_input_dtype_rule():
    import ml_dtypes

    f = Format.parse("e5m10b15")
    x64 = np.array([1.0 + 2.0 ** -30, 0.1, 3.0])
    assert np.array_equal(encode(x64, f), encode(x64.astype(F32), f))
    x16 = np.array([0.1, 2.5], dtype=np.float16)
    assert np.array_equal(encode(x16, f), encode(x16.astype(F32), f))
    xb = np.array([0.1, 2.5], dtype=ml_dtypes.bfloat16)
    assert np.array_equal(encode(xb, f), encode(xb.astype(F32), f))
    assert encode([0.5, 1.0], f).dtype == np.uint16
    with pytest.raises(TypeError, match="expected a floating-point array .* got dtype int64"):
        encode(np.arange(3), f)
    with pytest.raises(TypeError, match="codes must be an integer array"):
        decode(np.zeros(3, F32), f)
    with pytest.raises(ValueError, match="codes out of range"):
        decode(np.array([1 << 16]), f)
    with pytest.raises(TypeError, match="fmt must be a sieve.Format"):
        encode(np.zeros(3, F32), 8)


def test_shapes_and_code_dtypes_are_kept():
    x = np.linspace(-3, 3, 24, dtype=F32).reshape(2, 3, 4)
    for text, dt in [("e4m3", np.uint8), ("e5m10", np.uint16), ("e8m20b127+ieee", np.uint32), ("ue2m0b0", np.uint8)]:
        c = encode(x, text)
        assert c.shape == x.shape and c.dtype == dt
        assert decode(c, text).shape == x.shape and decode(c, text).dtype == F32
    assert encode(np.zeros((0, 3), F32), "e4m3").shape == (0, 3)


def test_wide_formats_decode_without_a_table():
    f = Format.parse("e8m23b127+sub+ieee+ovinf")  # float32 itself: quantize is the identity
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32).view(F32)
    q = quantize(x, f)
    same = (q.view(np.uint32) == x.view(np.uint32)) | (np.isnan(q) & np.isnan(x))
    assert same.all()


# ----------------------------------------------------------------------------- properties
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)


@settings(max_examples=400, deadline=None)
@given(formats(max_width=24), hnp.arrays(np.float32, st.integers(1, 64), elements=finite32))
def test_quantize_properties(fmt, x):
    q = quantize(x, fmt)
    assert np.array_equal(quantize(q, fmt), q, equal_nan=True)          # idempotent
    c = encode(x, fmt)
    assert np.array_equal(encode(decode(c, fmt), fmt), c) or fmt.has_nan  # codes are fixed points
    xs, qs = x.astype(np.float64), q.astype(np.float64)
    inside = np.abs(xs) <= fmt.max_value
    if fmt.signed:
        inside &= np.abs(xs) >= fmt.min_normal
    else:
        inside &= xs >= fmt.min_normal
    ulp = np.exp2(np.floor(np.log2(np.abs(np.where(inside, xs, 1.0)))) - fmt.man_bits)
    bound = ulp / 2 if fmt.rounding == "nearest_even" else ulp
    assert np.all(np.abs(qs - xs)[inside] <= bound[inside])
    if fmt.rounding == "truncate":
        assert np.all(np.abs(qs[inside]) <= np.abs(xs[inside]))
    if not fmt.signed:
        assert np.all((qs >= 0) | np.isnan(qs))


def test_quantize_equals_decode_of_encode():
    x = np.random.default_rng(5).standard_normal(10_000).astype(F32)
    f = Format.parse("e3m2b4+sub")
    assert np.array_equal(quantize(x, f), decode(encode(x, f), f))
    assert np.array_equal(sieve.quantize(x, "e3m2b4+sub"), quantize(x, f))


def test_lookup_table_encoder_equals_the_general_encoder():
    """Formats with <= 6 mantissa bits encode by table; the table must equal the arithmetic."""
    from sieve import emulator
    from sieve.emulator import _encode_chunk, _encode_plan

    rng = np.random.default_rng(11)
    x = np.concatenate([
        rng.integers(0, 2 ** 32, 100_000, dtype=np.uint64).astype(np.uint32),
        (rng.integers(100, 150, 100_000, dtype=np.uint32) << 23) | rng.integers(0, 1 << 23, 100_000, dtype=np.uint32),
        np.array([0, 1, 0x7F800000, 0x7F800001, 0x7FC00000, 0xFF800000, 0x80000001, 0x00800000], dtype=np.uint32),
    ])
    assert x.size >= emulator._LUT_MIN_SIZE  # so encode() takes the table path
    used = 0
    for i, fmt in enumerate(small_formats(max_width=9, biases=("default", "low", "high"))):
        plan = _encode_plan(fmt)
        if not plan.table_ok or i % 11:
            continue  # a sample of eligible formats: all policies and widths still occur
        used += 1
        ref = np.empty(x.size, dtype=fmt.code_dtype)
        _encode_chunk(x, plan, ref)
        assert np.array_equal(encode(x.view(F32), fmt), ref), fmt
    assert used > 50


def test_byte_codes_decode_in_pairs_like_single_codes():
    f = Format.parse("e3m4b2+sub")
    codes = np.random.default_rng(2).integers(0, 256, 100_001).astype(np.uint8)  # odd length
    ref = decode_table(f)[codes]
    assert np.array_equal(decode(codes, f).view(np.uint32), ref.view(np.uint32))
    assert np.array_equal(decode(codes.astype(np.int32), f).view(np.uint32), ref.view(np.uint32))
    assert np.array_equal(decode(codes[::2], f).view(np.uint32), ref[::2].view(np.uint32))
