"""Torch model + plan -> standard ONNX file that stores packed custom-float weights.

The model is exported once in fp32 with PyTorch's TorchScript exporter (it keeps parameter names
such as ``conv1.weight`` as initializer names and, with ``TrainingMode.PRESERVE``, does not fold
BatchNorm into the convolution weights the plan refers to).  The graph is then edited with
``onnx.helper``: each planned weight initializer is replaced by its packed codes plus a decode
subgraph producing a tensor of the same name, and a rounding subgraph is inserted in front of the
activation input of each planned Conv/Gemm/MatMul (the k-th node using a module's weight is the
module's k-th call site, ``<layer>.input#k``; the blocked, NCHWc-friendly rounding where
:mod:`.bounds` proves the input finite).  Block-scaled (OCP MX) and per-channel layouts
(:mod:`sieve.blockfmt`, issue 16) are stored as packed element codes plus a side initializer of
E8M0 scales or channel biases (:mod:`.block_decode`); a block-scaled activation is rounded by
:mod:`.block_rounding`.  Finally the graph is compacted (:mod:`.compact`: folded
constants, BatchNorm as scale + shift, short names) because every byte counts against the
weight-bits size bound.  Nothing is written unless the whole model validates (``onnx.checker``
full check); the file appears atomically.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from .. import __version__
from ..blockfmt import BlockFormat, ChannelFormat, check_plan_entry
from ..cfloat import Format
from ..codec import quantize
from ..errors import SieveError
from ..io_utils import atomic_path
from ..qeval import activation_name, parse_tensor_name, quantizable_tensors
from .block_decode import add_planned_weight_decodes
from .block_rounding import add_block_rounding, block_rounding_method
from .compact import batchnorm_to_affine, fold_constants, strip_graph
from .bounds import FINITE_LIMIT, magnitude_bounds
from .onnx_graph import GraphBuilder
from .rounding import (ACTIVATION_OPSET, BLOCKED_CHANNEL_MULTIPLE, add_blocked_rounding, add_rounding,
                       blocked_eligible, rounding_method)
from .weight_decode import WEIGHT_OPSET

__all__ = ["MODES", "TensorEntry", "ExportResult", "quantizable_names", "check_plan", "export_onnx",
           "build_model", "read_records", "METADATA_KEY",
           "set_metadata", "check_edited", "onnx_output", "save_export", "decoded_shape"]

MODES = ("full", "weights-only", "fp32")
METADATA_KEY = "sieve.tensors"
_CONSUMERS = ("Conv", "Gemm", "MatMul")


@dataclass
class TensorEntry:
    """One planned tensor as stored in the file (also the JSON in the model's metadata)."""

    name: str
    kind: str            # "weight" or "activation"
    format: str
    elements: int        # weight: numel; activation: numel per image
    bytes_stored: int    # stored bytes of a weight (packed codes + side); 0 for an activation
    bytes_fp32: int      # 4 * elements
    method: str          # weight: "table"/"arithmetic"; activation: "veltkamp"/"integer"/"block"
    tensor: str          # the decoded (weight) or rounded (activation) tensor name in the graph
    packed: str = ""     # initializer with the packed codes (weights)
    source: str = ""     # the fp32 tensor an activation rounding reads
    side: str = ""       # block/channel layout weights: initializer of the E8M0 scales / channel biases
    side_bytes: int = 0  # its bytes (included in bytes_stored)


@dataclass
class ExportResult:
    path: str
    mode: str
    opset: int
    file_bytes: int
    tensors: list[TensorEntry] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"path": self.path, "mode": self.mode, "opset": self.opset, "file_bytes": self.file_bytes,
                "tensors": [asdict(t) for t in self.tensors]}


_CODES = {"fields": "", "table": "t", "arithmetic": "a", "fast": "f", "blocked": "b", "veltkamp": "v",
          "integer": "i", "block": "k", "block-finite": "m"}
_METHODS = {v: k for k, v in _CODES.items() if v}


def _compact(e: TensorEntry) -> str:
    """The metadata record of one tensor, space-separated text (the file stores every byte).
    Tensor names are ``<layer>.weight`` / ``<layer>.input[#call]`` (contracts.md), so a record
    starts with the layer and the kind: ``<layer> w format packed-initializer [method]`` for a
    weight (the decoded tensor keeps the weight's name and its shape gives the element count; no
    method means the shared ``fields`` decode), ``<layer> w layout packed method side`` for a
    block-scaled or per-channel weight (``mx32:fp8_e4m3``, ``ch4:e4m3``: a layout's elements never
    use the shared decode, so the method is always there; ``side`` is the initializer of its E8M0
    scales or channel biases) and ``<layer> a format elements rounded-tensor source-tensor method
    [call]`` for an activation (elements per image; the call number only for a shared layer's
    later call sites); methods by their first letter."""
    layer, _, call = parse_tensor_name(e.name)
    if e.kind == "weight":
        if e.side:
            return " ".join([layer, "w", e.format, e.packed, _CODES[e.method], e.side])
        extra = [_CODES[e.method]] if _CODES[e.method] else []
        return " ".join([layer, "w", e.format, e.packed, *extra])
    return " ".join([layer, "a", e.format, str(e.elements), e.tensor, e.source, _CODES[e.method],
                     *([str(call)] if call > 1 else [])])


def decoded_shape(graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto], name: str) -> tuple[int, ...]:
    """Shape of the decoded weight ``name``: the shape its final Reshape is given (for a layout
    weight the ONNX-source rewrite transposes after decoding, the shape it was decoded in, the
    torch layout its blocks or channels refer to)."""
    for node in graph.node:
        if node.output and node.output[0] == name and node.op_type == "Transpose":
            return decoded_shape(graph, inits, node.input[0])
        if node.output and node.output[0] == name and node.op_type == "Reshape" and node.input[1] in inits:
            return tuple(int(d) for d in numpy_helper.to_array(inits[node.input[1]]))
    raise ValueError(f"no Reshape produces the decoded weight {name}")


def _decoded_elements(graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto], name: str) -> int:
    """Element count of the decoded weight ``name``."""
    return int(np.prod(decoded_shape(graph, inits, name), dtype=np.int64))


def read_records(proto: onnx.ModelProto) -> list[TensorEntry] | None:
    """The tensors a SIEVE file records in its metadata (None when it has no SIEVE metadata)."""
    meta = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in meta:
        return None
    inits = {t.name: t for t in proto.graph.initializer}
    out = []
    for text in filter(None, meta[METADATA_KEY].split(";")):
        r = text.split(" ")
        if len(r) in (4, 5) and r[1] == "w":
            name, fmt, packed = f"{r[0]}.weight", r[2], r[3]
            method = _METHODS[r[4]] if len(r) == 5 else "fields"
            stored = len(inits[packed].raw_data) if packed in inits else 0
            elements = _decoded_elements(proto.graph, inits, name)
            out.append(TensorEntry(name, "weight", fmt, elements, stored, 4 * elements, method, name, packed))
        elif len(r) == 6 and r[1] == "w":  # a block-scaled or per-channel layout: codes + side
            name, fmt, packed, method, side = f"{r[0]}.weight", r[2], r[3], _METHODS[r[4]], r[5]
            stored = len(inits[packed].raw_data) if packed in inits else 0
            side_bytes = len(inits[side].raw_data) if side in inits else 0
            elements = _decoded_elements(proto.graph, inits, name)
            out.append(TensorEntry(name, "weight", fmt, elements, stored + side_bytes, 4 * elements, method, name,
                                   packed, side=side, side_bytes=side_bytes))
        elif len(r) in (7, 8) and r[1] == "a":
            _, _, fmt, elements, tensor, source, method = r[:7]
            call = int(r[7]) if len(r) == 8 else 1
            if len(r) == 8 and call < 2:  # the first call is written without a number
                raise ValueError(f"call number {r[7]} in {text!r}")
            out.append(TensorEntry(activation_name(r[0], call), "activation", fmt, int(elements), 0,
                                   4 * int(elements), _METHODS[method], tensor, source=source))
        else:
            raise ValueError(f"unreadable record {text!r}")
    return out


def quantizable_names(model: torch.nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[str, int]]:
    """``{tensor name: (kind, elements)}`` for every Conv2d/Linear weight and the input of each of
    its call sites (contracts.md; the names :mod:`sieve.qeval` and the search use)."""
    infos = quantizable_tensors(model, tuple(input_shape))
    rank = {layer: k for k, layer in enumerate(dict.fromkeys(i.module_name for i in infos))}
    # per layer the weight first, then its call sites (the order error messages show)
    ordered = sorted(infos, key=lambda i: (rank[i.module_name], i.kind != "weight"))
    return {i.name: (i.kind, i.elements) for i in ordered}


def check_plan(known: dict[str, tuple[str, int]], plan: dict[str, Format],
               elements: dict[str, int] | None = None, model_name: str = "the model") -> None:
    """Raise one SieveError line listing every way ``plan`` does not fit the model (a
    per-channel layout is for weights only: one planned on an activation is refused too)."""
    problems = []
    unknown = sorted(n for n in plan if n not in known)
    if unknown:
        problems.append(f"not in the model: {', '.join(unknown)}")
    bad_type = sorted(n for n, f in plan.items() if not isinstance(f, (Format, BlockFormat, ChannelFormat)))
    if bad_type:
        problems.append(f"not a Format: {', '.join(bad_type)}")
    for n, f in plan.items():
        if n in known and isinstance(f, ChannelFormat):
            check_plan_entry(n, "weight" if known[n][0] == "weight" else "input", f)
    if elements:
        wrong = [f"{n} (plan {e}, model {known[n][1]})" for n, e in sorted(elements.items())
                 if n in known and int(e) != known[n][1]]
        if wrong:
            problems.append(f"element counts differ: {', '.join(wrong)}")
    if problems:
        example = ", ".join(list(known)[:4])
        raise SieveError(f"plan does not match {model_name}: {'; '.join(problems)} "
                         f"(the model's tensors are named like {example}, ...); search this model again")


def _torch_to_onnx(model: torch.nn.Module, input_shape: tuple[int, ...]) -> onnx.ModelProto:
    """fp32 ONNX of ``model`` with parameter names kept and a dynamic batch axis."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.zeros((1, *input_shape)),), buf, dynamo=False, export_params=True,
            do_constant_folding=False, keep_initializers_as_inputs=False, opset_version=WEIGHT_OPSET,
            training=torch.onnx.TrainingMode.PRESERVE, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load_from_string(buf.getvalue())
    _materialize_aliases(proto.graph)
    fold_constants(proto.graph)
    count = iter(range(1 << 30))
    batchnorm_to_affine(proto.graph, lambda: f"bn.{next(count)}")
    return proto


def _materialize_aliases(graph: onnx.GraphProto) -> None:
    """Turn ``Identity(initializer)`` aliases (the exporter deduplicates equal parameters) into
    initializers of their own, so every parameter name is an initializer that can be replaced alone."""
    inits = {t.name: t for t in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _consumers(graph: onnx.GraphProto, weight: str) -> list[int]:
    """Indices of the Conv/Gemm/MatMul nodes that use ``weight`` (directly or via
    Transpose/Identity), in graph order: the layer's call sites in the order forward() made them
    (the TorchScript exporter records operators as they run)."""
    names = {weight}
    for _ in range(4):  # follow short chains of layout ops
        names |= {o for node in graph.node if node.op_type in ("Transpose", "Identity")
                  and node.input[0] in names for o in node.output}
    found = [index for index, node in enumerate(graph.node)
             if node.op_type in _CONSUMERS and len(node.input) > 1 and node.input[1] in names]
    if not found:
        raise SieveError(f"cannot find the Conv/Gemm/MatMul that uses {weight} in the exported graph; "
                         "the layer must be an nn.Conv2d or nn.Linear called in forward()")
    return found


def _call_site_nodes(graph: onnx.GraphProto, known: dict[str, tuple[str, int]], acts: list[str]) -> dict[str, int]:
    """``{planned activation: index of the node it feeds}``: the k-th consumer of a layer's
    weight for ``<layer>.input#k``.  A layer whose graph nodes and forward() calls differ in
    number cannot be matched call by call, and is refused."""
    out = {}
    for name in acts:
        layer, _, call = parse_tensor_name(name)
        nodes = _consumers(graph, f"{layer}.weight")
        calls = sum(1 for n in known if parse_tensor_name(n)[:2] == (layer, "input"))
        if len(nodes) != calls:
            raise SieveError(f"{layer} is called {calls} time(s) in forward() but the exported graph has {len(nodes)}"
                             f" Conv/Gemm/MatMul node(s) using {layer}.weight; cannot tell which call {name} is")
        out[name] = nodes[call - 1]
    return out


def build_model(model: torch.nn.Module, plan: dict[str, Format], input_shape: tuple[int, ...],
                mode: str = "full", model_name: str = "model", variant: str = "",
                elements: dict[str, int] | None = None, progress: bool = False
                ) -> tuple[onnx.ModelProto, list[TensorEntry]]:
    """The edited ONNX model and what it stores (no file is written)."""
    if mode not in MODES:
        raise SieveError(f"unknown export mode {mode!r}; use one of {', '.join(MODES)}")
    model = model.eval()
    known = quantizable_names(model, input_shape)
    check_plan(known, plan, elements, model_name)
    shapes = ({i.name: tuple(i.shape) for i in quantizable_tensors(model, tuple(input_shape))}
              if any(isinstance(f, BlockFormat) for f in plan.values()) else {})
    proto = _torch_to_onnx(model, input_shape)
    graph = proto.graph
    entries: list[TensorEntry] = []
    b = GraphBuilder()
    params = dict(model.named_parameters())
    weights = [n for n in plan if known[n][0] == "weight"] if mode != "fp32" else []
    acts = [n for n in plan if known[n][0] == "activation"] if mode == "full" else []
    todo = [*weights, *acts]
    bar = None
    if progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc="export", unit="tensor", leave=False)

    # weights: initializer -> packed codes + decode nodes producing the same tensor name
    inits = {t.name: t for t in graph.initializer}
    decoded: set[str] = set()
    items = []
    for name in weights:
        if name not in inits:
            raise SieveError(f"the exported graph has no initializer {name}; cannot compress it")
        value = params[name].detach().cpu().numpy().astype(np.float32)
        onnx_value = numpy_helper.to_array(inits[name])
        if onnx_value.shape != value.shape:
            raise SieveError(f"{name}: ONNX shape {onnx_value.shape} differs from the model's {value.shape}")
        items.append((name, value, plan[name]))
    try:
        records = add_planned_weight_decodes(b, items)
    except ValueError as exc:  # a layout that cannot be rebuilt exactly: refuse rather than differ
        raise SieveError(f"cannot export exactly: {exc}") from exc
    for rec in records:
        decoded.add(rec.name)
        entries.append(TensorEntry(rec.name, "weight", rec.format, rec.elements, rec.bytes_stored + rec.side_bytes,
                                   4 * rec.elements, rec.method, rec.name, rec.packed, side=rec.side,
                                   side_bytes=rec.side_bytes))
        if bar:
            bar.update()
    decode_nodes = list(b.nodes)
    b.nodes.clear()

    # activations: rounding nodes right before each planned layer, in graph order (roundings
    # share constant-building nodes, which must come before every use)
    consumers = _call_site_nodes(graph, known, acts)
    acts = sorted(acts, key=consumers.__getitem__)
    bounds: dict[str, float] = {}
    if acts:  # the bound proof only serves the choice of rounding
        values = {n: (quantize(p.detach().cpu().numpy(), plan[n]) if n in weights else p.detach().cpu().numpy())
                  for n, p in params.items() if known.get(n, ("",))[0] == "weight"}
        bounds = magnitude_bounds(graph, values, {consumers[n]: plan[n] for n in acts})
    before: dict[int, list[onnx.NodeProto]] = {}
    producers = {o: i for i, n in enumerate(graph.node) for o in n.output}
    uses = Counter(i for n in graph.node for i in n.input)
    outputs = {o.name for o in graph.output}
    dropped: set[int] = set()
    for name in acts:
        layer = parse_tensor_name(name)[0]
        index = consumers[name]
        node = graph.node[index]
        fmt = plan[name]
        rounded = f"{name}.rounded"
        source = node.input[0]
        relu = producers.get(source)
        if (relu is not None and graph.node[relu].op_type == "Relu" and isinstance(fmt, Format)
                and not fmt.signed and uses[source] == 1 and source not in outputs):
            # an unsigned format sends every negative input (and -0, NaN) to +0 already:
            # round the Relu's input and drop the Relu (one node less in the file)
            source = graph.node[relu].input[0]
            dropped.add(relu)
        channels = int(params[f"{layer}.weight"].shape[1])
        grouped = any(a.name == "group" and a.i != 1 for a in node.attribute)
        try:
            if isinstance(fmt, BlockFormat):
                finite = bounds.get(source, np.inf) < FINITE_LIMIT
                method = block_rounding_method(fmt, finite)
                add_block_rounding(b, source, rounded, fmt, shapes[name], original_name=name, finite=finite)
            elif (node.op_type == "Conv" and not grouped and blocked_eligible(fmt)
                    and channels % BLOCKED_CHANNEL_MULTIPLE == 0 and bounds.get(source, np.inf) < FINITE_LIMIT):
                add_blocked_rounding(b, source, rounded, fmt, channels)
                method = "blocked"
            else:
                method = rounding_method(fmt)
                add_rounding(b, source, rounded, fmt, original_name=name)
        except ValueError as exc:
            raise SieveError(f"{name}: {exc}") from exc
        node.input[0] = rounded
        before.setdefault(index, []).extend(b.nodes)
        b.nodes.clear()
        entries.append(TensorEntry(name, "activation", str(fmt), known[name][1], 0, 4 * known[name][1],
                                   method, rounded, source=source))
        if bar:
            bar.update()
    if bar:
        bar.close()

    nodes = list(decode_nodes)
    for index, node in enumerate(graph.node):
        nodes.extend(before.get(index, []))
        if index not in dropped:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if t.name not in decoded]
    del graph.initializer[:]
    graph.initializer.extend(kept + b.initializers)

    # BitCast (opset 26) only where a rounding needs the sign bit of -0 or NaN; otherwise the
    # file stays at opset 18 so that older runtimes load it too
    opset = ACTIVATION_OPSET if any(n.op_type == "BitCast" for n in graph.node) else WEIGHT_OPSET
    del proto.opset_import[:]
    proto.opset_import.extend([helper.make_opsetid("", opset)])
    # short names for everything but the graph's input/output and the quantizable weights
    renamed = strip_graph(proto, {n for n, (kind, _) in known.items() if kind == "weight"})
    for e in entries:
        e.tensor = renamed.get(e.tensor, e.tensor)
        e.source = renamed.get(e.source, e.source)
        e.packed = renamed.get(e.packed, e.packed)
        e.side = renamed.get(e.side, e.side)
    proto.producer_name = "sieve"
    proto.producer_version = __version__
    proto.doc_string = ""
    del proto.metadata_props[:]
    set_metadata(proto, model_name, variant, mode, entries)
    check_edited(proto)
    return proto, entries


def set_metadata(proto: onnx.ModelProto, model_name: str, variant: str, mode: str,
                 entries: list[TensorEntry]) -> None:
    """Record the model, variant, mode and the stored tensors (``read_records``) in
    ``metadata_props``, replacing earlier SIEVE keys and keeping every other entry."""
    meta = {"sieve.model": model_name, "sieve.variant": variant, "sieve.mode": mode,
            METADATA_KEY: ";".join(_compact(e) for e in entries)}
    kept = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in meta.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))


def check_edited(proto: onnx.ModelProto) -> None:
    """``onnx.checker``'s full check of an edited model; a failure is SIEVE's bug, one line."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:  # a bug here, not the user's
        raise SieveError(f"the edited ONNX graph failed validation: {str(exc).splitlines()[0]}") from exc


def export_onnx(model: torch.nn.Module, plan: dict[str, Format], out: str | Path,
                input_shape: tuple[int, ...], mode: str = "full", model_name: str = "model",
                variant: str = "", elements: dict[str, int] | None = None,
                progress: bool = False) -> ExportResult:
    """Write the ONNX file for ``model`` under ``plan`` (``mode``: full, weights-only or fp32)."""
    proto, entries = build_model(model, plan, input_shape, mode, model_name, variant, elements, progress)
    return save_export(proto, out, mode, proto.opset_import[0].version, entries)


def onnx_output(out: str | Path) -> Path:
    """``out`` as a Path if it names a ``.onnx`` file, else one line saying so."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise SieveError(f"output file {out} should end in .onnx")
    return out


def save_export(proto: onnx.ModelProto, out: str | Path, mode: str, opset: int,
                entries: list) -> ExportResult:
    """Write an exported graph to ``out`` atomically (nothing is left behind on failure)."""
    out = onnx_output(out)
    with atomic_path(out) as tmp:
        onnx.save_model(proto, str(tmp))
    return ExportResult(str(out), mode, opset, out.stat().st_size, entries)
