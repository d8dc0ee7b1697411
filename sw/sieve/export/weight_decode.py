"""ONNX subgraphs that rebuild float32 weights from packed custom-float codes (standard operators).

:func:`add_weight_decodes` stores each weight as ``ceil(n*w/8)`` packed bytes (``sieve.pack``'s
LSB-first stream, one uint8 initializer per tensor) and emits the nodes that rebuild the float32
tensors.  Formats without special codes share ONE chain of integer field arithmetic whatever their
number (:func:`add_fields_decodes`: the file does not grow by a decode chain and a table per
Format).  Otherwise, per Format: the bytes of each group of codes become an int64 word cut into
codes with Div/Mod (or, for widths whose group exceeds 7 bytes, bits are peeled off with
``BitShift``/``BitwiseAnd``), then looked up in the Format's ``sieve.decode_table`` (widths up to
:data:`TABLE_MAX_WIDTH`) or decoded by field arithmetic; tensors of one Format share the chain.
Every input is a constant, so onnxruntime folds the whole subgraph into one float32 initializer at
session start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

from ..cfloat import Format
from ..emulator import decode_table, encode, pack
from .onnx_graph import GraphBuilder

__all__ = ["add_weight_decode", "add_codes_decode", "add_unsigned_codes", "add_codes_decodes", "add_weight_decodes", "CodesItem",
           "add_fields_decodes", "fields_eligible", "TABLE_MAX_WIDTH", "WEIGHT_OPSET"]

#: Widths decoded through a 2^w-entry float32 table (at most 1 KiB); wider formats use field
#: arithmetic (a 2^11 table is 8 KiB, more than the packed codes of many CNN layers).
TABLE_MAX_WIDTH = 8
#: Opset needed by the weight decode (BitwiseAnd appeared in 18).
WEIGHT_OPSET = 18


def _group_shape(width: int) -> tuple[int, int]:
    """(codes per group, bytes per group): the smallest whole number of bytes holding whole codes."""
    g = 8 // int(np.gcd(width, 8))
    return g, g * width // 8


def _grouped(width: int) -> bool:
    """Whether a group of codes fits a 48-bit word (widths 1-6, 8, 10, 12, 16, 24, 32 ...): words
    stay below 2^53, where onnxruntime's int64 reductions were measured to lose bits (7-byte
    groups, widths 7 and 14, came out wrong)."""
    g, gbytes = _group_shape(width)
    return gbytes <= 6 or (g == 1 and width <= 48)


def _group_codes(b: GraphBuilder, stream: str, width: int) -> str:
    """int64 codes of a uint8 stream made of whole groups: each group's bytes become one word,
    and the codes are cut out of it with Div/Mod by powers of two."""
    g, gbytes = _group_shape(width)
    if width == 8:
        return b.op("Cast", [stream], to=TensorProto.INT64)
    grid = b.op("Cast", [b.op("Reshape", [stream, b.const([-1, gbytes], np.int64, "shape")])],
                to=TensorProto.INT64)
    if gbytes > 1:
        grid = b.op("Mul", [grid, b.const([1 << (8 * k) for k in range(gbytes)], np.int64, "byte_weights")])
        grid = b.op("ReduceSum", [grid, b.const([1], np.int64, "axes")], keepdims=1)
    if g > 1:
        grid = b.op("Mod", [b.op("Div", [grid, b.const([1 << (width * k) for k in range(g)], np.int64, "shifts")]),
                            b.const(1 << width, np.int64, "i")])
    return b.op("Reshape", [grid, b.const([-1], np.int64, "shape")])


def _bit_codes(b: GraphBuilder, packed: str, n: int, width: int) -> str:
    """int64 codes of one packed tensor by peeling every bit off its bytes (any width)."""
    col = b.op("Unsqueeze", [packed, b.const([1], np.int64, "axes")])
    shifted = b.op("BitShift", [col, b.const(np.arange(8, dtype=np.uint8)[None, :], hint="bit_shifts")],
                   direction="RIGHT")
    bits = b.op("BitwiseAnd", [shifted, b.const(np.uint8(1), hint="one_u8")])
    stream = b.op("Reshape", [bits, b.const([-1], np.int64, "shape")])
    if (n * width) % 8:  # drop the padding bits of the last byte
        stream = b.op("Slice", [stream, b.const([0], np.int64, "starts"), b.const([n * width], np.int64, "ends")])
    grid = b.op("Reshape", [stream, b.const([-1, width], np.int64, "shape")])
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
    with np.errstate(over="ignore"):  # only a specials field (e8, Inf/NaN codes) reaches 2^128: inf, unused
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
    side: str = ""      # block/channel layouts: initializer of the E8M0 scales or channel biases
    side_bytes: int = 0


@dataclass(frozen=True)
class CodesItem:
    """One tensor to store packed: its codes, final shape, output tensor name and original name."""

    out: str
    codes: np.ndarray
    shape: tuple[int, ...]
    name: str


def add_codes_decodes(b: GraphBuilder, fmt: Format, items: list[CodesItem], method: str = "auto"
                      ) -> list[tuple[str, int, str]]:
    """Store each item's codes packed (``ceil(n*w/8)`` bytes, its own initializer) and emit one
    decode chain for all of them: the streams are padded to whole groups, concatenated, unpacked
    and decoded once, then split back.  Sharing the chain keeps the graph small (its nodes are
    stored in the file too).

    ``method``: ``table`` (Gather from ``sieve.decode_table``), ``arithmetic`` (field arithmetic) or
    ``auto`` (table up to :data:`TABLE_MAX_WIDTH` bits).  Returns (packed name, bytes, method) per item.
    """
    if method == "auto":
        method = "table" if fmt.width <= TABLE_MAX_WIDTH else "arithmetic"
    if method not in ("table", "arithmetic"):
        raise ValueError(f"unknown decode method {method!r}; use table, arithmetic or auto")
    width = fmt.width
    g, gbytes = _group_shape(width)
    records, parts, sizes = [], [], []
    for item in items:
        codes = np.asarray(item.codes).reshape(-1)
        n = int(codes.size)
        blob = np.frombuffer(pack(codes, fmt), dtype=np.uint8)
        packed = b.initializer(blob.copy(), f"{item.name}.packed")
        records.append((packed, int(blob.size), method))
        if _grouped(width):
            groups = -(-n // g)
            if groups * gbytes > blob.size:  # complete the last group with zero bytes
                packed = b.op("Pad", [packed, b.const([0, groups * gbytes - blob.size], np.int64, "pads")])
            parts.append(packed)
            sizes.append(groups * g)
        else:
            parts.append(_bit_codes(b, packed, n, width))
            sizes.append(n)
    if _grouped(width):
        stream = parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=0)
        codes_all = _group_codes(b, stream, width)
    else:
        codes_all = parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=0)
    if method == "table":
        values = b.op("Gather", [b.const(decode_table(fmt), hint="table"), codes_all])
    else:
        values = _decode_arithmetic(b, codes_all, fmt)
    if len(items) == 1:
        pieces = [values]
    else:
        pieces = [b.fresh("split") for _ in items]
        b.nodes.append(helper.make_node("Split", [values, b.const(sizes, np.int64, "sizes")], pieces, axis=0))
    for item, piece, size, (_, nbytes, _) in zip(items, pieces, sizes, records):
        n = int(np.prod(item.shape, dtype=np.int64))
        if size != n:  # codes of the padding in the last group
            piece = b.op("Slice", [piece, b.const([0], np.int64, "starts"), b.const([n], np.int64, "ends")])
        doc = f"sieve: decode {item.name} from {fmt} ({n} codes, {nbytes} bytes, {method})"
        b.op("Reshape", [piece, b.const(list(item.shape), np.int64, "shape")], out=item.out, doc=doc)
    return records


def add_unsigned_codes(b: GraphBuilder, packed: str, n: int, width: int) -> str:
    """int64 values of the ``n`` unsigned ``width``-bit codes packed (``sieve.pack`` order) in the
    uint8 initializer ``packed``: side data such as per-channel bias offsets."""
    g, gbytes = _group_shape(width)
    if not _grouped(width):
        return _bit_codes(b, packed, n, width)
    groups = -(-n // g)
    nbytes = -(-n * width // 8)
    if groups * gbytes > nbytes:  # complete the last group with zero bytes
        packed = b.op("Pad", [packed, b.const([0, groups * gbytes - nbytes], np.int64, "pads")])
    codes = _group_codes(b, packed, width)
    if groups * g != n:
        codes = b.op("Slice", [codes, b.const([0], np.int64, "starts"), b.const([n], np.int64, "ends")])
    return codes


def add_codes_decode(b: GraphBuilder, out: str, codes: np.ndarray, fmt: Format, shape: tuple[int, ...],
                     name: str, method: str = "auto") -> tuple[str, int, str]:
    """One tensor's codes, stored packed and decoded as ``out`` (see :func:`add_codes_decodes`)."""
    return add_codes_decodes(b, fmt, [CodesItem(out, codes, tuple(shape), name)], method)[0]


#: Largest ``elements x widest width`` the shared ``fields`` decode unpacks at once (its bit-gather
#: matrix is built at session start; beyond this the per-format chains use less memory).
FIELDS_MAX_CELLS = 1 << 26


def fields_eligible(fmt: Format) -> bool:
    """Whether ``fmt`` can join the shared field-arithmetic decode: no special codes, codes of at
    most 24 bits, and every ``2^(e - bias - M)`` step an exact float32 (normal or subnormal)."""
    low = fmt.min_exponent - fmt.man_bits
    high = fmt.max_exponent - fmt.man_bits
    return fmt.specials == "none" and fmt.width <= 24 and fmt.man_bits <= 23 and low >= -149 and high <= 127


def add_fields_decodes(b: GraphBuilder, items: list[tuple[CodesItem, Format]]) -> list[tuple[str, int]]:
    """Store every item's codes packed and decode all of them, whatever their Formats, with ONE
    chain of integer field arithmetic (so the graph does not grow with the number of Formats).

    The packed streams (each byte-aligned, ``sieve.pack`` order) are concatenated and cut into bits;
    element ``i`` of tensor ``t`` reads ``w_t`` bits from bit ``i * w_t + off_t``.  A per-element
    tensor index (``CumSum`` of start markers) selects each tensor's parameters from one small
    int32 table, so a code becomes sign, exponent field E and mantissa M, and the value
    ``(M + 2^M_bits [E > 0]) * 2^(max(E, 1) - bias - M_bits)`` (zero for E = 0 without subnormals)
    times +-1 (a -0 code gives -0).  Everything is a constant, folded at session start.
    Returns (packed initializer name, bytes) per item.
    """
    if not items:
        return []
    for _, fmt in items:
        if not fields_eligible(fmt):
            raise ValueError(f"{fmt} cannot use the shared field decode")
    records, blobs, rows, sizes = [], [], [], []
    bit_start, elem_start = 0, 0
    low = min(f.min_exponent - f.man_bits for _, f in items)
    high = max(f.max_exponent - f.man_bits for _, f in items)
    any_sub = any(f.subnormals for _, f in items)  # the subnormals column only when some Format has them
    for item, fmt in items:
        codes = np.asarray(item.codes).reshape(-1)
        n = int(codes.size)
        blob = np.frombuffer(pack(codes, fmt), dtype=np.uint8)
        records.append((b.initializer(blob.copy(), b.fresh("p")), int(blob.size)))
        blobs.append(records[-1][0])
        w, m = fmt.width, fmt.man_bits
        half = 1 << (w - 1) if fmt.signed else 1 << w
        # columns: width, bit offset (bit of element i = i*w + off), sign threshold, 2^M,
        # pow2 index offset[, subnormals]
        rows.append([w, bit_start - elem_start * w, half, 1 << m, -fmt.bias - m - low]
                    + ([int(fmt.subnormals)] if any_sub else []))
        sizes.append(n)
        bit_start += 8 * int(blob.size)
        elem_start += n
    total = elem_start
    wmax = max(f.width for _, f in items)
    i32 = np.int32
    # bits of every byte, LSB first, plus zero bytes so that reading past a stream's end stays in range
    pad = b.const(np.zeros((wmax + 7) // 8, np.uint8), hint="zpad")
    stream = b.op("Concat", [*blobs, pad], axis=0)
    byte = b.op("Unsqueeze", [b.op("Cast", [stream], to=TensorProto.INT32), b.const([1], np.int64)])
    bits = b.op("Mod", [b.op("Div", [byte, b.const((1 << np.arange(8))[None, :].astype(i32))]), b.const(i32(2))])
    bits = b.op("Reshape", [bits, b.const([-1], np.int64)])
    # per-element tensor index and parameters
    if len(items) > 1:
        starts = b.const(np.cumsum(sizes[:-1]).astype(i32))
        marks = b.op("ScatterElements", [
            b.op("ConstantOfShape", [b.const([total], np.int64)], value=helper.make_tensor("", TensorProto.INT32, [1], [0])),
            starts, b.op("Div", [starts, starts])], axis=0)  # ones, without storing them
        seg = b.op("CumSum", [marks, b.const(np.int32(0))])
    else:
        seg = b.op("ConstantOfShape", [b.const([total], np.int64)],
                   value=helper.make_tensor("", TensorProto.INT32, [1], [0]))
    seg = b.op("Unsqueeze", [seg, b.const([1], np.int64)])
    ncol = len(rows[0])
    params = b.op("Gather", [b.const(np.array(rows, i32)), seg], axis=0)  # (N, 1, ncol)
    params = b.op("Reshape", [params, b.const([-1, ncol], np.int64)])
    cols = [b.fresh("c") for _ in range(ncol)]
    b.nodes.append(helper.make_node("Split", [params], cols, axis=1, num_outputs=ncol))
    width, off, half, two_m, k_off = cols[:5]
    sub = cols[5] if ncol > 5 else None
    index = b.op("Unsqueeze", [b.op("Range", [b.const(i32(0)), b.const(i32(total)), b.const(i32(1))]),
                               b.const([1], np.int64)])
    first = b.op("Add", [b.op("Mul", [index, width]), off])                       # (N, 1)
    j = b.const(np.arange(wmax, dtype=i32)[None, :])
    got = b.op("Gather", [bits, b.op("Add", [first, j])], axis=0)                # (N, wmax)
    weights = b.op("Where", [b.op("Less", [j, width]), b.const((1 << np.arange(wmax))[None, :].astype(i32)),
                             b.const(i32(0))])
    code = b.op("ReduceSum", [b.op("Mul", [got, weights]), b.const([1], np.int64)], keepdims=1)
    # fields
    mag = b.op("Mod", [code, half])
    exp_field = b.op("Div", [mag, two_m])
    normal = b.op("Cast", [b.op("Greater", [exp_field, b.const(i32(0))])], to=TensorProto.INT32)
    lead = b.op("Add", [b.op("Mod", [mag, two_m]), b.op("Mul", [two_m, normal])])
    keep = b.op("Max", [normal, sub]) if any_sub else normal
    lead = b.op("Mul", [lead, keep])
    step = b.op("Add", [b.op("Max", [exp_field, b.const(i32(1))]), k_off])
    pow2 = np.array([np.ldexp(1.0, e) for e in range(low, high + 1)], np.float32)
    value = b.op("Mul", [b.op("Cast", [lead], to=TensorProto.FLOAT), b.op("Gather", [b.const(pow2), step], axis=0)])
    if any(f.signed for _, f in items):
        negative = b.op("GreaterOrEqual", [code, half])
        value = b.op("Mul", [value, b.op("Where", [negative, b.f32(-1.0), b.f32(1.0)])])
    if len(items) == 1:
        pieces = [value]
    else:
        pieces = [b.fresh("s") for _ in items]
        b.nodes.append(helper.make_node("Split", [value, b.const(sizes, np.int64)], pieces, axis=0))
    for (item, _), piece in zip(items, pieces):
        b.op("Reshape", [piece, b.const(list(item.shape), np.int64)], out=item.out)
    return records


def add_weight_decodes(b: GraphBuilder, weights: list[tuple[str, np.ndarray, Format]],
                       method: str = "auto") -> list[WeightRecord]:
    """Store every ``(name, weight, fmt)`` packed and emit nodes producing each decoded float32
    tensor under its own name.

    ``auto``: every Format :func:`fields_eligible` shares one ``fields`` chain (when the model is
    small enough, :data:`FIELDS_MAX_CELLS`); the others get one chain per Format (``table`` up to
    :data:`TABLE_MAX_WIDTH` bits, else ``arithmetic``).  ``fields``, ``table`` or ``arithmetic``
    force one method.  Each decoded tensor equals ``sieve.quantize(weight, fmt)`` bit for bit.
    """
    prepared = [(name, np.ascontiguousarray(w, dtype=np.float32), fmt) for name, w, fmt in weights]
    shared = []
    if method in ("auto", "fields"):
        shared = [t for t in prepared if fields_eligible(t[2])]
        cells = sum(w.size for _, w, _ in shared) * max((f.width for _, _, f in shared), default=0)
        if method == "auto" and cells > FIELDS_MAX_CELLS:
            shared = []
        if method == "fields" and len(shared) != len(prepared):
            bad = next(f for _, _, f in prepared if not fields_eligible(f))
            raise ValueError(f"{bad} cannot use the shared field decode")
    records: dict[str, WeightRecord] = {}
    items = [(CodesItem(name, encode(w.reshape(-1), fmt), tuple(w.shape), name), fmt) for name, w, fmt in shared]
    for (name, w, fmt), (packed, nbytes) in zip(shared, add_fields_decodes(b, items)):
        records[name] = WeightRecord(name, str(fmt), int(w.size), tuple(w.shape), packed, nbytes, "fields")
    by_format: dict[Format, list[tuple[str, np.ndarray]]] = {}
    for name, w, fmt in prepared:
        if name not in records:
            by_format.setdefault(fmt, []).append((name, w))
    per_format = "auto" if method == "fields" else method
    for fmt, group in by_format.items():
        items = [CodesItem(name, encode(w.reshape(-1), fmt), tuple(w.shape), name) for name, w in group]
        for (name, w), (packed, nbytes, used) in zip(group, add_codes_decodes(b, fmt, items, per_format)):
            records[name] = WeightRecord(name, str(fmt), int(w.size), tuple(w.shape), packed, nbytes, used)
    return [records[name] for name, _, _ in weights]


def add_weight_decode(b: GraphBuilder, out: str, weight: np.ndarray, fmt: Format,
                      original_name: str | None = None, method: str = "auto") -> WeightRecord:
    """One weight (see :func:`add_weight_decodes`); the decoded tensor is named ``out``."""
    w = np.ascontiguousarray(weight, dtype=np.float32)
    name = original_name or out
    packed, nbytes, used = add_codes_decode(b, out, encode(w.reshape(-1), fmt), fmt, w.shape, name, method)
    return WeightRecord(name, str(fmt), int(w.size), tuple(w.shape), packed, nbytes, used)

