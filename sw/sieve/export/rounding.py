"""ONNX subgraphs that round float32 activations to a Format, bit-identical to ``sieve.quantize``.

The sign (including -0 and the sign of NaN, which no arithmetic operator can observe) comes from
``BitCast`` (opset 26); the magnitude is rounded either with Veltkamp's splitting (three float
ops, proven exact for nearest-even with 1..22 mantissa bits in the range where it cannot
overflow) or by mirroring the emulator's integer rounding on the fp32 bit pattern.

:func:`add_blocked_rounding` is the variant built only from operators onnxruntime runs in its
blocked NCHWc layout, for tensors proven finite (:mod:`.bounds`).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..cfloat import Format
from ..emulator import quantize
from .onnx_graph import GraphBuilder

__all__ = ["add_rounding", "rounding_method", "add_blocked_rounding", "blocked_eligible", "BLOCKED_CHANNEL_MULTIPLE",
           "ACTIVATION_OPSET"]

#: Opset needed by activation rounding (BitCast appeared in 26).
ACTIVATION_OPSET = 26


def rounding_method(fmt: Format) -> str:
    """The cheapest exact rounding for ``fmt``.

    ``fast``: Veltkamp's splitting with the corner cases folded into one Clip and one Where (the
    SIEVE default formats: no specials, saturation, nearest-even, no subnormals); ``veltkamp``: the
    same splitting inside the general corner-case pipeline; ``integer``: the general pipeline with
    the emulator's integer rounding on the fp32 bit pattern (any format).
    """
    if not _veltkamp_exact(fmt):
        return "integer"
    if (fmt.specials == "none" and fmt.overflow == "saturate" and not fmt.subnormals
            and _lift_exponent(fmt) is not None):
        return "fast"
    return "veltkamp"


def _veltkamp_exact(fmt: Format) -> bool:
    """Veltkamp's splitting is exact round-to-nearest-even here (proven by the exhaustive tests):
    1..22 mantissa bits (one-bit ties follow the fp32 exponent parity instead) and no overflow of
    ``x * (2^(23-M) + 1)`` for ``|x| <= 2^(emax+1)``, no fp32 subnormal in the normal range."""
    s = 23 - fmt.man_bits
    return (fmt.rounding == "nearest_even" and 1 <= fmt.man_bits <= 22
            and fmt.max_exponent + 1 + s + 1 <= 127 and fmt.min_exponent >= -126)


def _veltkamp(b: GraphBuilder, c: str, man_bits: int) -> str:
    """Round ``c`` to ``man_bits`` mantissa bits, nearest-even, with three float operations."""
    g = b.op("Mul", [c, b.f32(np.ldexp(1.0, 23 - man_bits) + 1.0)])
    return b.op("Add", [g, b.op("Sub", [c, g])])


def _lift_exponent(fmt: Format) -> int | None:
    """k with ``Min/2 * 2^k >= Max`` and 2^k a normal float32, or None (fast path unusable)."""
    k = max(0, int(np.ceil(np.log2(fmt.max_value / (fmt.min_normal / 2)))))
    return k if k <= 127 else None


def _fast_magnitude(b: GraphBuilder, a: str, fmt: Format, out: str | None = None, doc: str | None = None) -> str:
    """Rounded magnitude of ``a`` (>= 0 or anything for unsigned) in five cheap float ops.

    ``t = ThresholdedRelu(a)`` keeps a >= Min/2 and gives +0 for everything else, NaN included;
    ``Clip(t, Min, Max)`` lifts [Min/2, Min) to Min and saturates; Veltkamp rounds; and
    ``Min(r, t * 2^k)`` restores the zeros (t * 2^k >= Max whenever t > 0).  No Where: it is ten
    times slower than these in onnxruntime, and it turns a selected -0 into +0.
    """
    alpha = float(np.nextafter(np.float32(fmt.min_normal / 2), np.float32(0)))
    t = b.op("ThresholdedRelu", [a], alpha=alpha)
    r = _veltkamp(b, b.op("Clip", [t, b.f32(fmt.min_normal), b.f32(fmt.max_value)]), fmt.man_bits)
    return b.op("Min", [r, b.op("Mul", [t, b.f32(np.ldexp(1.0, _lift_exponent(fmt)))])], out=out, doc=doc)


def _add_fast_rounding(b: GraphBuilder, x: str, out: str, fmt: Format, doc: str) -> str:
    """Rounding for formats without specials, saturating, nearest-even, no subnormals.

    Unsigned: the magnitude pipeline on x itself (negatives, -0, -Inf and NaN all give +0).
    Signed: the magnitude of |x|, then the sign bit ORed in.  The output is negative exactly when
    x is negative (including -0 and -Inf) or a +NaN (a NaN becomes a zero of the opposite sign):
    as uint32, ``bits(x) + 0x7FFFFF`` carries into the sign bit for +NaN and out of it for -NaN.
    """
    if not fmt.signed:
        return _fast_magnitude(b, x, fmt, out=out, doc=doc)
    m = _fast_magnitude(b, b.op("Abs", [x]), fmt)
    u = b.op("BitCast", [x], to=TensorProto.UINT32)
    sign = b.op("BitwiseAnd", [b.op("Add", [u, b.const(np.uint32(0x7FFFFF), hint="u")]),
                               b.const(np.uint32(0x80000000), hint="u")])
    bits = b.op("BitwiseOr", [b.op("BitCast", [m], to=TensorProto.UINT32), sign])
    return b.op("BitCast", [bits], to=TensorProto.FLOAT, out=out, doc=doc)


def _pow2_mul(b: GraphBuilder, x: str, k: int) -> str:
    """Multiply by 2^k exactly, in two steps when 2^k itself is not a normal float32."""
    if -126 <= k <= 127:
        return b.op("Mul", [x, b.f32(np.ldexp(1.0, k))])
    half = k // 2
    return b.op("Mul", [b.op("Mul", [x, b.f32(np.ldexp(1.0, half))]), b.f32(np.ldexp(1.0, k - half))])


def _round_normal(b: GraphBuilder, a: str, fmt: Format, method: str) -> str:
    """Round |x| to ``man_bits`` mantissa bits with an unbounded exponent (overflow shows as > Max)."""
    clip_exp = fmt.max_exponent + 1
    if clip_exp <= 127:  # anything >= 2^(emax+1) overflows anyway; clipping keeps the ops finite
        a = b.op("Min", [a, b.f32(np.ldexp(1.0, clip_exp))])
    m = fmt.man_bits
    if m == 23:
        return a
    if method == "veltkamp":
        return _veltkamp(b, a, m)
    shift = 23 - m
    bits = b.op("BitCast", [a], to=TensorProto.INT32)
    keep = b.const(np.int32(-(1 << shift)), hint="mask")
    if fmt.rounding == "nearest_even":
        lsb = b.op("BitwiseAnd", [b.op("Div", [bits, b.const(np.int32(1 << shift), hint="i")]),
                                  b.const(np.int32(1), hint="i")])
        bump = b.op("Add", [lsb, b.const(np.int32((1 << (shift - 1)) - 1), hint="i")])
        bits = b.op("Add", [bits, bump])
    return b.op("BitCast", [b.op("BitwiseAnd", [bits, keep])], to=TensorProto.FLOAT)


def add_rounding(b: GraphBuilder, x: str, out: str, fmt: Format, method: str | None = None,
                 original_name: str | None = None, finite: bool = False) -> str:
    """Emit nodes computing ``out = sieve.quantize(x, fmt)`` bit for bit (x float32, any shape).

    ``finite``: the caller guarantees ``x`` holds no NaN or infinity (e.g. the elements of a
    block-scaled tensor proven finite), so the nodes handling them are left out."""
    if fmt.min_exponent < -126:
        raise ValueError(
            f"activation format {fmt} has normals below float32's smallest normal 2^-126; in-graph"
            f" rounding supports formats whose smallest normal is >= 2^-126 (use a larger exponent"
            f" field offset: bias <= {fmt.bias + fmt.min_exponent + 126})")
    method = method or rounding_method(fmt)
    if method in ("veltkamp", "fast") and not _veltkamp_exact(fmt):
        raise ValueError(f"Veltkamp rounding is not exact for {fmt}")
    if method == "fast" and rounding_method(fmt) != "fast":
        raise ValueError(f"the fast rounding does not cover the corner cases of {fmt}")
    doc = f"sieve: round {original_name or x} to {fmt} ({method})"
    if method == "fast":
        return _add_fast_rounding(b, x, out, fmt, doc)
    # magnitude: |x|, or for unsigned formats max(x, +0) (negatives, -0 and -Inf become +0 at once)
    a = b.op("Abs", [x]) if fmt.signed else b.op("Max", [x, b.f32(0.0)])
    n = _round_normal(b, a, fmt, method)
    min_normal, max_value = fmt.min_normal, fmt.max_value
    sub = fmt.subnormals and fmt.man_bits > 0
    rne = fmt.rounding == "nearest_even"
    over: str | None = None  # "rounded magnitude overflowed to NaN"
    if fmt.overflow == "saturate" and rne and not sub:
        # one Clip: saturate at Max, and [Min/2, Min) -> Min (the rounded value there is <= Min)
        m = b.op("Clip", [n, b.f32(min_normal), b.f32(max_value)])
        m = b.op("Where", [b.op("Less", [a, b.f32(min_normal / 2)]), b.f32(0.0), m])
    else:
        if fmt.overflow == "saturate":
            m = b.op("Min", [n, b.f32(max_value)])
        else:
            over = b.op("Greater", [n, b.f32(max_value)])
            if fmt.overflow == "inf":
                m = b.op("Where", [over, b.f32_bits(0x7F800000), n])
                over = None
            else:  # to NaN: handled with the NaN inputs below (an infinite input may stay Inf)
                m = n
                if fmt.has_inf:
                    over = b.op("And", [over, b.op("Not", [b.op("IsInf", [a])])])
        if sub:
            step_exp = fmt.min_exponent - fmt.man_bits
            scaled = _pow2_mul(b, a, -step_exp)
            grid = b.op("Round" if rne else "Floor", [scaled])
            low = _pow2_mul(b, grid, step_exp)
            m = b.op("Where", [b.op("Less", [a, b.f32(min_normal)]), low, m])
        else:
            if rne:  # below Min/2 flushes to 0, [Min/2, Min) rounds up to Min
                low = b.op("Where", [b.op("Less", [a, b.f32(min_normal / 2)]), b.f32(0.0), b.f32(min_normal)])
            else:
                low = b.f32(0.0)
            m = b.op("Where", [b.op("Less", [a, b.f32(min_normal)]), low, m])
    if fmt.has_inf and fmt.overflow != "inf" and not finite:  # an infinite input stays infinite
        m = b.op("Where", [b.op("IsInf", [a]), b.f32_bits(0x7F800000), m])
    if finite and over is None:  # no NaN can come in or arise: only the sign is left to apply
        if not fmt.signed:
            return b.op("Identity", [m], out=out, doc=doc)
        if fmt.specials == "fnuz":
            negative = b.op("Less", [b.op("BitCast", [x], to=TensorProto.INT32), b.const(np.int32(0), hint="i")])
            return b.op("Where", [negative, b.op("Sub", [b.f32(0.0), m]), m], out=out, doc=doc)
        # x's sign bit ORed into the magnitude (a -0 stays -0; Where is slow in onnxruntime)
        sign = b.op("BitwiseAnd", [b.op("BitCast", [x], to=TensorProto.UINT32),
                                   b.const(np.uint32(0x80000000), hint="u")])
        bits = b.op("BitwiseOr", [b.op("BitCast", [m], to=TensorProto.UINT32), sign])
        return b.op("BitCast", [bits], to=TensorProto.FLOAT, out=out, doc=doc)
    # Results that are NaN: a NaN input, or an overflow to NaN.  Their magnitude is set to 0 here and
    # the NaN enters at the end, chosen from the emulator's own bit patterns for NaN inputs.
    is_nan = b.op("IsNaN", [x])
    if over is not None:
        is_nan = b.op("Or", [is_nan, over])
    nan_pos, nan_neg = (int(v) for v in quantize(np.array([0x7FC00000, 0xFFC00000], np.uint32)
                                                 .view(np.float32), fmt).view(np.uint32))
    if not fmt.signed:  # one NaN result whatever the sign (a NaN code, or +0); negatives gave a = 0
        return b.op("Where", [is_nan, b.f32_bits(nan_pos), m], out=out, doc=doc)
    m = b.op("Where", [is_nan, b.f32(0.0), m])
    negative = b.op("Less", [b.op("BitCast", [x], to=TensorProto.INT32), b.const(np.int32(0), hint="i")])
    if fmt.specials == "fnuz":  # no -0 (0 - m keeps +0) and one NaN, whatever the sign
        y = b.op("Where", [negative, b.op("Sub", [b.f32(0.0), m]), m])
        return b.op("Where", [is_nan, b.f32_bits(nan_pos), y], out=out, doc=doc)
    # The sign is applied by one multiplication, never selected by Where: onnxruntime's Where
    # can turn a selected -0 into +0.
    if fmt.has_nan:
        factor = b.op("Where", [negative,
                                b.op("Where", [is_nan, b.f32_bits(nan_neg), b.f32(-1.0)]),
                                b.op("Where", [is_nan, b.f32_bits(nan_pos), b.f32(1.0)])])
    else:  # a NaN input becomes a zero of the opposite sign (ml_dtypes' rule)
        flip = b.op("Xor", [negative, is_nan])
        factor = b.op("Where", [flip, b.f32(-1.0), b.f32(1.0)])
    return b.op("Mul", [m, factor], out=out, doc=doc)


#: Channel counts the blocked rounding is used for: onnxruntime's NCHWc layout needs whole blocks
#: (8 or 16 channels, by CPU); elsewhere the elementwise chain is as fast.
BLOCKED_CHANNEL_MULTIPLE = 16


def blocked_eligible(fmt: Format) -> bool:
    """Whether :func:`add_blocked_rounding` covers ``fmt``: an unsigned ``fast`` format (no
    specials or subnormals, saturating, nearest-even) whose Veltkamp product stays finite."""
    return (not fmt.signed and rounding_method(fmt) == "fast"
            and fmt.max_value * (2.0 ** (23 - fmt.man_bits) + 1) < 2.0 ** 127)


def _depthwise(b: GraphBuilder, x: str, channels: int, scale: float, bias: float | None = None,
               clip: tuple[float, float] | None = None) -> str:
    """``clip(x * scale + bias)`` per element as a depthwise 1x1 Conv (+ Clip): one pass that
    onnxruntime keeps in its blocked NCHWc layout.  onnxruntime rounds the product once, then adds
    the bias, then (when it fuses a following Add into the Conv) the Add's other operand: the
    same two roundings as separate nodes (checked by the tests)."""
    inputs = [x, b.f32_filled(scale, (channels, 1, 1, 1))]
    if bias is not None:
        inputs.append(b.f32_filled(bias, (channels,)))
    y = b.op("Conv", inputs, group=channels)
    if clip is not None:
        y = b.op("Clip", [y, b.f32(clip[0]), b.f32(clip[1])])
    return y


def add_blocked_rounding(b: GraphBuilder, x: str, out: str, fmt: Format, channels: int) -> str:
    """``out = sieve.quantize(x, fmt)`` for every non-NaN x of an NCHW tensor with ``channels``
    channels, built only from operators that onnxruntime runs in its blocked layout (depthwise
    Conv with a fused Clip, Adds it fuses into a Conv or runs blocked), so no layout reorders
    surround the rounding: four depthwise passes and one Add instead of seven elementwise passes
    and two reorders.

    * ``f = clip(x * 2^25 - Min * 2^24, -Min, 0)``: -Min where x < Min/2 (flushes to zero), else 0
      (exact: the product is exact and the sum keeps the sign of ``x - Min/2``, which is 0 or at
      least one ulp of Min/2, times 2^25 = Min);
    * ``c = clip(x, Min, Max)`` and ``c0 = c + f`` (0 where x flushes, else c);
    * Veltkamp on c0: ``delta = c0 + c0 * -(2^s + 1)``, ``out = c0 * (2^s + 1) + delta``.

    A NaN input gives NaN (Clip propagates it), so the exporter uses this only where it proves the
    tensor finite (:mod:`sieve.export.bounds`).
    """
    if not blocked_eligible(fmt):
        raise ValueError(f"the blocked rounding does not cover {fmt}")
    lo, hi = float(fmt.min_normal), float(fmt.max_value)
    flush = _depthwise(b, x, channels, 2.0 ** 25, -lo * 2.0 ** 24, clip=(-lo, 0.0))
    c0 = b.op("Add", [_depthwise(b, x, channels, 1.0, clip=(lo, hi)), flush])
    k = np.ldexp(1.0, 23 - fmt.man_bits) + 1.0
    delta = b.op("Add", [c0, _depthwise(b, c0, channels, -k)])
    return b.op("Add", [_depthwise(b, c0, channels, k), delta], out=out)
