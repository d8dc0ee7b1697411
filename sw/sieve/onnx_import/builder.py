"""Emitting a ``torch.fx`` graph while running it: every value carries two example tensors.

Why run while building: the importer must know shapes (ranks, spatial sizes for ``auto_pad``)
and must fold the shape arithmetic ``torch.onnx.export`` writes for ``x.view(x.size(0), -1)``
(Shape → Gather → Unsqueeze → Concat → Reshape) into constants.  Each :class:`Value` therefore
holds the value it takes for a batch of 1 *and* of 2 images.  A value no graph node produces is a
constant; when its two examples differ it depends on the batch size (a *batch constant*), which
is fine inside shape arithmetic and is resolved where a shape is consumed (:meth:`reshape_target`):
the one dimension that grows with the batch becomes ``-1``.  Anything else that depends on the
batch size is refused with one line.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import fx, nn

__all__ = ["Value", "FxBuilder", "ImportFailure", "BATCHES"]

BATCHES = (1, 2)   # the two example batch sizes every value is computed for
_RESERVED = set(dir(fx.GraphModule)) | {"training", "graph", "meta", "code", "forward"}


class ImportFailure(Exception):
    """A node the importer cannot translate; the caller adds the node's name, op type and opset."""


@dataclass(eq=False)
class Value:
    """One ONNX tensor: an fx node (or None for a constant) and its example for each batch size."""

    node: fx.Node | None
    examples: list[torch.Tensor | None]
    shapes: tuple[tuple[int, ...], ...]
    onnx_name: str = ""
    attr_node: fx.Node | None = field(default=None, repr=False)

    @property
    def is_const(self) -> bool:
        """Known at import time and the same for every batch size."""
        return self.node is None and self.examples[0] is self.examples[1]

    @property
    def is_dynamic(self) -> bool:
        return self.node is not None

    @property
    def rank(self) -> int:
        return len(self.shapes[0])

    @property
    def static_shape(self) -> tuple[int | None, ...]:
        """The shape with None where it follows the batch size."""
        a, b = self.shapes
        return tuple(x if x == y else None for x, y in zip(a, b))

    def const(self, what: str = "this input") -> torch.Tensor:
        if not self.is_const:
            raise ImportFailure(f"{what} ({self.onnx_name or 'computed'}) must be a constant known at import time")
        return self.examples[0]

    def ints(self, what: str = "this input") -> list[int]:
        return [int(v) for v in self.const(what).reshape(-1).tolist()]


def sanitize(name: str) -> str:
    """A dotted Python-attribute path from any ONNX name (``conv1/7x7_s2`` → ``conv1_7x7_s2``)."""
    parts = [re.sub(r"[^0-9A-Za-z_]", "_", p) for p in name.split(".")]
    parts = [p for p in parts if p]
    if not parts:
        return "t"
    if parts[0][0].isdigit() or keyword.iskeyword(parts[0]) or parts[0] in _RESERVED:
        parts[0] = f"m_{parts[0]}"
    return ".".join(parts)


class FxBuilder:
    """Builds the fx graph and the root dict of a ``GraphModule`` while computing examples."""

    def __init__(self) -> None:
        self.graph = fx.Graph()
        self.root: dict[str, Any] = {}
        self._taken: set[str] = set()
        self._prefixes: set[str] = set()
        self._batch_node: fx.Node | None = None

    # -- names
    def unique_name(self, hint: str) -> str:
        """A qualified name no other module/buffer uses, nor nests inside or around."""
        base = sanitize(hint)
        candidates = [base, base.replace(".", "_")]
        candidates += [f"{base.replace('.', '_')}_{i}" for i in range(2, 10_000)]
        for cand in candidates:
            parts = cand.split(".")
            prefixes = {".".join(parts[:i]) for i in range(1, len(parts))}
            if cand in self._taken or cand in self._prefixes or prefixes & self._taken:
                continue
            self._taken.add(cand)
            self._prefixes |= prefixes
            return cand
        raise ImportFailure(f"cannot find a free name for {hint!r}")

    # -- values
    def input(self, name: str, shape: tuple[int, ...], seed: int = 0) -> Value:
        gen = torch.Generator().manual_seed(seed)
        node = self.graph.placeholder(sanitize(name).replace(".", "_"))
        examples = [torch.randn((b, *shape), generator=gen) for b in BATCHES]
        return Value(node, examples, tuple(tuple(e.shape) for e in examples), name)

    @staticmethod
    def constant(tensor: torch.Tensor, onnx_name: str = "") -> Value:
        return Value(None, [tensor, tensor], (tuple(tensor.shape),) * 2, onnx_name)

    @staticmethod
    def per_batch(tensors: list[torch.Tensor], onnx_name: str = "") -> Value:
        """A constant that may differ per batch size (collapsed to a constant when equal)."""
        a, b = tensors
        if a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b):
            b = a
        return Value(None, [a, b], (tuple(a.shape), tuple(b.shape)), onnx_name)

    def _fx_arg(self, v: Value):
        if v.node is not None:
            if v.examples[0] is None:
                raise ImportFailure(f"internal: value {v.onnx_name} was released before its last use")
            return v.node
        if not v.is_const:
            raise ImportFailure(f"value {v.onnx_name or '(computed)'} depends on the batch size, and only shape "
                                "computations (Reshape/Flatten targets) may")
        t = v.examples[0]
        if t.dim() == 0:
            return t.item()
        if v.attr_node is None:
            name = self.unique_name(f"const.{v.onnx_name or 'value'}")
            self.root[name] = t.clone()
            v.attr_node = self.graph.get_attr(name)
        return v.attr_node

    @staticmethod
    def _map(obj, fn):
        if isinstance(obj, Value):
            return fn(obj)
        if isinstance(obj, (list, tuple)):
            return type(obj)(FxBuilder._map(o, fn) for o in obj)
        if isinstance(obj, dict):
            return {k: FxBuilder._map(v, fn) for k, v in obj.items()}
        return obj

    @staticmethod
    def _values(obj) -> list[Value]:
        found: list[Value] = []
        FxBuilder._map(obj, lambda v: found.append(v) or v)
        return found

    def _emit(self, kind: str, target, fn: Callable, args: tuple, kwargs: dict, name: str = "") -> Value:
        values = self._values((args, kwargs))
        with torch.no_grad():
            examples = [fn(*self._map(args, lambda v: v.examples[i]), **self._map(kwargs, lambda v: v.examples[i]))
                        for i in range(len(BATCHES))]
        if not any(v.is_dynamic for v in values):
            return self.per_batch(examples, name)
        fx_args = self._map(args, self._fx_arg)
        fx_kwargs = self._map(kwargs, self._fx_arg)
        node = self.graph.create_node(kind, target, fx_args, fx_kwargs)
        return Value(node, examples, tuple(tuple(e.shape) for e in examples), name)

    def call(self, fn: Callable, *args, **kwargs) -> Value:
        """``fn(*args, **kwargs)``: folded when no argument is dynamic, else a call_function node."""
        return self._emit("call_function", fn, fn, args, kwargs)

    def method(self, method: str, obj: Value, *args, **kwargs) -> Value:
        return self._emit("call_method", method, lambda o, *a, **k: getattr(o, method)(*a, **k),
                          (obj, *args), kwargs)

    def module(self, qualname: str, module: nn.Module, *args) -> Value:
        """Call ``module`` (registered under ``qualname``) on ``args``."""
        module.eval()
        if qualname not in self.root:
            self.root[qualname] = module
        return self._emit("call_module", qualname, module, args, {})

    # -- shapes
    def reshape_target(self, x: Value, targets: list[list[int]]) -> tuple[int, ...]:
        """One static ``reshape`` argument from the full target shape at each batch size.

        ``targets`` holds, per example, the target with every ``-1``/``0`` already resolved.  Sizes
        equal at both batch sizes are static; the one that follows the batch size becomes -1.
        """
        a, b = targets
        if len(a) != len(b):
            raise ImportFailure("the target rank depends on the batch size")
        out = [x1 if x1 == x2 else -1 for x1, x2 in zip(a, b)]
        if out.count(-1) > 1:
            raise ImportFailure(f"more than one dimension of the target shape {a} follows the batch size")
        return tuple(out)

    def output(self, values: list[Value]) -> None:
        outs = [self._fx_arg(v) if v.is_dynamic else self._const_output(v) for v in values]
        self.graph.output(outs[0] if len(outs) == 1 else tuple(outs))

    def _const_output(self, v: Value):
        name = self.unique_name(f"const.{v.onnx_name or 'output'}")
        self.root[name] = v.const("a graph output").clone()
        return self.graph.get_attr(name)

    def finish(self, class_name: str = "OnnxModel") -> fx.GraphModule:
        self.graph.lint()
        gm = fx.GraphModule(self.root, self.graph, class_name=class_name)
        return gm.eval()
