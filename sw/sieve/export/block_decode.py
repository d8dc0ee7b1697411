"""ONNX subgraphs that rebuild block-scaled (OCP MX) and per-channel-bias weights (issue 16).

A :class:`~sieve.blockfmt.BlockFormat` weight is stored as its packed element codes (the same
LSB-first stream and decode chain as a scalar weight, :func:`.weight_decode.add_codes_decode`,
decoded with the element format) plus one uint8 E8M0 code per block.  In the graph the scale
codes index a 256-entry float32 table (``2^(c-127)``, code 255 NaN: exact constants, no ``Pow``),
the per-block scales are spread over their ``k`` input channels with one ``Gather`` along axis 1
(index ``i // k``), and ``Mul`` applies them: a product of two exact float32 values rounded once,
as the emulator computes it; a NaN scale gives the canonical NaN through ``Where``.

A :class:`~sieve.blockfmt.ChannelFormat` weight is decoded with the element format at its
default bias and multiplied by ``2^(default - bias_c)`` per output channel (stored as the
per-channel biases, one int8 each, looked up in a table of exact powers of two): the product is
exact, because a per-channel bias only moves the binades (every value stays a normal or exact
float32 subnormal of the element grid).

All inputs are constants, so onnxruntime folds these subgraphs at session start.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..blockfmt import BlockFormat, ChannelFormat, encode_blocks, encode_channels, pow2_f32, scale_values
from ..emulator import decode as _decode_elem
from .onnx_graph import GraphBuilder
from .weight_decode import add_codes_decode

__all__ = ["add_block_weight_decode", "add_channel_weight_decode"]


def add_block_weight_decode(b: GraphBuilder, out: str, weight: np.ndarray, fmt: BlockFormat,
                            name: str | None = None) -> dict:
    """Store ``weight`` (axis 1 = input channels) in ``fmt`` and decode it as ``out``; returns
    what was stored (element bytes, scale bytes)."""
    w = np.ascontiguousarray(weight, dtype=np.float32)
    if w.ndim < 2:
        raise ValueError(f"{name or out}: a block-scaled weight needs at least 2 dimensions (axis 1 is blocked)")
    name = name or out
    codes, scales = encode_blocks(w, fmt)
    elements = b.fresh("elements")
    packed, nbytes, method = add_codes_decode(b, elements, codes.reshape(-1), fmt.element, w.shape, name)
    scale_codes = b.initializer(np.ascontiguousarray(scales, dtype=np.uint8), f"{name}.mx_scales")
    table = b.const(scale_values(np.arange(256)), hint="e8m0")
    per_block = b.op("Gather", [table, b.op("Cast", [scale_codes], to=TensorProto.INT64)])  # int64 indices
    spread = b.op("Gather", [per_block, b.const(np.arange(w.shape[1]) // fmt.block, np.int64, "blk")], axis=1)
    product = b.op("Mul", [elements, spread])
    b.op("Where", [b.op("IsNaN", [spread]), b.f32_bits(0x7FC00000, "nan"), product], out=out,
         doc=f"sieve: {name} in {fmt} ({codes.size} elements, {scales.size} E8M0 scales)")
    return {"name": name, "format": str(fmt), "elements": int(w.size), "element_bytes": int(nbytes),
            "scales": int(scales.size), "scale_bytes": int(scales.size), "packed": packed, "method": method}


def add_channel_weight_decode(b: GraphBuilder, out: str, weight: np.ndarray, fmt: ChannelFormat,
                              name: str | None = None) -> dict:
    """Store ``weight`` (axis 0 = output channels) in ``fmt`` and decode it as ``out``."""
    w = np.ascontiguousarray(weight, dtype=np.float32)
    name = name or out
    codes, biases = encode_channels(w, fmt)
    el = fmt.element
    shift = el.bias - biases  # value = element value at the default bias * 2^shift
    elements = b.fresh("elements")
    packed, nbytes, method = add_codes_decode(b, elements, codes.reshape(-1), el, w.shape, name)
    _check_exact(codes, biases, fmt)
    lo = int(shift.min())
    offsets = b.initializer((shift - lo).astype(np.uint8), f"{name}.ch_bias")
    table = b.const(pow2_f32(np.arange(lo, int(shift.max()) + 1)), hint="pow2")
    scales = b.op("Gather", [table, b.op("Cast", [offsets], to=TensorProto.INT64)])
    scales = b.op("Reshape", [scales, b.const([-1] + [1] * (w.ndim - 1), np.int64, "shape")])
    b.op("Mul", [elements, scales], out=out, doc=f"sieve: {name} in {fmt} ({w.shape[0]} channel biases)")
    return {"name": name, "format": str(fmt), "elements": int(w.size), "element_bytes": int(nbytes),
            "channels": int(w.shape[0]), "packed": packed, "method": method}


def _check_exact(codes: np.ndarray, biases: np.ndarray, fmt: ChannelFormat) -> None:
    """The graph's ``decode at the default bias x 2^shift`` must equal the emulator's decode at
    each channel's bias; refuse (rather than export a different model) if a shift left float32."""
    el = fmt.element
    for o, bias in enumerate(biases):
        want = _decode_elem(codes[o], el.with_(bias=int(bias)))
        got = _decode_elem(codes[o], el) * pow2_f32(np.int64(el.bias - int(bias)))
        if not np.array_equal(want.view(np.uint32), got.view(np.uint32)):
            raise ValueError(f"channel {o}: bias {bias} cannot be applied as an exact power of two in float32")
