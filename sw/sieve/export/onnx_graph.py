"""The one graph-building helper the weight decode and the activation rounding share.

:class:`GraphBuilder` collects nodes and deduplicated constant initializers, so that every
subgraph SIEVE adds to an exported model (:mod:`.weight_decode`, :mod:`.rounding`) names its
values uniquely and stores each constant once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import NodeProto, TensorProto, helper, numpy_helper

__all__ = ["GraphBuilder"]


@dataclass
class GraphBuilder:
    """Collects nodes and constant initializers; equal constants are stored once."""

    prefix: str = "sv"  # short: every generated name is stored in the file
    nodes: list[NodeProto] = field(default_factory=list)
    initializers: list[TensorProto] = field(default_factory=list)
    _consts: dict = field(default_factory=dict)
    _count: int = 0

    def fresh(self, hint: str) -> str:
        """A new unique tensor name under the builder's prefix."""
        self._count += 1
        return f"{self.prefix}{self._count}"

    def const(self, value, dtype=None, hint: str = "c") -> str:
        """Name of a constant initializer holding ``value`` (deduplicated by dtype, shape, bytes)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = self.fresh(hint)
            self.initializers.append(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return self._consts[key]

    def initializer(self, arr: np.ndarray, name: str) -> str:
        """Add a named (non-shared) initializer, e.g. the packed codes of one weight."""
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, doc: str | None = None,
           **attrs) -> str:
        """Append one node and return its (single) output name."""
        out = out or self.fresh(op_type.lower())
        node = helper.make_node(op_type, inputs, [out], **attrs)  # unnamed: names cost bytes
        if doc:
            node.doc_string = doc
        self.nodes.append(node)
        return out

    def f32(self, value: float, hint: str = "f") -> str:
        return self.const(np.float32(value), hint=hint)

    def f32_bits(self, bits: int, hint: str = "f") -> str:
        """A float32 scalar given by its exact bit pattern (NaN payloads, -0)."""
        return self.const(np.array(bits, dtype=np.uint32).view(np.float32), hint=hint)

    def f32_filled(self, value: float, shape: tuple[int, ...]) -> str:
        """A float32 tensor of ``shape`` filled with ``value``, built by ``Expand`` from a scalar
        (folded at session start) so the file stores 4 bytes, not one per element; built once."""
        key = ("expand", float(value), tuple(shape))
        if key not in self._consts:
            self._consts[key] = self.op("Expand", [self.f32(value), self.const(list(shape), np.int64)])
        return self._consts[key]
