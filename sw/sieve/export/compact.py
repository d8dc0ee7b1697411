"""Shrink an exported ONNX graph without changing what it computes.

The file-size bound of a compressed export counts every byte, so what the TorchScript exporter
adds around the weights matters once the weights are packed: long value names such as
``/layer1/layer1.0/conv1/Conv_output_0``, node names, chains of ``Constant``/``Shape``/``Unsqueeze``
nodes that compute constant pad and slice arguments, default attributes, and four float32
BatchNormalization statistics per channel.  The passes here

* fold every node whose inputs are all constants (outputs of ``Constant`` nodes, or of nodes
  folded before) into an initializer, evaluated with ``onnx.reference``;
* rewrite an inference ``BatchNormalization`` as ``Mul`` by a per-channel scale and ``Add`` of a
  per-channel shift (two floats per channel instead of four), computed exactly as PyTorch's CPU
  kernel does: ``alpha = weight * (1 / sqrt(var + eps))`` in float32 and ``beta = bias - mean * alpha``
  rounded once (PyTorch fuses that multiply-add);
* drop node names, doc strings and attributes equal to their defaults, and give every value that
  is not a graph input/output or a kept name (the quantizable weights) a short name.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["fold_constants", "batchnorm_to_affine", "torch_batchnorm_affine", "strip_graph"]


def fold_constants(graph: onnx.GraphProto) -> None:
    """Replace constant-only subgraphs (seeded by ``Constant`` nodes) by initializers."""
    from onnx.reference import ReferenceEvaluator

    known: dict[str, np.ndarray] = {}
    keep: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "Constant":
            known[node.output[0]] = numpy_helper.to_array(node.attribute[0].t) if node.attribute[0].name == "value" \
                else np.asarray(helper.get_attribute_value(node.attribute[0]))
            continue
        inputs = [i for i in node.input if i]
        plain = all(a.type not in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
        if inputs and plain and all(i in known for i in inputs):
            sub = helper.make_graph(
                [node], "fold", [], [helper.make_value_info(o, onnx.TypeProto()) for o in node.output],
                initializer=[numpy_helper.from_array(known[i], i) for i in dict.fromkeys(inputs)])
            opset = [helper.make_opsetid("", 18)]
            results = ReferenceEvaluator(helper.make_model(sub, opset_imports=opset)).run(None, {})
            for name, value in zip(node.output, results):
                known[name] = np.asarray(value)
            continue
        keep.append(node)
    used = {i for n in keep for i in n.input} | {o.name for o in graph.output}
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in known.items() if k in used)
    del graph.node[:]
    graph.node.extend(keep)


def _round_f32(value: Fraction) -> np.float32:
    """``value`` rounded once to the nearest float32 (ties to even)."""
    guess = np.float32(float(value))
    best = None
    for cand in (np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))):
        if not np.isfinite(cand):
            continue
        err = abs(Fraction(float(cand)) - value)
        even = int(cand.view(np.uint32)) % 2 == 0
        if best is None or err < best[0] or (err == best[0] and even):
            best = (err, cand)
    return np.float32(best[1])


def torch_batchnorm_affine(weight: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray,
                           eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(alpha, beta)`` of an eval BatchNorm, bit-identical to PyTorch's CPU kernel."""
    f = np.float32
    inv = f(1) / np.sqrt(var.astype(f) + f(eps))
    alpha = (inv * weight.astype(f)).astype(f)
    beta = np.array([_round_f32(Fraction(float(b)) - Fraction(float(m)) * Fraction(float(a)))
                     for b, m, a in zip(bias.astype(f), mean.astype(f), alpha)], dtype=f)
    return alpha, beta


def batchnorm_to_affine(graph: onnx.GraphProto, fresh) -> None:
    """Rewrite inference BatchNormalization nodes over NCHW tensors as ``Mul`` + ``Add``."""
    inits = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    dropped: set[str] = set()
    for node in graph.node:
        params = node.input[1:5]
        if (node.op_type != "BatchNormalization" or len(node.output) != 1 or len(params) != 4
                or not all(p in inits for p in params)):
            nodes.append(node)
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        w, b, m, v = (numpy_helper.to_array(inits[p]) for p in params)
        alpha, beta = torch_batchnorm_affine(w, b, m, v, eps)
        a_name, b_name, mid = fresh(), fresh(), fresh()
        graph.initializer.extend([numpy_helper.from_array(alpha.reshape(-1, 1, 1), a_name),
                                  numpy_helper.from_array(beta.reshape(-1, 1, 1), b_name)])
        nodes += [helper.make_node("Mul", [node.input[0], a_name], [mid]),
                  helper.make_node("Add", [mid, b_name], [node.output[0]])]
        dropped.update(params)
    del graph.node[:]
    graph.node.extend(nodes)
    still = {i for n in nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name not in dropped or t.name in still]
    del graph.initializer[:]
    graph.initializer.extend(kept)


_DEFAULTS = {  # attribute values that equal the operator's default (or are inferred by it)
    "Conv": {"dilations": lambda v: all(x == 1 for x in v), "group": lambda v: v == 1,
             "kernel_shape": lambda v: True, "strides": lambda v: all(x == 1 for x in v),
             "pads": lambda v: all(x == 0 for x in v)},
    "Gemm": {"alpha": lambda v: v == 1.0, "beta": lambda v: v == 1.0, "transA": lambda v: v == 0,
             "transB": lambda v: v == 0},
    "Reshape": {"allowzero": lambda v: v == 0},
    "Pad": {"mode": lambda v: v in (b"constant", "constant")},
    "MaxPool": {"dilations": lambda v: all(x == 1 for x in v), "strides": lambda v: all(x == 1 for x in v),
                "pads": lambda v: all(x == 0 for x in v), "ceil_mode": lambda v: v == 0,
                "storage_order": lambda v: v == 0},
    "AveragePool": {"strides": lambda v: all(x == 1 for x in v), "pads": lambda v: all(x == 0 for x in v),
                    "ceil_mode": lambda v: v == 0, "count_include_pad": lambda v: v == 0},
    "Flatten": {"axis": lambda v: v == 1},
}


def _short(i: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = digits[r] + out
        if i == 0:
            return out


def strip_graph(model: onnx.ModelProto, keep: set[str]) -> dict[str, str]:
    """Drop names, doc strings, default attributes and value_info; rename every value not in
    ``keep`` (graph inputs and outputs are always kept).  Returns the old -> new name map."""
    graph = model.graph
    keep = set(keep) | {v.name for v in graph.input} | {v.name for v in graph.output}
    mapping: dict[str, str] = {}
    counter = 0

    def rename(name: str) -> str:
        nonlocal counter
        if not name or name in keep:
            return name
        if name not in mapping:
            while _short(counter) in keep:
                counter += 1
            mapping[name] = _short(counter)
            counter += 1
        return mapping[name]

    for t in graph.initializer:
        t.name = rename(t.name)
        t.doc_string = ""
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        for k, name in enumerate(node.input):
            node.input[k] = rename(name)
        for k, name in enumerate(node.output):
            node.output[k] = rename(name)
        rules = _DEFAULTS.get(node.op_type, {})
        attrs = [a for a in node.attribute
                 if not (a.name in rules and rules[a.name](helper.get_attribute_value(a)))]
        del node.attribute[:]
        node.attribute.extend(attrs)
    del graph.value_info[:]
    graph.doc_string = ""
    graph.name = "g"
    return mapping
