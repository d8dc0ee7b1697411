"""Bit-exact NumPy emulator of :class:`~sieve.cfloat.Format`: the golden model.

``encode`` turns floats into codes, ``decode`` codes into float32, ``quantize`` is their
composition, and ``pack``/``unpack`` move codes to and from a dense byte stream.  The RTL,
the ONNX decode graph and every accuracy figure are checked against these functions.

Input rule: float32 is the contract.  float16 and bfloat16 widen to float32 exactly;
float64 (and Python floats) are first rounded to float32 with NumPy's round-to-nearest-even
cast, so a float64 value can be rounded twice.  Any other dtype is a ``TypeError``.

Speed: encode works on the float32 bit pattern with integer arithmetic in cache-sized
chunks; decode is one table look-up for every format up to 16 bits.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import packing as _packing
from .cfloat import Format

__all__ = ["encode", "decode", "quantize", "pack", "unpack", "decode_table", "as_float32"]

_CHUNK = 1 << 16  # elements per encode chunk: its temporaries stay in L2 cache
_LUT_MAX_MAN_BITS = 6  # encode by table look-up up to this many mantissa bits (see _encode_table)
_LUT_MIN_SIZE = 1 << 17  # inputs at least as large as the table it costs to build
_NAN = -1  # marker for "NaN result" inside the encoder; replaced by the NaN code and sign

_WIDENING = {np.dtype(np.float16)}
try:  # bfloat16 and friends are ml_dtypes types; widen them exactly like float16
    import ml_dtypes as _mld

    _WIDENING.add(np.dtype(_mld.bfloat16))
except ImportError:  # pragma: no cover - ml_dtypes is a dependency
    pass


def as_float32(x) -> np.ndarray:
    """Apply the documented input rule and return a float32 array (no copy if already one)."""
    arr = np.asarray(x)
    if arr.dtype == np.float32:
        return arr
    if arr.dtype == np.float64 or arr.dtype in _WIDENING:
        return arr.astype(np.float32)
    raise TypeError(
        f"expected a floating-point array (float32; float16, bfloat16 and float64 are converted"
        f" to float32 first), got dtype {arr.dtype}"
    )


def _check_format(fmt) -> Format:
    if isinstance(fmt, str):
        return Format.parse(fmt)
    if not isinstance(fmt, Format):
        raise TypeError(f"fmt must be a sieve.Format or its text form, got {type(fmt).__name__}")
    return fmt


# ---------------------------------------------------------------------------- encode
class _EncodePlan:
    """Integer constants for encoding one Format, computed once and cached per Format."""

    def __init__(self, fmt: Format):
        self.fmt = fmt
        m = fmt.man_bits
        self.shift = 23 - m
        self.round_half = (1 << (self.shift - 1)) - 1 if self.shift > 0 else 0
        self.adjust = (127 - fmt.bias) << m  # subtract from (bits >> shift) to get the code
        self.min_normal_bits = int(np.float32(fmt.min_normal).view(np.uint32))
        self.low_bits = max(self.min_normal_bits, 0x00800000)
        self.max_code = fmt.max_magnitude_code
        self.sign_bit = (1 << (fmt.width - 1)) if fmt.signed else 0
        # subnormal grid: code = |x| * 2^(M - emin) rounded, done in float64 (always exact)
        self.sub_scale = float(np.ldexp(1.0, m - fmt.min_exponent))
        self.inf_code = fmt.inf_magnitude_code
        self.table_ok = fmt.man_bits <= _LUT_MAX_MAN_BITS and fmt.min_exponent >= -126
        self._table: np.ndarray | None = None

    def table(self) -> np.ndarray:
        """The look-up table encoder (built on first use; see :func:`_encode_table`)."""
        if self._table is None:
            self._table = _encode_table(self)
        return self._table


@lru_cache(maxsize=256)
def _encode_plan(fmt: Format) -> _EncodePlan:
    return _EncodePlan(fmt)


def _encode_table(plan: _EncodePlan) -> np.ndarray:
    """The encoder as a 2^17-entry table indexed by the top 16 bits of the float32 and a
    sticky bit (any of the low 16 bits set).

    With at most 6 mantissa bits (and Min normal >= 2^-126) the rounding guard bit of every
    input lies in the top 16 bits, so these 17 bits decide the code: the representative
    ``(top << 16) | sticky`` encodes exactly like every input sharing them.  The table is
    filled by the general encoder itself, so there is still one definition of rounding.
    """
    top = np.arange(1 << 16, dtype=np.uint32) << np.uint32(16)
    reps = np.stack([top, top | np.uint32(1)], axis=1).reshape(-1)
    table = np.empty(reps.size, dtype=plan.fmt.code_dtype)
    _encode_chunk(reps, plan, table)
    return table


def _lut_index(bits: np.ndarray, index: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """``(bits >> 15) | (bits & 0x7FFF != 0)``: top 16 bits, then the sticky of the low 16."""
    np.right_shift(bits, np.uint32(15), out=index)
    np.bitwise_and(bits, np.uint32(0x7FFF), out=scratch)
    np.minimum(scratch, np.uint32(1), out=scratch)
    np.bitwise_or(index, scratch, out=index)
    return index


def _encode_low(small: np.ndarray, p: _EncodePlan) -> np.ndarray:
    """Magnitude codes for small magnitudes (float64): subnormal or flush rules below Min
    normal, and plain rounding for normals that lie among float32's subnormals."""
    fmt = p.fmt
    nearest = fmt.rounding == "nearest_even"
    if fmt.subnormals and fmt.man_bits > 0:
        scaled = small * p.sub_scale
        code = (np.rint(scaled) if nearest else np.floor(scaled)).astype(np.int64)
    elif nearest:  # [Min/2, Min) rounds up to Min: the dissertation's Min/2 comparison
        code = np.where(small >= fmt.min_normal / 2, 1 << fmt.man_bits, 0).astype(np.int64)
    else:
        code = np.zeros(small.shape, np.int64)
    normal = small >= fmt.min_normal
    if normal.any():  # only formats whose normals reach below 2^-126
        v = small[normal]
        k = np.frexp(v)[1].astype(np.int64) - 1
        scaled = np.ldexp(v, (fmt.man_bits - k).astype(np.int32))
        r = (np.rint(scaled) if nearest else np.floor(scaled)).astype(np.int64)
        code[normal] = ((k + fmt.bias) << fmt.man_bits) + (r - (1 << fmt.man_bits))  # carry is free
    return code


def _encode_chunk(bits: np.ndarray, p: _EncodePlan, out: np.ndarray) -> None:
    """Encode one chunk of float32 bit patterns (uint32) into ``out`` (code dtype)."""
    fmt = p.fmt
    mag = bits & np.uint32(0x7FFFFFFF)
    neg = bits >> np.uint32(31)
    mag64 = mag.astype(np.int64)

    # normal path: round the fp32 magnitude to M mantissa bits with an unbounded exponent
    if p.shift == 0:
        rounded = mag64
    elif fmt.rounding == "nearest_even":
        rounded = mag64 + (p.round_half + ((mag64 >> p.shift) & 1))
    else:
        rounded = mag64
    code = (rounded >> p.shift) - p.adjust

    # the low region: below the smallest normal, and every fp32 subnormal input (whose bit
    # pattern the integer path above cannot round); done in float64, where all are exact
    low = mag < np.uint32(p.low_bits)
    if low.any():
        code[low] = _encode_low(mag[low].view(np.float32).astype(np.float64), p)

    # overflow: the rounded magnitude exceeds Max (Inf and NaN land here too, fixed below)
    over = code > p.max_code
    if fmt.overflow == "saturate":
        np.minimum(code, p.max_code, out=code)
    else:
        code[over] = p.inf_code if fmt.overflow == "inf" else _NAN

    # Inf and NaN inputs
    special = mag >= np.uint32(0x7F800000)
    if special.any():
        is_nan = mag > np.uint32(0x7F800000)
        if fmt.has_inf:
            code[special & ~is_nan] = p.inf_code
        code[is_nan] = _NAN

    # sign, NaN and the unsigned clamp
    if fmt.signed:
        signed_code = code | (neg.astype(np.int64) << (fmt.width - 1))
        if fmt.specials == "fnuz":
            signed_code[code == 0] = 0
        nan_sel = code == _NAN
        if nan_sel.any():
            pos, negc = fmt.nan_code(False), fmt.nan_code(True)
            if pos is None:  # no NaN code: zero with the opposite sign (ml_dtypes' rule)
                pos, negc = p.sign_bit, 0
            signed_code[nan_sel] = np.where(neg[nan_sel] == 1, negc, pos)
        out[...] = signed_code
    else:
        nan = fmt.nan_code(False)
        code[code == _NAN] = 0 if nan is None else nan
        # every negative input that is not a NaN (-0, -tiny, -Max, -Inf, negative overflow) -> 0
        code[neg.astype(bool) & (mag <= np.uint32(0x7F800000))] = 0
        out[...] = code


def encode(x, fmt: Format | str) -> np.ndarray:
    """Encode floats into ``fmt`` codes: unsigned integers of the smallest dtype, same shape.

    Scalar formats only; ``sieve.encode`` (:mod:`sieve.codec`) also takes block and channel
    layouts (:mod:`sieve.blockfmt`)."""
    fmt = _check_format(fmt)
    arr = as_float32(x)
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint32)
    out = np.empty(flat.shape, dtype=fmt.code_dtype)
    plan = _encode_plan(fmt)
    if plan.table_ok and flat.size >= _LUT_MIN_SIZE:
        table = plan.table()
        index = np.empty(min(flat.size, _CHUNK), dtype=np.intp)  # take() wants intp indices
        scratch = np.empty(index.size, dtype=np.uint32)
        for start in range(0, flat.size, _CHUNK):
            stop = min(start + _CHUNK, flat.size)
            n = stop - start
            idx = _lut_index(flat[start:stop], index[:n], scratch[:n])
            np.take(table, idx, out=out[start:stop])
    else:
        for start in range(0, flat.size, _CHUNK):
            stop = min(start + _CHUNK, flat.size)
            _encode_chunk(flat[start:stop], plan, out[start:stop])
    return out.reshape(arr.shape)


# ---------------------------------------------------------------------------- decode
def _decode_bits(codes: np.ndarray, fmt: Format) -> np.ndarray:
    """Decode codes (int64 array) to float32 by bit arithmetic; used to build tables."""
    m, e = fmt.man_bits, fmt.exp_bits
    man = codes & ((1 << m) - 1)
    exp = (codes >> m) & ((1 << e) - 1)
    neg = ((codes >> (e + m)) & 1).astype(bool) if fmt.signed else np.zeros(codes.shape, bool)
    value = np.where(
        exp == 0,
        np.ldexp(man.astype(np.float64), fmt.min_exponent - m) if fmt.subnormals else 0.0,
        np.ldexp(1.0 + man.astype(np.float64) / (1 << m), (exp - fmt.bias).astype(np.int32)),
    )
    value = np.where(neg, -value, value)
    mag = codes & ((1 << (e + m)) - 1)
    if fmt.specials == "ieee":
        top = exp == (1 << e) - 1
        value = np.where(top & (man == 0), np.where(neg, -np.inf, np.inf), value)
        value = np.where(top & (man != 0), np.where(neg, -np.nan, np.nan), value)
    elif fmt.specials == "fn":
        value = np.where(mag == (1 << (e + m)) - 1, np.where(neg, -np.nan, np.nan), value)
    elif fmt.specials == "fnuz":
        value = np.where(neg & (mag == 0), -np.nan, value)
    out = value.astype(np.float32)
    # canonical quiet NaN, sign kept: 0x7FC00000 / 0xFFC00000
    nan = np.isnan(out)
    if nan.any():
        out.view(np.uint32)[nan] = np.where(np.signbit(out[nan]), 0xFFC00000, 0x7FC00000).astype(np.uint32)
    return out


@lru_cache(maxsize=256)
def decode_table(fmt: Format) -> np.ndarray:
    """The 2^width-entry float32 table of every code's value (formats up to 16 bits).

    NaN codes decode to the canonical quiet NaN with the code's sign bit.
    """
    if fmt.width > 16:
        raise ValueError(f"decode_table is for formats up to 16 bits; {fmt} has {fmt.width}")
    table = _decode_bits(np.arange(1 << fmt.width, dtype=np.int64), fmt)
    table.setflags(write=False)
    return table


def decode(codes, fmt: Format | str) -> np.ndarray:
    """Decode ``fmt`` codes (any integer array) to float32 values of the same shape."""
    fmt = _check_format(fmt)
    arr = np.asarray(codes)
    if arr.dtype.kind not in "ui":
        raise TypeError(f"codes must be an integer array, got dtype {arr.dtype}")
    in_range = arr.dtype.kind == "u" and arr.dtype.itemsize * 8 <= fmt.width
    if arr.size and not in_range and ((arr.dtype.kind == "i" and arr.min() < 0) or int(arr.max()) >> fmt.width):
        raise ValueError(f"codes out of range for {fmt}: a {fmt.width}-bit code is 0..{(1 << fmt.width) - 1}")
    if arr.dtype == np.uint8 and arr.flags.c_contiguous and arr.size >= 2:
        return _decode_pairs(arr, fmt)
    if fmt.width <= 16:
        out = np.empty(arr.shape, dtype=np.float32)
        _chunked_take(decode_table(fmt), arr.reshape(-1), out.reshape(-1))
        return out
    return _decode_bits(arr.astype(np.int64), fmt)


def _chunked_take(table: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = table[index[i]]`` in cache-sized chunks, widening indices to intp once
    per chunk (``take`` would otherwise convert the whole index array first)."""
    buffer = np.empty(min(index.size, _CHUNK), dtype=np.intp)
    for start in range(0, index.size, _CHUNK):
        stop = min(start + _CHUNK, index.size)
        idx = buffer[: stop - start]
        idx[...] = index[start:stop]
        table.take(idx, out=out[start:stop])


@lru_cache(maxsize=64)
def _pair_table(fmt: Format) -> np.ndarray:
    """Two decoded float32 values per uint16 of byte codes: entry ``lo | hi << 8`` holds
    ``table[lo]`` in its low half and ``table[hi]`` in its high half (little-endian)."""
    single = np.zeros(256, dtype=np.uint64)
    single[: 1 << fmt.width] = decode_table(fmt).view(np.uint32)
    pairs = single[np.arange(1 << 16) & 0xFF] | (single[np.arange(1 << 16) >> 8] << np.uint64(32))
    pairs.setflags(write=False)
    return pairs


def _decode_pairs(arr: np.ndarray, fmt: Format) -> np.ndarray:
    """Decode byte codes two at a time: half as many table look-ups as one per code,
    in cache-sized chunks whose indices are widened to intp once (take() wants intp)."""
    flat = arr.reshape(-1)
    even = flat.size & ~1
    out = np.empty(flat.size, dtype=np.float32)
    _chunked_take(_pair_table(fmt), flat[:even].view("<u2"), out[:even].view("<u8"))
    if even < flat.size:
        out[-1] = decode_table(fmt)[flat[-1]]
    return out.reshape(arr.shape)


def quantize(x, fmt: Format | str) -> np.ndarray:
    """Round floats to the nearest ``fmt`` value: ``decode(encode(x, fmt), fmt)``."""
    fmt = _check_format(fmt)
    return decode(encode(x, fmt), fmt)


# ---------------------------------------------------------------------------- packing
def pack(codes, fmt: Format | str) -> bytes:
    """Pack codes into ``ceil(n*width/8)`` bytes, LSB-first (see :mod:`sieve.packing`)."""
    return _packing.pack(codes, _check_format(fmt))


def unpack(blob: bytes, fmt: Format | str, count: int) -> np.ndarray:
    """Inverse of :func:`pack`: read ``count`` codes of ``fmt`` from ``blob``."""
    return _packing.unpack(blob, _check_format(fmt), count)
