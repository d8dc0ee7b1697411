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
per-channel bias offsets, ``bias_bits`` each and packed like element codes, looked up in a table
of the exact powers of two from the tensor's base on, which plays the 8-bit base): the product is
exact, because a per-channel bias only moves the binades (every value stays a normal or exact
float32 subnormal of the element grid).

Both end in a ``Reshape`` to the weight's shape, as the scalar decode does, so the decoded tensor's
shape (and element count) can be read back from the file.  :func:`add_planned_weight_decodes`
routes every planned weight of an export to the scalar decode (:mod:`.weight_decode`) or to one
of these, in the plan's order.

All inputs are constants, so onnxruntime folds these subgraphs at session start.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..blockfmt import (BlockFormat, ChannelFormat, encode_blocks, encode_channels, is_layout_format, pow2_f32,
                        scale_values)
from ..cfloat import Format
from ..emulator import decode as _decode_elem, pack
from .onnx_graph import GraphBuilder
from .weight_decode import (CodesItem, WeightRecord, add_codes_decode, add_codes_decodes, add_unsigned_codes,
                            add_weight_decodes)

__all__ = ["add_block_weight_decode", "add_channel_weight_decode", "add_planned_weight_decodes"]


def _block_scale(b: GraphBuilder, elements: str, out: str, shape: tuple[int, ...], scales: np.ndarray,
                 fmt: BlockFormat, name: str) -> str:
    """Apply the E8M0 ``scales`` (uint8 codes, stored as ``<name>.mx_scales``) to the decoded
    ``elements`` of a weight of ``shape``; the result is ``out``.  Returns the side initializer."""
    side = b.initializer(np.ascontiguousarray(scales, dtype=np.uint8), f"{name}.mx_scales")
    table = b.const(scale_values(np.arange(256)), hint="e8m0")
    per_block = b.op("Gather", [table, b.op("Cast", [side], to=TensorProto.INT64)])  # int64 indices
    spread = b.op("Gather", [per_block, b.const(np.arange(shape[1]) // fmt.block, np.int64, "blk")], axis=1)
    product = b.op("Mul", [elements, spread])
    # (this operand order keeps a -0 product -0 in onnxruntime's Where; tested)
    value = b.op("Where", [b.op("IsNaN", [spread]), b.f32_bits(0x7FC00000, "nan"), product])
    b.op("Reshape", [value, b.const(list(shape), np.int64, "shape")], out=out,
         doc=f"sieve: {name} in {fmt} ({int(np.prod(shape))} elements, {scales.size} E8M0 scales)")
    return side


def _channel_scale(b: GraphBuilder, elements: str, out: str, shape: tuple[int, ...], shift: np.ndarray,
                   fmt: ChannelFormat, name: str) -> str:
    """Multiply the decoded ``elements`` (at the element's default bias) by ``2^shift`` per output
    channel (stored as ``bias_bits``-bit offsets packed in ``<name>.ch_bias``); the result is ``out``."""
    lo = int(shift.min())
    offsets = (shift - lo).astype(np.int64)
    if offsets.max(initial=0) >= 1 << fmt.bias_bits:
        raise ValueError(f"{name}: channel biases span {int(offsets.max()) + 1} binades, more than {fmt} stores")
    width = Format(1, fmt.bias_bits - 1, signed=False)  # any Format of that width packs unsigned codes
    side = b.initializer(np.frombuffer(pack(offsets, width), dtype=np.uint8).copy(), f"{name}.ch_bias")
    table = b.const(pow2_f32(np.arange(lo, lo + (1 << fmt.bias_bits))), hint="pow2")
    scales = b.op("Gather", [table, add_unsigned_codes(b, side, shape[0], fmt.bias_bits)])
    scales = b.op("Reshape", [scales, b.const([-1] + [1] * (len(shape) - 1), np.int64, "shape")])
    value = b.op("Mul", [elements, scales])
    b.op("Reshape", [value, b.const(list(shape), np.int64, "shape")], out=out,
         doc=f"sieve: {name} in {fmt} ({shape[0]} channel biases)")
    return side


def _side_bytes(fmt, side_values: np.ndarray) -> int:
    """Bytes of a layout's side initializer: one per E8M0 scale, ``bias_bits`` per channel packed."""
    n = int(np.size(side_values))
    return n if isinstance(fmt, BlockFormat) else -(-n * fmt.bias_bits // 8)


def _encode_layout(name: str, w: np.ndarray, fmt) -> tuple[np.ndarray, np.ndarray]:
    """``(element codes, side values)``: E8M0 codes of a block layout, or the per-channel shifts
    ``default bias - bias`` of a channel layout (checked to apply exactly)."""
    if w.ndim < 2:
        raise ValueError(f"{name}: a {fmt} layout needs a weight of at least 2 dimensions, got shape {w.shape}")
    if isinstance(fmt, BlockFormat):
        return encode_blocks(w, fmt)
    codes, biases = encode_channels(w, fmt)
    try:
        _check_exact(codes, biases, fmt)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc
    return codes, fmt.element.bias - biases


def _apply_side(b: GraphBuilder, elements: str, out: str, shape: tuple[int, ...], side_values: np.ndarray,
                fmt, name: str) -> str:
    """The layout's own step on the decoded ``elements``: E8M0 scales per block, or powers of two
    per output channel; returns the side initializer."""
    apply = _block_scale if isinstance(fmt, BlockFormat) else _channel_scale
    return apply(b, elements, out, shape, side_values, fmt, name)


def _add_layout_decode(b: GraphBuilder, out: str, weight: np.ndarray, fmt, name: str | None) -> tuple[dict, np.ndarray]:
    """One block or channel weight stored and decoded as ``out`` on its own decode chain: the
    record both public entry points return, and the side values it stored."""
    w = np.ascontiguousarray(weight, dtype=np.float32)
    name = name or out
    codes, side_values = _encode_layout(name, w, fmt)
    elements = b.fresh("elements")
    packed, nbytes, method = add_codes_decode(b, elements, codes.reshape(-1), fmt.element, w.shape, name)
    side = _apply_side(b, elements, out, w.shape, side_values, fmt, name)
    return {"name": name, "format": str(fmt), "elements": int(w.size), "element_bytes": int(nbytes),
            "packed": packed, "method": method, "side": side, "side_bytes": _side_bytes(fmt, side_values)}, side_values


def add_block_weight_decode(b: GraphBuilder, out: str, weight: np.ndarray, fmt: BlockFormat,
                            name: str | None = None) -> dict:
    """Store ``weight`` (axis 1 = input channels) in ``fmt`` and decode it as ``out``; returns
    what was stored (element bytes, scale bytes)."""
    record, scales = _add_layout_decode(b, out, weight, fmt, name)
    return {**record, "scales": int(scales.size), "scale_bytes": int(scales.size)}


def add_channel_weight_decode(b: GraphBuilder, out: str, weight: np.ndarray, fmt: ChannelFormat,
                              name: str | None = None) -> dict:
    """Store ``weight`` (axis 0 = output channels) in ``fmt`` and decode it as ``out``."""
    record, _ = _add_layout_decode(b, out, weight, fmt, name)
    return {**record, "channels": int(np.shape(weight)[0])}


def add_planned_weight_decodes(b: GraphBuilder, weights: list[tuple[str, np.ndarray, object]]
                               ) -> list[WeightRecord]:
    """Every ``(name, weight, format)`` of an export stored and decoded under its own name.

    Scalar Formats go through the shared scalar decodes (:func:`.weight_decode.add_weight_decodes`).
    Block and per-channel layouts store their element codes packed like a scalar weight's -- the
    weights whose elements share a Format share one decode chain (:func:`.weight_decode.add_codes_decodes`),
    so the graph does not grow by a chain per tensor -- plus the E8M0 scales or channel biases in
    a side initializer, applied per weight.  Records in the order given; ``bytes_stored`` counts
    the element codes, ``side_bytes`` the scales or biases.  Raises ValueError when a layout
    cannot be decoded exactly."""
    scalar = [t for t in weights if not is_layout_format(t[2])]
    records = {rec.name: rec for rec in add_weight_decodes(b, scalar)} if scalar else {}
    by_element: dict = {}
    for name, w, fmt in weights:
        if is_layout_format(fmt):
            w = np.ascontiguousarray(w, dtype=np.float32)
            codes, side = _encode_layout(name, w, fmt)
            by_element.setdefault(fmt.element, []).append((name, w, fmt, codes, side))
    for element, group in by_element.items():
        items = [CodesItem(b.fresh("elements"), codes.reshape(-1), tuple(w.shape), name)
                 for name, w, _, codes, _ in group]
        for item, (name, w, fmt, _, side_values), (packed, nbytes, method) in zip(
                items, group, add_codes_decodes(b, element, items)):
            side = _apply_side(b, item.out, name, tuple(w.shape), side_values, fmt, name)
            records[name] = WeightRecord(name, str(fmt), int(w.size), tuple(w.shape), packed, nbytes, method,
                                         side, _side_bytes(fmt, side_values))
    return [records[name] for name, _, _ in weights]


def _check_exact(codes: np.ndarray, biases: np.ndarray, fmt: ChannelFormat) -> None:
    """The graph's ``decode at the default bias x 2^shift`` must equal the emulator's decode at
    each channel's bias; refuse (rather than export a different model) if a shift left float32."""
    el = fmt.element
    for o, bias in enumerate(biases):
        want = _decode_elem(codes[o], el.with_(bias=int(bias)))
        got = _decode_elem(codes[o], el) * pow2_f32(np.int64(el.bias - int(bias)))
        if not np.array_equal(want.view(np.uint32), got.view(np.uint32)):
            raise ValueError(f"channel {o}: bias {bias} cannot be applied as an exact power of two in float32")
