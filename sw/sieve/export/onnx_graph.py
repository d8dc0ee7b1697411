"""ONNX subgraphs that decode packed weights and round activations, standard operators only.

Two builders share one :class:`GraphBuilder` (nodes + deduplicated constant initializers):

* :func:`add_weight_decode` stores a weight as ``ceil(n*w/8)`` packed bytes (``sieve.pack``'s
  LSB-first stream) and emits the nodes that rebuild the float32 tensor: bits are peeled off the
  bytes with ``BitShift``/``BitwiseAnd``, re-weighted and summed into int64 codes, then looked up
  in the Format's ``sieve.decode_table`` (widths up to :data:`TABLE_MAX_WIDTH`) or decoded by
  field arithmetic (wider formats).  Every input is a constant, so onnxruntime folds the whole
  subgraph into one float32 initializer at session start.
* :func:`add_rounding` rounds a float32 activation to a Format in the graph, bit-identical to
  ``sieve.quantize``.  The sign (including -0 and the sign of NaN, which no arithmetic operator
  can observe) comes from ``BitCast`` (opset 26); the magnitude is rounded either with Veltkamp's
  splitting (three float ops, proven exact for nearest-even with 1..22 mantissa bits in the range
  where it cannot overflow) or by mirroring the emulator's integer rounding on the fp32 bit pattern.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import NodeProto, TensorProto, helper, numpy_helper

from ..cfloat import Format
from ..emulator import decode_table, encode, pack, quantize

__all__ = [
    "GraphBuilder",
    "add_weight_decode",
    "add_codes_decode",
    "add_rounding",
    "rounding_method",
    "TABLE_MAX_WIDTH",
    "WEIGHT_OPSET",
    "ACTIVATION_OPSET",
]

#: Widths decoded through a 2^w-entry float32 table; wider formats use field arithmetic
#: (a 2^12 table is 16 KiB, already more than many packed tensors).
TABLE_MAX_WIDTH = 12
#: Opset needed by the weight decode (BitwiseAnd appeared in 18).
WEIGHT_OPSET = 18
#: Opset needed by activation rounding (BitCast appeared in 26).
ACTIVATION_OPSET = 26


@dataclass
class GraphBuilder:
    """Collects nodes and constant initializers; equal constants are stored once."""

    prefix: str = "sv"  # short: every generated name is stored in the file
    nodes: list[NodeProto] = field(default_factory=list)
    initializers: list[TensorProto] = field(default_factory=list)
    _consts: dict = field(default_factory=dict)
    _count: int = 0

    def fresh(self, hint: str) -> str:
        """A new unique tensor name under the builder's prefix."""
        self._count += 1
        return f"{self.prefix}{self._count}"

    def const(self, value, dtype=None, hint: str = "c") -> str:
        """Name of a constant initializer holding ``value`` (deduplicated by dtype, shape, bytes)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = self.fresh(hint)
            self.initializers.append(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return self._consts[key]

    def initializer(self, arr: np.ndarray, name: str) -> str:
        """Add a named (non-shared) initializer, e.g. the packed codes of one weight."""
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, doc: str | None = None,
           **attrs) -> str:
        """Append one node and return its (single) output name."""
        out = out or self.fresh(op_type.lower())
        node = helper.make_node(op_type, inputs, [out], **attrs)  # unnamed: names cost bytes
        if doc:
            node.doc_string = doc
        self.nodes.append(node)
        return out

    def f32(self, value: float, hint: str = "f") -> str:
        return self.const(np.float32(value), hint=hint)

    def f32_bits(self, bits: int, hint: str = "f") -> str:
        """A float32 scalar given by its exact bit pattern (NaN payloads, -0)."""
        return self.const(np.array(bits, dtype=np.uint32).view(np.float32), hint=hint)


# ---------------------------------------------------------------------------- weights
def _unpack_codes(b: GraphBuilder, packed: str, n: int, width: int) -> str:
    """Nodes turning the packed uint8 stream into ``n`` int64 codes (LSB-first, see sieve.pack)."""
    if width == 8:
        return b.op("Cast", [packed], to=TensorProto.INT64)
    if width % 8 == 0:
        per = width // 8
        grid = b.op("Reshape", [packed, b.const([n, per], np.int64, "shape")])
        wide = b.op("Cast", [grid], to=TensorProto.INT64)
        scaled = b.op("Mul", [wide, b.const([1 << (8 * k) for k in range(per)], np.int64, "byte_weights")])
        return b.op("ReduceSum", [scaled, b.const([1], np.int64, "axes")], keepdims=0)
    col = b.op("Unsqueeze", [packed, b.const([1], np.int64, "axes")])
    shifted = b.op("BitShift", [col, b.const(np.arange(8, dtype=np.uint8)[None, :], hint="bit_shifts")],
                   direction="RIGHT")
    bits = b.op("BitwiseAnd", [shifted, b.const(np.uint8(1), hint="one_u8")])
    stream = b.op("Reshape", [bits, b.const([-1], np.int64, "shape")])
    used = b.op("Slice", [stream, b.const([0], np.int64, "starts"), b.const([n * width], np.int64, "ends")])
    grid = b.op("Reshape", [used, b.const([n, width], np.int64, "shape")])
    wide = b.op("Cast", [grid], to=TensorProto.INT64)
    scaled = b.op("Mul", [wide, b.const([1 << k for k in range(width)], np.int64, "bit_weights")])
    return b.op("ReduceSum", [scaled, b.const([1], np.int64, "axes")], keepdims=0)


def _decode_arithmetic(b: GraphBuilder, codes: str, fmt: Format) -> str:
    """Decode int64 codes of a wide format by its fields (exact: every value is an exact fp32)."""
    e_bits, m_bits = fmt.exp_bits, fmt.man_bits
    man = b.op("Mod", [codes, b.const(1 << m_bits, np.int64, "i")])
    exp_field = b.op("Mod", [b.op("Div", [codes, b.const(1 << m_bits, np.int64, "i")]),
                             b.const(1 << e_bits, np.int64, "i")])
    # value = (lead[e] + man * 2^-M) * scale[e]; field 0 is zero or a subnormal
    lead = np.ones(1 << e_bits, np.float32)
    scale = np.array([np.ldexp(1.0, e - fmt.bias) for e in range(1 << e_bits)], np.float32)
    lead[0] = 0.0
    scale[0] = np.float32(np.ldexp(1.0, fmt.min_exponent)) if fmt.subnormals else np.float32(0.0)
    frac = b.op("Mul", [b.op("Cast", [man], to=TensorProto.FLOAT), b.f32(np.ldexp(1.0, -m_bits))])
    mant = b.op("Add", [b.op("Gather", [b.const(lead, hint="lead"), exp_field]), frac])
    value = b.op("Mul", [mant, b.op("Gather", [b.const(scale, hint="scale"), exp_field])])
    # specials: NaN codes get magnitude 0 and their NaN from the sign factor below
    top = (1 << e_bits) - 1
    zero = b.f32(0.0)
    is_nan = None
    if fmt.specials == "ieee":
        is_top = b.op("Equal", [exp_field, b.const(top, np.int64, "i")])
        man_zero = b.op("Equal", [man, b.const(0, np.int64, "i")])
        value = b.op("Where", [is_top, b.op("Where", [man_zero, b.f32(np.inf), zero]), value])
        is_nan = b.op("And", [is_top, b.op("Not", [man_zero])])
    elif fmt.specials == "fn":
        mag = b.op("Mod", [codes, b.const(1 << (e_bits + m_bits), np.int64, "i")])
        is_nan = b.op("Equal", [mag, b.const((1 << (e_bits + m_bits)) - 1, np.int64, "i")])
        value = b.op("Where", [is_nan, zero, value])
    elif fmt.specials == "fnuz":
        is_nan = b.op("Equal", [codes, b.const(1 << (fmt.width - 1), np.int64, "i")])
    # sign and NaN by one multiplication (Where would turn a selected -0 into +0): the factor is
    # +-1, or the canonical NaN of the code's sign (finite * NaN gives that NaN, bits kept)
    pos = b.f32(1.0)
    pos_nan = b.op("Where", [is_nan, b.f32_bits(0x7FC00000), pos]) if is_nan else pos
    if fmt.signed:
        negative = b.op("GreaterOrEqual", [codes, b.const(1 << (fmt.width - 1), np.int64, "i")])
        neg = b.f32(-1.0)
        neg_nan = b.op("Where", [is_nan, b.f32_bits(0xFFC00000), neg]) if is_nan else neg
        factor = b.op("Where", [negative, neg_nan, pos_nan])
    else:
        factor = pos_nan
    if factor == pos:
        return value
    return b.op("Mul", [value, factor])


@dataclass(frozen=True)
class WeightRecord:
    """What one compressed weight looks like in the file."""

    name: str
    format: str
    elements: int
    shape: tuple[int, ...]
    packed: str         # initializer holding the packed codes
    bytes_stored: int   # ceil(n*w/8)
    method: str         # "table" or "arithmetic"


def add_codes_decode(b: GraphBuilder, out: str, codes: np.ndarray, fmt: Format, shape: tuple[int, ...],
                     name: str, method: str = "auto") -> tuple[str, int, str]:
    """Store ``codes`` packed and emit nodes producing their float32 values, shaped ``shape``, as ``out``.

    ``method``: ``table`` (Gather from ``sieve.decode_table``), ``arithmetic`` (field arithmetic) or
    ``auto`` (table up to :data:`TABLE_MAX_WIDTH` bits).  Returns (packed initializer, bytes, method).
    """
    codes = np.asarray(codes).reshape(-1)
    n = int(codes.size)
    blob = np.frombuffer(pack(codes, fmt), dtype=np.uint8)
    packed = b.initializer(blob.copy(), f"{name}.packed")
    if method == "auto":
        method = "table" if fmt.width <= TABLE_MAX_WIDTH else "arithmetic"
    int_codes = _unpack_codes(b, packed, n, fmt.width)
    if method == "table":
        flat = b.op("Gather", [b.const(decode_table(fmt), hint="table"), int_codes])
    elif method == "arithmetic":
        flat = _decode_arithmetic(b, int_codes, fmt)
    else:
        raise ValueError(f"unknown decode method {method!r}; use table, arithmetic or auto")
    doc = f"sieve: decode {name} from {fmt} ({n} codes, {blob.size} bytes, {method})"
    b.op("Reshape", [flat, b.const(list(shape), np.int64, "shape")], out=out, doc=doc)
    return packed, int(blob.size), method


def add_weight_decode(b: GraphBuilder, out: str, weight: np.ndarray, fmt: Format,
                      original_name: str | None = None, method: str = "auto") -> WeightRecord:
    """Store ``weight`` packed in ``fmt`` and emit nodes producing its decoded float32 as ``out``.

    The decoded tensor equals ``sieve.quantize(weight, fmt)`` bit for bit.
    """
    original_name = original_name or out
    w = np.ascontiguousarray(weight, dtype=np.float32)
    packed, nbytes, method = add_codes_decode(b, out, encode(w.reshape(-1), fmt), fmt, w.shape,
                                              original_name, method)
    return WeightRecord(original_name, str(fmt), int(w.size), tuple(w.shape), packed, nbytes, method)


# ---------------------------------------------------------------------------- activations
def rounding_method(fmt: Format) -> str:
    """``veltkamp`` where that float-only rounding is proven exact, else ``integer``."""
    s = 23 - fmt.man_bits
    clip_exp = fmt.max_exponent + 1
    if (fmt.rounding == "nearest_even" and 1 <= fmt.man_bits <= 22
            and clip_exp + s + 1 <= 127 and fmt.min_exponent >= -126):
        return "veltkamp"
    return "integer"


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
        g = b.op("Mul", [a, b.f32(np.ldexp(1.0, 23 - m) + 1.0)])
        d = b.op("Sub", [a, g])
        return b.op("Add", [g, d])
    shift = 23 - m
    bits = b.op("BitCast", [a], to=TensorProto.INT32)
    keep = b.const(np.int32(-(1 << shift)), hint="mask")
    if fmt.rounding == "nearest_even":
        lsb = b.op("BitwiseAnd", [b.op("Div", [bits, b.const(np.int32(1 << shift), hint="i")]),
                                  b.const(np.int32(1), hint="i")])
        bump = b.op("Add", [lsb, b.const(np.int32((1 << (shift - 1)) - 1), hint="i")])
        bits = b.op("Add", [bits, bump])
    return b.op("BitCast", [b.op("BitwiseAnd", [bits, keep])], to=TensorProto.FLOAT)


def _overflow_threshold(fmt: Format) -> float:
    """The smallest positive float32 (Inf included) that ``fmt`` overflows to NaN, by bisection
    on the emulator (rounding is monotonic in the bit pattern of a positive float)."""
    lo, hi = int(np.float32(fmt.max_value).view(np.uint32)), 0x7F7FFFFF

    def overflows(bits: int) -> bool:
        return bool(np.isnan(quantize(np.array([bits], np.uint32).view(np.float32), fmt))[0])

    if not overflows(hi):  # no finite float32 overflows: only an infinite input can
        return float("inf")
    while hi - lo > 1:  # invariant: lo does not overflow, hi does
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if overflows(mid) else (mid, hi)
    return float(np.array([hi], np.uint32).view(np.float32)[0])


def add_rounding(b: GraphBuilder, x: str, out: str, fmt: Format, method: str | None = None,
                 original_name: str | None = None) -> str:
    """Emit nodes computing ``out = sieve.quantize(x, fmt)`` bit for bit (x float32, any shape)."""
    if fmt.min_exponent < -126:
        raise ValueError(
            f"activation format {fmt} has normals below float32's smallest normal 2^-126; in-graph"
            f" rounding supports formats whose smallest normal is >= 2^-126 (use a larger exponent"
            f" field offset: bias <= {fmt.bias + fmt.min_exponent + 126})")
    method = method or rounding_method(fmt)
    if method == "veltkamp" and rounding_method(fmt) != "veltkamp":
        raise ValueError(f"Veltkamp rounding is not exact for {fmt}")
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
    if fmt.has_inf and fmt.overflow != "inf":  # an infinite input stays infinite
        m = b.op("Where", [b.op("IsInf", [a]), b.f32_bits(0x7F800000), m])
    # Results that are NaN: a NaN input, or an overflow to NaN.  Their magnitude is set to 0 here and
    # the NaN enters at the end, chosen from the emulator's own bit patterns for NaN inputs.
    is_nan = b.op("IsNaN", [x])
    if over is not None:
        is_nan = b.op("Or", [is_nan, over])
    nan_pos, nan_neg = (int(v) for v in quantize(np.array([0x7FC00000, 0xFFC00000], np.uint32)
                                                 .view(np.float32), fmt).view(np.uint32))
    doc = f"sieve: round {original_name or x} to {fmt} ({method})"
    if not fmt.signed:  # one NaN result whatever the sign (a NaN code, or +0)
        if fmt.overflow == "nan":  # the emulator rounds |x| first: a negative that overflows is NaN too
            over_abs = b.op("GreaterOrEqual", [b.op("Abs", [x]), b.f32(_overflow_threshold(fmt))])
            if fmt.has_inf:  # ... but -Inf itself clamps to 0
                over_abs = b.op("And", [over_abs, b.op("Not", [b.op("IsInf", [x])])])
            is_nan = b.op("Or", [is_nan, over_abs])
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
