"""The user's ONNX file + plan -> the same graph with packed weights and in-graph rounding.

Why edit the file instead of exporting the imported model again through torch: the user's graph
(its names, node order and operator choice, e.g. BatchNormalization kept as such) is what they
ship and what their tools expect, so the compressed file should differ from it only where the
plan asks.  The importer records where every plan tensor lives in the file
(``ImportedModel.tensor_map``: the initializer of ``<layer>.weight``, the node index and input
tensor of ``<layer>.input[#k]``), and this module edits a copy of the file there:

* each planned weight initializer becomes its packed codes (``ceil(n*w/8)`` uint8 bytes) plus the
  shared decode chains of :mod:`.weight_decode`, which produce ``<layer>.weight``; an
  ``Identity`` gives the decoded tensor the initializer's name, so the consuming nodes stay as
  they were.  An initializer that other nodes read too (a weight shared by several layers, or
  read by an unplanned node) is kept for them, and the planned layer's nodes read the decoded
  copy instead;
* each planned activation gets the rounding of :mod:`.rounding` on the one edge into its node,
  inserted right before that node (another node reading the same tensor still sees fp32, as in
  ``sieve.qeval.apply_plan``); a Conv input that :mod:`.bounds` proves finite takes the blocked,
  NCHWc-friendly variant, as in the torch export;
* the decode chains come first (they read only initializers), every original node keeps its
  place; an older opset is raised to what the new nodes need (18 for the decode, 26 where a
  rounding needs ``BitCast``) with ``onnx.version_converter`` before any edit.

The metadata is the exporter's (:func:`.exporter.set_metadata`), so ``sieve inspect``,
``verify.compare`` and the runtime read a rewritten file like any SIEVE export.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dataclasses import replace

from ..blockfmt import BlockFormat, is_layout_format
from ..cfloat import Format
from ..codec import quantize
from ..errors import SieveError
from ..qeval import parse_tensor_name
from .exporter import MODES, ExportResult, TensorEntry, check_edited, save_export, set_metadata
from .onnx_graph import GraphBuilder
from .bounds import FINITE_LIMIT, magnitude_bounds
from .rounding import (ACTIVATION_OPSET, BLOCKED_CHANNEL_MULTIPLE, add_blocked_rounding, add_rounding,
                       blocked_eligible, rounding_method)
from .block_decode import add_planned_weight_decodes
from .block_rounding import add_block_rounding, block_rounding_method
from .weight_decode import WEIGHT_OPSET

__all__ = ["rewrite_model", "rewrite_onnx"]

_DEFAULT = ("", "ai.onnx")


def _opset(proto: onnx.ModelProto) -> int:
    return max(o.version for o in proto.opset_import if o.domain in _DEFAULT)


def _names(graph: onnx.GraphProto) -> set[str]:
    return ({v for n in graph.node for v in (*n.input, *n.output)} | {t.name for t in graph.initializer}
            | {v.name for v in (*graph.input, *graph.output, *graph.value_info)})


def _builder(used: set[str]) -> GraphBuilder:
    """A GraphBuilder whose generated names (``<prefix><number>``) cannot meet the file's."""
    for prefix in ("sv", "sieve", "sieve_", "__sieve"):
        if not any(re.fullmatch(rf"{re.escape(prefix)}\d+", n) for n in used):
            return GraphBuilder(prefix=prefix)
    raise SieveError("the ONNX file already uses every name SIEVE would generate (sv<n>, sieve<n> ...); rename them")


_TAG = "__sieve_node_{}"


def _upgrade(proto: onnx.ModelProto, opset: int, path: str) -> onnx.ModelProto:
    """``proto`` (its nodes tagged by name, see :func:`rewrite_model`) converted to ``opset``."""
    from onnx import version_converter

    if proto.ir_version < 4:   # before IR 4 an initializer had to be a graph input too; the converter
        proto.ir_version = 4   # then calls the new ones (packed codes, materialized weights) undefined
    try:
        converted = version_converter.convert_version(proto, opset)
    except Exception as exc:  # noqa: BLE001 - the converter raises many types, all the same problem
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SieveError(f"{path}: cannot raise opset {_opset(proto)} to {opset}, which the compressed graph needs "
                         f"({first}); re-export the model at opset {opset} or later") from None
    if {n.name for n in converted.graph.node} >= {n.name for n in proto.graph.node}:
        converted.graph.ClearField("value_info")   # shapes inferred for the old opset, not needed
        return converted
    raise SieveError(f"{path}: converting opset {_opset(proto)} to {opset} replaced some of the file's nodes; "
                     f"re-export the model at opset {opset} or later")


def _readers(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """Tensor name -> indices of the nodes that read it (subgraphs of If/Loop included)."""
    from ..onnx_import.importer import node_reads

    out: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node_reads(node):
            out.setdefault(name, []).append(i)
    return out


def _final_readers(graph: onnx.GraphProto, readers: dict[str, list[int]], name: str) -> tuple[set[int], set[str]]:
    """The non-Identity nodes reading ``name`` directly or through Identity chains, and the
    tensor names along the way."""
    nodes, names, todo = set(), {name}, [name]
    while todo:
        for i in readers.get(todo.pop(), []):
            node = graph.node[i]
            if node.op_type == "Identity" and node.domain in _DEFAULT:
                names.add(node.output[0])
                todo.append(node.output[0])
            else:
                nodes.add(i)
    return nodes, names


def _layer_nodes(tensor_map: dict[str, dict], layer: str) -> list[tuple[str, dict]]:
    return [(k, v) for k, v in tensor_map.items() if parse_tensor_name(k)[:2] == (layer, "input")]


def _node_at(graph: onnx.GraphProto, where: dict, name: str) -> int:
    """Position of the node a tensor_map entry names (by the node's tag), checked against the file."""
    tag = _TAG.format(where.get("index"))
    index = next((i for i, n in enumerate(graph.node) if n.name == tag), None)
    if (index is None or graph.node[index].op_type != where["op"]
            or ("tensor" in where and graph.node[index].input[0] != where["tensor"])):
        raise SieveError(f"{name}: its {where['op']} node is not in the file's main graph (inside an If branch?);"
                         " SIEVE cannot compress it in place, leave it out of the plan")
    return index


def _materialize_constants(graph: onnx.GraphProto, names: set[str]) -> None:
    """Turn ``Constant`` nodes producing any of ``names`` into initializers (same name), and
    ``ConstantOfShape`` nodes whose shape is an initializer (how the ONNX zoo's "light" Caffe
    conversions generate their weights in the graph) into the filled initializer."""
    keep = []
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] in names and node.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(node.attribute[0].t)
            t.name = node.output[0]
            graph.initializer.append(t)
        elif node.op_type == "ConstantOfShape" and node.output[0] in names and node.input[0] in inits:
            fill = next((numpy_helper.to_array(a.t) for a in node.attribute if a.name == "value"),
                        np.zeros(1, np.float32))
            shape = tuple(int(d) for d in numpy_helper.to_array(inits[node.input[0]]).reshape(-1))
            graph.initializer.append(numpy_helper.from_array(np.full(shape, fill.reshape(-1)[0], fill.dtype),
                                                             node.output[0]))
        else:
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def _finite_inputs(graph: onnx.GraphProto, tensor_map: dict[str, dict], plan: dict[str, Format], acts: list[str],
                   rounded_weights: dict[str, np.ndarray]) -> dict[str, int]:
    """``{activation: channels}`` for the planned Conv inputs that can take the blocked rounding
    (:func:`.rounding.add_blocked_rounding`, NCHWc-friendly): an ungrouped Conv, a format it
    covers, a whole number of channel blocks, and a magnitude bound (:mod:`.bounds`, computed
    with the rounded weights and the planned roundings) that proves the input finite."""
    inits = {t.name: t for t in graph.initializer}
    chosen: dict[str, tuple[int, int]] = {}
    for name in acts:
        where = tensor_map[name]
        node = graph.node[_node_at(graph, where, name)]
        layer = parse_tensor_name(name)[0]
        weight = tensor_map.get(f"{layer}.weight", {}).get("initializer")
        grouped = any(a.name == "group" and a.i != 1 for a in node.attribute)
        if (node.op_type != "Conv" or grouped or weight not in inits or not isinstance(plan[name], Format)
                or not blocked_eligible(plan[name])):
            continue
        channels = int(inits[weight].dims[1])
        if channels % BLOCKED_CHANNEL_MULTIPLE == 0:
            chosen[name] = (_node_at(graph, where, name), channels)
    if not chosen:
        return {}
    values: dict[str, np.ndarray] = {}   # |rounded weight|, the largest where layers share an initializer
    for n, v in rounded_weights.items():
        q, init = np.abs(v), tensor_map[n]["initializer"]
        values[init] = np.maximum(values[init], q) if init in values else q
    rounded = {_node_at(graph, tensor_map[n], n): plan[n] for n in acts}
    bounds = magnitude_bounds(graph, values, rounded)
    return {n: channels for n, (_, channels) in chosen.items()
            if bounds.get(tensor_map[n]["tensor"], np.inf) < FINITE_LIMIT}


def rewrite_model(proto: onnx.ModelProto, tensor_map: dict[str, dict], plan: dict[str, Format],
                  known: dict[str, tuple[str, int]], mode: str = "full", model_name: str = "model",
                  variant: str = "", path: str = "the model", shapes: dict[str, tuple[int, ...]] | None = None
                  ) -> tuple[onnx.ModelProto, list[TensorEntry]]:
    """A compressed copy of ``proto`` (the file the importer read; ``tensor_map`` its map of
    plan names, ``known`` the model's ``quantizable_names``) and what it stores.  ``shapes``: the
    per-image shape of each activation planned in a block format (``TensorInfo.shape``).

    A block-scaled or per-channel weight whose initializer is stored transposed (a MatMul's or a
    ``transB=0`` Gemm's ``(in, out)``) is encoded in the torch layout (blocks along the input
    features, channels along the outputs, as :mod:`sieve.blockfmt` and the emulated model
    define them), decoded in that layout and transposed back in the graph."""
    if mode not in MODES:
        raise SieveError(f"unknown export mode {mode!r}; use one of {', '.join(MODES)}")
    weights = [n for n in plan if known[n][0] == "weight"] if mode != "fp32" else []
    acts = [n for n in plan if known[n][0] == "activation"] if mode == "full" else []
    shapes = shapes or {}
    unshaped = [n for n in acts if isinstance(plan[n], BlockFormat) and n not in shapes]
    if unshaped:
        raise SieveError(f"{unshaped[0]} is planned in the block format {plan[unshaped[0]]}, whose blocks need the"
                         " activation's per-image shape; export it through `sieve export` (it passes the shapes)")
    missing = [n for n in (*weights, *acts) if n not in tensor_map]
    if missing:
        raise SieveError(f"{path}: the importer did not record where {missing[0]} lives in the file; "
                         "this plan is not for this ONNX file")
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    entries: list[TensorEntry] = []
    if not weights and not acts:   # the fp32 "export": the user's file with SIEVE metadata
        set_metadata(out, model_name, "", mode, entries)
        check_edited(out)
        return out, entries
    graph = out.graph
    # node names become tags for the edits (the importer's node indices; nodes may move when
    # Constants become initializers or the opset converter inserts some), restored at the end
    names = [n.name for n in graph.node]
    for i, node in enumerate(graph.node):
        node.name = _TAG.format(i)
    _materialize_constants(graph, {tensor_map[n]["initializer"] for n in weights})
    used = _names(graph)
    b = _builder(used)
    inits = {t.name: t for t in graph.initializer}

    # the new subgraphs first (they depend on nothing but the plan and the initializers' values)
    items = []
    for name in weights:
        init = tensor_map[name]["initializer"]
        if init not in inits:
            raise SieveError(f"{name}: {path} computes it ({init!r}) instead of storing it as an initializer; "
                             "leave it out of the plan or store the weight as an initializer")
        value = numpy_helper.to_array(inits[init])
        if value.dtype != np.float32:
            raise SieveError(f"{name}: initializer {init!r} is {value.dtype}; SIEVE compresses float32 weights only")
        items.append((name, value, plan[name]))
    turned = {n for n, v, f in items if is_layout_format(f) and tensor_map[n].get("transposed")}
    bad = [n for n, v, _ in items if n in turned and v.ndim != 2]
    if bad:
        raise SieveError(f"{bad[0]}: a transposed weight of {dict((n, v.ndim) for n, v, _ in items)[bad[0]]}"
                         f" dimensions cannot take the layout {plan[bad[0]]}; give it a scalar format")
    staged = [(b.fresh("wt") if n in turned else n, v.T if n in turned else v, f) for n, v, f in items]
    try:
        records = add_planned_weight_decodes(b, staged)
    except ValueError as exc:  # a layout that cannot be rebuilt exactly: refuse rather than differ
        raise SieveError(f"{path}: cannot export exactly: {exc}") from exc
    for k, ((name, _, _), (decoded, _, _)) in enumerate(zip(items, staged)):
        if name in turned:  # decoded in the torch layout; the file's nodes read the stored one
            b.op("Transpose", [decoded], out=name, perm=[1, 0])
            records[k] = replace(records[k], name=name)
    decode_nodes = list(b.nodes)
    b.nodes.clear()
    acts = sorted(acts, key=lambda n: tensor_map[n]["index"])  # shared constants before every use
    finite = _finite_inputs(graph, tensor_map, plan, acts,
                            {n: quantize(v.T, plan[n]).T if n in turned else quantize(v, plan[n]) for n, v, _ in items})
    roundings: dict[str, list[onnx.NodeProto]] = {}
    methods: dict[str, str] = {}
    for name in acts:
        rounded = f"{name}.rounded"
        if rounded in used:
            raise SieveError(f"{path} already has a tensor named {rounded!r}; rename it")
        fmt, source = plan[name], tensor_map[name]["tensor"]
        try:
            if isinstance(fmt, BlockFormat):
                methods[name] = block_rounding_method(fmt)
                add_block_rounding(b, source, rounded, fmt, shapes[name], original_name=name)
            elif name in finite:
                add_blocked_rounding(b, source, rounded, fmt, finite[name])
                methods[name] = "blocked"
            else:
                methods[name] = rounding_method(fmt)
                add_rounding(b, source, rounded, fmt, original_name=name)
        except ValueError as exc:
            raise SieveError(f"{name}: {exc}") from exc
        roundings[name] = list(b.nodes)
        b.nodes.clear()
    needed = WEIGHT_OPSET
    if any(n.op_type == "BitCast" for ns in roundings.values() for n in ns):
        needed = ACTIVATION_OPSET
    if _opset(out) < needed:
        out = _upgrade(out, needed, path)
        graph = out.graph
        inits = {t.name: t for t in graph.initializer}

    # weights: the initializer is replaced when only its layer reads it, else the layer's nodes
    # read the decoded copy and the initializer stays for the other readers
    readers = _readers(graph)
    outputs = {o.name for o in graph.output}
    aliases, dropped = [], set()
    planned = {tensor_map[n]["initializer"] for n in weights}   # dropped below when nobody reads them
    for name, rec in zip(weights, records):
        layer = parse_tensor_name(name)[0]
        init = tensor_map[name]["initializer"]
        nodes = {_node_at(graph, where, key) for key, where in _layer_nodes(tensor_map, layer)}
        finals, chain = _final_readers(graph, readers, init)
        exclusive = finals <= nodes and not chain & outputs
        if exclusive and init == name:
            dropped.add(init)
        elif exclusive and name not in used:
            dropped.add(init)
            aliases.append(helper.make_node("Identity", [name], [init]))
        elif name not in used or name == init:
            if name == init:   # keep the fp32 tensor for the other readers under a fresh name
                spare = b.fresh("w")
                planned.add(spare)
                inits[init].name = spare
                for node in graph.node:
                    node.input[:] = [spare if v == init else v for v in node.input]
                for v in graph.input:
                    if v.name == init:
                        v.name = spare
            for i in nodes:
                graph.node[i].input[1] = name
        else:
            raise SieveError(f"{path} already has a tensor named {name!r} that is not {layer}'s weight; rename it")
        entries.append(TensorEntry(name, "weight", rec.format, rec.elements, rec.bytes_stored + rec.side_bytes,
                                   4 * rec.elements, rec.method, name, rec.packed, side=rec.side,
                                   side_bytes=rec.side_bytes))

    # activations: the rounding on the edge into the planned node, right before it
    before: dict[int, list[onnx.NodeProto]] = {}
    for name in acts:
        index = _node_at(graph, tensor_map[name], name)
        graph.node[index].input[0] = f"{name}.rounded"
        before.setdefault(index, []).extend(roundings[name])
        entries.append(TensorEntry(name, "activation", str(plan[name]), known[name][1], 0, 4 * known[name][1],
                                   methods[name], f"{name}.rounded",
                                   source=tensor_map[name]["tensor"]))

    nodes = decode_nodes + aliases
    for index, node in enumerate(graph.node):
        nodes.extend(before.get(index, []))
        nodes.append(node)
    tags = {_TAG.format(i): name for i, name in enumerate(names)}
    for node in nodes:
        if node.name in tags:
            node.name = tags[node.name]
    del graph.node[:]
    graph.node.extend(nodes)
    # replaced initializers, and planned ones no node reads any more (all their layers read copies)
    still = {v for n in graph.node for v in n.input} | outputs
    gone = dropped | {t.name for t in graph.initializer if t.name in planned and t.name not in still}
    kept = [t for t in graph.initializer if t.name not in gone]
    del graph.initializer[:]
    graph.initializer.extend(kept + b.initializers)
    ins = [v for v in graph.input if v.name not in gone]
    del graph.input[:]
    graph.input.extend(ins)
    for o in out.opset_import:
        if o.domain in _DEFAULT:
            o.version = max(o.version, needed)
    out.ir_version = max(out.ir_version, helper.find_min_ir_version_for(list(out.opset_import), ignore_unknown=True))
    set_metadata(out, model_name, variant, mode, entries)
    check_edited(out)
    return out, entries


def rewrite_onnx(path: str | Path, tensor_map: dict[str, dict], plan: dict[str, Format],
                 known: dict[str, tuple[str, int]], out: str | Path, mode: str = "full",
                 model_name: str = "model", variant: str = "",
                 shapes: dict[str, tuple[int, ...]] | None = None) -> ExportResult:
    """Write the compressed copy of the ONNX file ``path`` (see :func:`rewrite_model`)."""
    from ..onnx_import.reader import read_onnx

    proto = read_onnx(path).model
    rewritten, entries = rewrite_model(proto, tensor_map, plan, known, mode, model_name, variant, str(path), shapes)
    return save_export(rewritten, out, mode, _opset(rewritten), entries)
