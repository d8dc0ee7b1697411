"""ONNX graph → ``torch.fx.GraphModule``: the node loop, layer naming and the name map.

Layer names come from the file so that a plan maps back to it: a weight initializer called
``features.0.weight`` (what ``torch.onnx.export`` writes) gives the module ``features.0``; else
the node's name (``/layer1/layer1.0/conv1/Conv`` → ``layer1.0.conv1``); else a Caffe2-style
weight name without its suffix (``conv1_w`` → ``conv1``); else ``conv<index>``.  The map from
every plan tensor name (``<module>.weight`` / ``<module>.input``, ``<module>.input#k`` for the
k-th node of a layer whose weight several nodes share) to the ONNX initializer and tensor it
stands for is kept in ``module.meta["onnx"]``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import fx, nn

from ..errors import SieveError
from ..qeval import activation_name, parse_tensor_name
from .builder import FxBuilder, ImportFailure, Value
from .ops import OPS, NodeContext, read_attrs
from .reader import DEFAULT_DOMAINS, OnnxGraph, _as_array, read_onnx

__all__ = ["ImportedModel", "import_onnx"]

_WEIGHT_SUFFIXES = ("/weights", "/weight", "/kernel", "_weights", "_weight", "_scale", "_W", "_w", "_s", ".W", ".w")


@dataclass
class ImportedModel:
    """The imported network and what the rest of SIEVE needs to know about the file."""

    module: fx.GraphModule
    path: str
    opset: int
    input_name: str
    input_shape: tuple[int, ...]            # one image, e.g. (3, 224, 224)
    output_names: list[str]
    tensor_map: dict[str, dict] = field(default_factory=dict)   # plan tensor name -> ONNX names


def _from_node_name(node_name: str, op_type: str) -> str:
    parts = [p for p in node_name.split("/") if p]
    if len(parts) > 1 and re.fullmatch(rf"{re.escape(op_type)}(_\d+)?", parts[-1]):
        parts = parts[:-1]
    dotted = [i for i, p in enumerate(parts) if "." in p]
    if dotted:
        parts = parts[dotted[-1]:]
    return ".".join(parts)


def layer_hint(node, index: int, weight_name: str) -> str:
    """The module name a layer should get (see the module docstring), before de-duplication."""
    plain = weight_name and "::" not in weight_name
    if plain and weight_name.endswith(".weight") and len(weight_name) > 7:
        return weight_name[:-7]
    if node.name:
        return _from_node_name(node.name, node.op_type)
    if plain:
        for suffix in _WEIGHT_SUFFIXES:
            if weight_name.endswith(suffix) and len(weight_name) > len(suffix):
                return weight_name[: -len(suffix)]
    return f"{node.op_type.lower()}{index}"


class Importer:
    """One import: the builder, the layers created so far and the fusions scheduled."""

    def __init__(self, graph: OnnxGraph, input_shape: tuple[int, ...]):
        self.g = graph
        self.input_shape = input_shape
        self.b = FxBuilder()
        self.modules: dict[str, nn.Module] = {}
        self._shared: dict[tuple, str] = {}
        self.tensor_map: dict[str, dict] = {}
        self._fused: dict[str, Value] = {}       # output name of a node folded into the previous one
        self.consumers: dict[str, list] = {}
        for node in graph.graph.node:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)

    # -- called by handlers
    def layer(self, ctx: NodeContext, key: tuple, make: Callable[[], nn.Module], weight_name: str,
              transposed: bool | None = None) -> str:
        """The qualified name of the layer for ``key`` (created once; reused when a weight is shared)."""
        if key in self._shared:
            name = self._shared[key]
            if transposed is not None:  # a shared layer's next call: its own input (sieve.qeval)
                call = 1 + sum(1 for k in self.tensor_map if parse_tensor_name(k)[:2] == (name, "input"))
                self.tensor_map[activation_name(name, call)] = {"node": ctx.node.name, "op": ctx.node.op_type,
                                                                "index": ctx.index, "tensor": ctx.node.input[0]}
            return name
        name = self.b.unique_name(layer_hint(ctx.node, ctx.index, weight_name))
        self.modules[name] = make()
        self._shared[key] = name
        if transposed is not None:   # a quantizable layer: remember where its tensors live in the file
            where = {"node": ctx.node.name, "op": ctx.node.op_type, "index": ctx.index}  # index: in the file's node list
            self.tensor_map[f"{name}.weight"] = {**where, "initializer": weight_name, "transposed": transposed}
            self.tensor_map[f"{name}.input"] = {**where, "tensor": ctx.node.input[0]}
        return name

    def fusable_bias(self, ctx: NodeContext, n: int) -> torch.Tensor | None:
        """The bias of an ``Add`` that is the only reader of this MatMul (MatMul+Add = Linear)."""
        out = ctx.node.output[0]
        readers = self.consumers.get(out, [])
        if len(readers) != 1 or readers[0].op_type != "Add" or out in self.g.output_names:
            return None
        other = [name for name in readers[0].input if name != out]
        if len(other) != 1 or other[0] not in self.g.initializers and not self._is_constant_node(other[0]):
            return None
        value = self.values.get(other[0])
        if value is None or not value.is_const:
            return None
        t = value.const().float()
        if t.numel() == n and t.dim() >= 1 and t.shape[-1] == n:
            return t.reshape(n)
        return None

    def _is_constant_node(self, name: str) -> bool:
        return any(node.op_type == "Constant" and name in node.output for node in self.g.graph.node)

    def fuse_next(self, ctx: NodeContext, value: Value) -> None:
        self._fused[self.consumers[ctx.node.output[0]][0].output[0]] = value

    # -- the loop
    def _where(self, node, index: int) -> str:
        label = node.name or f"#{index}"
        return f"{self.g.path}: node {label!r} ({node.op_type}, opset {self.g.opset})"

    def run(self) -> fx.GraphModule:
        g, b = self.g, self.b
        self.values: dict[str, Value] = {g.input_name: b.input(g.input_name, self.input_shape)}
        for name, array in g.initializers.items():
            self.values[name] = b.constant(torch.from_numpy(array), name)
        uses = Counter(n for node in g.graph.node for n in node_reads(node))
        pending: Counter = Counter()
        pending[id(self.values[g.input_name])] += uses[g.input_name]
        keep = set(g.output_names)
        for index, node in enumerate(g.graph.node):
            if node.output and node.output[0] in self._fused:
                outs = [self._fused[node.output[0]]]
            elif node.op_type == "If" and node.domain in DEFAULT_DOMAINS:
                outs = self._run_if(node, index)
            else:
                outs = self._run_node(node, index)
            for i, name in enumerate(node.output):
                if not name:
                    continue
                if i >= len(outs):
                    if uses[name] or name in keep:
                        raise SieveError(f"{self._where(node, index)}: output {i} ({name!r}) is used, and the "
                                         "importer only supports an inference graph's main output")
                    continue
                value = outs[i]
                value.onnx_name = value.onnx_name or name
                self.values[name] = value
                pending[id(value)] += uses[name] + (1 << 30 if name in keep else 0)
            for name in node_reads(node):
                value = self.values.get(name)
                if value is not None and value.is_dynamic:
                    pending[id(value)] -= 1
                    if pending[id(value)] <= 0:
                        value.examples = [None, None]     # nobody reads it any more: free the memory
        missing = [n for n in g.output_names if n not in self.values]
        if missing:
            raise SieveError(f"{g.path}: graph output {missing[0]!r} is produced by no node")
        b.output([self.values[n] for n in g.output_names])
        gm = b.finish()
        return gm

    def _run_if(self, node, index: int) -> list[Value]:
        """An ``If`` whose condition is known at import time (torch writes them for shape checks):
        the chosen branch's nodes are imported in place."""
        where = self._where(node, index)
        cond = self.values.get(node.input[0])
        if cond is None or cond.is_dynamic:
            raise SieveError(f"{where}: the condition depends on the image data; only Ifs decided by shapes import")
        flags = {bool(e.reshape(-1)[0]) for e in cond.examples}
        if len(flags) != 1:
            raise SieveError(f"{where}: the condition depends on the batch size; re-export for a fixed batch")
        attrs = {a.name: a for a in node.attribute}
        branch = attrs["then_branch" if flags.pop() else "else_branch"].g
        for init in branch.initializer:
            self.values[init.name] = self.b.constant(torch.from_numpy(_as_array(init)), init.name)
        for i, inner in enumerate(branch.node):
            outs = self._run_if(inner, i) if inner.op_type == "If" else self._run_node(inner, i)
            for name, value in zip(inner.output, outs):
                if name:
                    value.onnx_name = value.onnx_name or name
                    self.values[name] = value
        return [self.values[o.name] for o in branch.output]

    def _run_node(self, node, index: int) -> list[Value]:
        where = self._where(node, index)
        handler = OPS.get(node.op_type) if node.domain in DEFAULT_DOMAINS else None
        if handler is None:
            domain = f"{node.domain}." if node.domain not in DEFAULT_DOMAINS else ""
            raise SieveError(f"{where}: operator {domain}{node.op_type} is not supported by SIEVE's ONNX importer "
                             f"(supported: sieve.onnx_import.SUPPORTED_OPS); simplify or re-export the model without it")
        for name in node.input:
            if name and name not in self.values:
                raise SieveError(f"{where}: input {name!r} is produced by no earlier node")
        inputs = [self.values[n] if n else None for n in node.input]
        ctx = NodeContext(node, index, inputs, read_attrs(node), self.g.opset, self)
        try:
            outs = handler(self.b, ctx)
        except SieveError:
            raise
        except ImportFailure as exc:
            raise SieveError(f"{where}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a torch error on this node's data: same user problem
            first = (str(exc).strip().splitlines() or [""])[0]
            raise SieveError(f"{where}: cannot import it ({type(exc).__name__}: {first})") from None
        return outs


def node_reads(node) -> list[str]:
    """The tensors a node reads: its inputs and what its subgraphs read from outside them."""
    names = [n for n in node.input if n]
    for attr in node.attribute:
        for sub in ([attr.g] if attr.type == attr.GRAPH else list(attr.graphs)):
            inner = {t.name for t in sub.initializer} | {o for n in sub.node for o in n.output}
            names += [n for inner_node in sub.node for n in node_reads(inner_node) if n not in inner]
    return list(dict.fromkeys(names))


def _input_shape(g: OnnxGraph, given: tuple[int, ...] | None) -> tuple[int, ...]:
    dims = g.input_dims
    shown = "x".join("?" if d is None else str(d) for d in dims)
    if given is not None:
        given = tuple(int(d) for d in given)
        if len(given) != len(dims) - 1 or any(d is not None and d != s for d, s in zip(dims[1:], given)):
            raise SieveError(f"{g.path}: input {g.input_name!r} is {shown} (batch first), which does not fit "
                             f"the input shape {'x'.join(map(str, given))}; pass a matching --input-shape")
        return given
    if len(dims) < 2 or any(d is None for d in dims[1:]):
        raise SieveError(f"{g.path}: input {g.input_name!r} has shape {shown}, not fixed beyond the batch "
                         "dimension; pass the image shape with --input-shape C,H,W")
    return tuple(dims[1:])


def import_onnx(path: str | Path, input_shape: tuple[int, ...] | None = None) -> ImportedModel:
    """Import the ONNX file ``path`` as an fp32, eval-mode ``GraphModule`` (see the package doc)."""
    g = read_onnx(path)
    shape = _input_shape(g, input_shape)
    imp = Importer(g, shape)
    gm = imp.run()
    gm.meta["onnx"] = {"path": str(path), "opset": g.opset, "input": g.input_name,
                       "outputs": list(g.output_names), "tensors": dict(imp.tensor_map)}
    return ImportedModel(module=gm, path=str(path), opset=g.opset, input_name=g.input_name,
                         input_shape=shape, output_names=list(g.output_names), tensor_map=dict(imp.tensor_map))
