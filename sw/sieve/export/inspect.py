"""``sieve inspect FILE.onnx``: what a SIEVE export stores, read back from the file itself.

The list comes from the model's ``sieve.tensors`` metadata; the bytes stored are measured on the
packed initializers actually present, so a file edited by another tool cannot misreport.  Formats
are read with :func:`sieve.blockfmt.parse_format`, so block-scaled (``mx32:fp8_e4m3``) and
per-channel (``ch4:e4m3``) weights are listed with their element codes *and* their side
initializer (one E8M0 scale byte per block, a packed ``bias_bits``-bit offset per output channel)
counted as stored.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from ..blockfmt import BlockFormat, ChannelFormat, parse_format, stored_bits
from ..cfloat import FormatError
from ..errors import SieveError
from .exporter import METADATA_KEY, decoded_shape, read_records

__all__ = ["inspect_onnx", "format_table"]


def inspect_onnx(path: str | Path) -> dict:
    """Every compressed tensor of a SIEVE ONNX file: format, elements, bytes stored, bytes as fp32."""
    path = Path(path)
    if not path.is_file():
        raise SieveError(f"{path} does not exist; give an .onnx file written by `sieve export`")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several types for a corrupt file
        raise SieveError(f"cannot read {path} as ONNX ({exc}); is it an .onnx file?") from exc
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        entries = read_records(model)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise SieveError(f"{path}: the '{METADATA_KEY}' metadata is unreadable ({exc})") from exc
    if entries is None:
        raise SieveError(f"{path} has no SIEVE metadata ('{METADATA_KEY}'); it was not written by `sieve export`")
    inits = {t.name: t for t in model.graph.initializer}
    rows = []
    for e in entries:
        try:
            fmt = parse_format(e.format)
        except FormatError as exc:
            raise SieveError(f"{path}: tensor {e.name} has an unreadable format ({exc})") from exc
        stored = side = 0
        if e.kind == "weight":
            packed = inits.get(e.packed)
            if packed is None:
                raise SieveError(f"{path}: packed initializer {e.packed!r} of {e.name} is missing")
            stored = len(packed.raw_data)
            expected = (e.elements * fmt.width + 7) // 8
            if stored != expected:
                raise SieveError(f"{path}: {e.name} stores {stored} bytes, {e.elements} codes of "
                                 f"{fmt.width} bits need {expected}")
            side = _side_bytes(model, inits, e, fmt, path)
        rows.append({"name": e.name, "kind": e.kind, "format": str(fmt), "bits": fmt.width,
                     "elements": e.elements, "bytes_stored": stored + side, "bytes_fp32": 4 * e.elements,
                     "method": e.method, "side_bytes": side, "side": _side_kind(fmt)})
    weights = [r for r in rows if r["kind"] == "weight"]
    stored = sum(r["bytes_stored"] for r in weights)
    fp32 = sum(r["bytes_fp32"] for r in weights)
    elements = sum(r["elements"] for r in weights)
    return {
        "path": str(path),
        "file_bytes": path.stat().st_size,
        "model": meta.get("sieve.model", ""),
        "variant": meta.get("sieve.variant", ""),
        "mode": meta.get("sieve.mode", ""),
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0),
        "input_shape": _input_shape(model),   # one image, as export built it (the plan's shape)
        "tensors": rows,
        "weights": {"count": len(weights), "elements": elements, "bytes_stored": stored, "bytes_fp32": fp32,
                    "side_bytes": sum(r["side_bytes"] for r in weights),
                    "mean_bits": (8.0 * stored / elements) if elements else 32.0,
                    "ratio": (fp32 / stored) if stored else 1.0},
    }


def _side_kind(fmt) -> str:
    if isinstance(fmt, BlockFormat):
        return "E8M0 scales"
    return "channel biases" if isinstance(fmt, ChannelFormat) else ""


def _side_bytes(model: onnx.ModelProto, inits: dict, e, fmt, path: Path) -> int:
    """Bytes of a layout weight's scales or biases, checked against what its shape needs (one
    uint8 E8M0 code per block; a ``bias_bits``-bit offset per output channel, packed)."""
    if not isinstance(fmt, (BlockFormat, ChannelFormat)):
        if e.side:
            raise SieveError(f"{path}: {e.name} in the scalar format {fmt} has side data {e.side!r}")
        return 0
    tensor = inits.get(e.side)
    if tensor is None:
        raise SieveError(f"{path}: the {_side_kind(fmt)} initializer {e.side!r} of {e.name} is missing")
    stored = len(tensor.raw_data)
    shape = decoded_shape(model.graph, inits, e.name)
    if isinstance(fmt, BlockFormat):
        expected = (stored_bits(fmt, shape) - e.elements * fmt.width) // fmt.scale_bits
    else:
        expected = -(-shape[0] * fmt.bias_bits // 8)
    if stored != expected:
        raise SieveError(f"{path}: {e.name} stores {stored} bytes of {_side_kind(fmt)}, its shape {shape} in {fmt}"
                         f" needs {expected}")
    return stored


def _input_shape(model: onnx.ModelProto) -> list:
    """(C, H, W) of the graph's first input after the batch axis (names for symbolic sizes)."""
    if not model.graph.input:
        return []
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims][1:]


def format_table(info: dict) -> str:
    """The inspection as an aligned text table with a totals line."""
    shape = "x".join(str(d) for d in info.get("input_shape") or []) or "?"
    lines = [f"{info['path']}: model {info['model'] or '?'}, variant {info['variant'] or '-'}, mode {info['mode']},"
             f" input {shape}, opset {info['opset']}, {info['file_bytes']:,} bytes"]
    if not info["tensors"]:
        lines.append("no compressed tensors (fp32 reference)")
        return "\n".join(lines)
    width = max(len(r["name"]) for r in info["tensors"])
    lines.append(f"{'tensor':<{width}}  {'kind':<10} {'format':<22} {'elements':>10} {'bytes stored':>13}"
                 f" {'bytes fp32':>11}  method")
    for r in info["tensors"]:
        side = f" + {r['side_bytes']:,} B {r['side']}" if r.get("side_bytes") else ""
        lines.append(f"{r['name']:<{width}}  {r['kind']:<10} {r['format']:<22} {r['elements']:>10,}"
                     f" {r['bytes_stored']:>13,} {r['bytes_fp32']:>11,}  {r['method']}{side}")
    w = info["weights"]
    side = f" (incl. {w['side_bytes']:,} of scales/biases)" if w.get("side_bytes") else ""
    lines.append(f"weights: {w['count']} tensors, {w['elements']:,} elements, {w['bytes_stored']:,} bytes stored{side}"
                 f" vs {w['bytes_fp32']:,} as fp32 ({w['ratio']:.2f}x smaller, {w['mean_bits']:.2f} bits/weight)")
    return "\n".join(lines)
