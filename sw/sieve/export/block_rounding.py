"""In-graph rounding of an activation to a block-scaled (OCP MX) format, bit-identical to
``sieve.blockfmt.quantize_torch`` (and so to ``sieve.quantize``) with standard ONNX operators.

Why it is exact: every step is either integer work on the float32 bit pattern or a float32
operation whose result the emulator computes with the same single rounding.

* The tensor (one image: ``C x S``; blocks of ``k`` along ``C`` at each position of ``S``, as
  :mod:`sieve.blockfmt` lays them out) is zero-padded along ``C`` to whole blocks and seen as
  ``(N, nb, k, R)``.
* ``amax = ReduceMax(|x|)`` per block.  Its binade is its float32 exponent field minus 127,
  read with ``BitCast`` and a shift (no ``Log``: ``floor(log2)`` of the bit pattern is exact by
  construction; a zero or fp32-subnormal max has field 0, binade -127, as in blockfmt).  The
  shared exponent ``s = clip(field - 127 - emax, -127, 127)`` (E8M0's range) becomes the exact
  float32 ``2^s`` and ``2^-s`` by building their bit patterns, ``max((e + 127) << 23, 1 << 22)``
  (the ``max`` gives the subnormal 2^-127 its pattern), in int32 on the small per-block tensor.
* ``x * 2^-shared`` (one correctly rounded product, as in torch), the scalar element rounding of
  :func:`.rounding.add_rounding` (proven bit-identical to the emulator on every float32), then
  ``* 2^shared``.
* A block holding a NaN or an infinity gets a NaN scale: every element is the canonical NaN.
  Such blocks are found as ``IsNaN(ReduceSum(x * 0))`` (``Inf * 0`` and ``NaN * 0`` are NaN,
  any finite ``x * 0`` is a zero), which does not depend on how ``ReduceMax`` treats NaN, and
  one ``Where`` overwrites them at the end.  So the element rounding never needs its own NaN/Inf
  handling (``add_rounding(finite=True)``: onnxruntime's ``Where`` is slow, and it saves four).
* Padding is sliced off and the tensor gets its shape back.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from ..blockfmt import SCALE_MAX_EXP, SCALE_MIN_EXP, BlockFormat
from .onnx_graph import GraphBuilder
from .rounding import add_rounding, rounding_method

__all__ = ["add_block_rounding", "block_rounding_method"]


def block_rounding_method(fmt: BlockFormat, finite: bool = False) -> str:
    """The method name recorded for a block-rounded activation (``block-finite`` without the
    NaN/Inf handling, for inputs :mod:`.bounds` proves finite)."""
    return "block-finite" if finite else "block"


def _pow2(b: GraphBuilder, e: str) -> str:
    """Exact float32 ``2^e`` of int32 exponents in [-127, 127] (as :func:`sieve.blockfmt.pow2_f32`)."""
    i32 = np.int32
    bits = b.op("Mul", [b.op("Add", [e, b.const(i32(127), hint="i")]), b.const(i32(1 << 23), hint="i")])
    return b.op("BitCast", [b.op("Max", [bits, b.const(i32(1 << 22), hint="i")])], to=TensorProto.FLOAT)


def add_block_rounding(b: GraphBuilder, x: str, out: str, fmt: BlockFormat, image_shape: tuple[int, ...],
                       original_name: str | None = None, finite: bool = False) -> str:
    """Emit nodes computing ``out = sieve.quantize(x, fmt)`` for a float32 ``x`` of shape
    ``(N, *image_shape)`` (axis 1 blocked).  ``finite``: ``x`` is proven to hold no NaN or
    infinity (:mod:`.bounds`), so the NaN-block test and the element rounding's NaN/Inf handling
    are left out (the scaled elements stay below ``2^(emax+1)``, finite too).  Raises ValueError
    when the element rounding cannot be built exactly (see :func:`.rounding.add_rounding`)."""
    if not isinstance(fmt, BlockFormat):
        raise TypeError(f"expected a BlockFormat, got {type(fmt).__name__}")
    shape = tuple(int(d) for d in image_shape)
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(f"a block-rounded activation needs a known per-image shape, got {image_shape}")
    c, k = shape[0], fmt.block
    r = int(np.prod(shape[1:], dtype=np.int64))
    if c <= k:  # one (possibly short) block spans the axis: no padding needed
        k = c
    nb = math.ceil(c / k)
    rank = 1 + len(shape)
    name = original_name or x
    src = x
    if nb * k != c:  # a last, shorter block: zeros change neither its max nor its NaN test
        pads = [0] * (2 * rank)
        pads[rank + 1] = nb * k - c
        src = b.op("Pad", [x, b.const(pads, np.int64, "pads")])
    blocks = b.op("Reshape", [src, b.const([-1, nb, k, r], np.int64, "shape")])
    axes = b.const([2], np.int64, "axes")
    amax = b.op("ReduceMax", [b.op("Abs", [blocks]), axes], keepdims=1)           # (N, nb, 1, R)
    special = None if finite else b.op("IsNaN", [b.op("ReduceSum", [b.op("Mul", [blocks, b.f32(0.0)]), axes],
                                                           keepdims=1)])
    field = b.op("BitShift", [b.op("BitCast", [amax], to=TensorProto.UINT32), b.const(np.uint32(23), hint="u")],
                 direction="RIGHT")
    field = b.op("Cast", [b.op("BitwiseAnd", [field, b.const(np.uint32(0xFF), hint="u")])], to=TensorProto.INT32)
    shared = b.op("Clip", [b.op("Sub", [field, b.const(np.int32(127 + fmt.emax), hint="i")]),
                           b.const(np.int32(SCALE_MIN_EXP), hint="i"), b.const(np.int32(SCALE_MAX_EXP), hint="i")])
    scaled = b.op("Mul", [blocks, _pow2(b, b.op("Neg", [shared]))])
    # finite=True always: a block without NaN/Inf scales below 2^(emax+1), and every element of a
    # block with one is overwritten by the canonical NaN below (whatever its rounding gave)
    elements = add_rounding(b, scaled, b.fresh("elem"), fmt.element, original_name=f"{name} elements", finite=True)
    value = b.op("Mul", [elements, _pow2(b, shared)])
    # NaN scale: the canonical NaN (this operand order keeps a -0 value -0 in onnxruntime's Where)
    if special is not None:
        value = b.op("Where", [special, b.f32_bits(0x7FC00000, "nan"), value])
    doc = (f"sieve: round {name} to {fmt} (blocks of {fmt.block} along axis 1, element"
           f" {rounding_method(fmt.element)}{', input proven finite' if finite else ''})")
    if nb * k == c:
        return b.op("Reshape", [value, b.const([-1, *shape], np.int64, "shape")], out=out, doc=doc)
    value = b.op("Reshape", [value, b.const([-1, nb * k, *shape[1:]], np.int64, "shape")])
    return b.op("Slice", [value, b.const([0], np.int64, "starts"), b.const([c], np.int64, "ends"),
                          b.const([1], np.int64, "axes")], out=out, doc=doc)
