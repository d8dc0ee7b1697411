"""Which activations can never be NaN or infinite?  A static bound on every tensor's magnitude.

The blocked rounding (:func:`sieve.export.rounding.add_blocked_rounding`) is exact on every
finite float but turns a NaN into NaN (the emulator gives 0), so the exporter uses it only for
tensors this module proves finite: the magnitude bound is propagated through the graph in
topological order from what is known exactly - constants, the decoded weights, and the planned
roundings, whose outputs never exceed their Format's Max - and a tensor is finite when its bound
stays far below float32's largest value.  The graph input is unbounded (an image may hold NaN).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..blockfmt import BlockFormat
from ..cfloat import Format

__all__ = ["FINITE_LIMIT", "magnitude_bounds"]

#: A bound below this proves a tensor finite: float32 rounding errors cannot carry it to 3.4e38.
FINITE_LIMIT = 1e30

_SAME = {"Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape",
         "Slice", "Identity", "Transpose", "Squeeze", "Unsqueeze", "Dropout", "Clip"}


def magnitude_bounds(graph: onnx.GraphProto, values: dict[str, np.ndarray],
                     rounded: dict[int, Format]) -> dict[str, float]:
    """``{tensor: upper bound of |value|}`` (``inf`` when unknown) for the graph's tensors.

    ``values``: constant tensors known by value (initializers, decoded weights).  ``rounded``:
    node index -> Format of the planned rounding in front of that node's first input; its output
    is bounded by the Format's Max (unless a NaN or Inf can pass through it), or for a block
    format by twice the input's bound.  The bound recorded
    under the input's own name is the one before rounding.
    """
    bound: dict[str, float] = {k: float(np.max(np.abs(v))) if np.size(v) else 0.0 for k, v in values.items()}
    bound.update({t.name: float(np.max(np.abs(numpy_helper.to_array(t)))) if np.prod(t.dims) else 0.0
                  for t in graph.initializer if t.name not in bound and t.data_type == onnx.TensorProto.FLOAT})

    def get(name: str) -> float:
        return bound.get(name, float("inf")) if name else 0.0

    arrays = {t.name: t for t in graph.initializer}

    def batchnorm(node: onnx.NodeProto, first: float) -> float:
        """|(x - mean) * scale / sqrt(var + eps) + bias| <= (|x| + |mean|) * |scale| / sqrt(var + eps) + |bias|
        per channel (an inference BatchNormalization whose statistics are initializers)."""
        if len(node.input) < 5 or not all(i in arrays for i in node.input[1:5]):
            return float("inf")
        scale, bias, mean, var = (np.abs(numpy_helper.to_array(arrays[i]).astype(np.float64)) for i in node.input[1:5])
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (first + mean) * scale / np.sqrt(var + eps) + bias
        return float(np.max(out)) if out.size and np.all(np.isfinite(out)) else float("inf")

    for index, node in enumerate(graph.node):
        ins = list(node.input)
        first = get(ins[0]) if ins else 0.0
        if index in rounded:
            fmt = rounded[index]
            if isinstance(fmt, BlockFormat):
                # |q| <= Max_elem * 2^shared <= Max_elem * amax / 2^emax < 2 amax; a NaN or an
                # infinity makes its block NaN, so an unbounded input stays unbounded
                first = 2.0 * first if first < FINITE_LIMIT else float("inf")
            else:
                passes_specials = fmt.has_nan or fmt.has_inf
                first = float(fmt.max_value) if first < FINITE_LIMIT or not passes_specials else float("inf")
        op = node.op_type
        if op in _SAME:
            out = first
        elif op == "Pad":
            out = max(first, get(ins[2]) if len(ins) > 2 else 0.0)
        elif op in ("Add", "Sub", "Sum"):
            out = first + sum(get(i) for i in ins[1:])
        elif op == "Mul":
            out = first * get(ins[1])
        elif op == "BatchNormalization":
            out = batchnorm(node, first)
        elif op == "Concat":
            out = max([first] + [get(i) for i in ins[1:]])
        elif op in ("Conv", "Gemm", "MatMul") and ins[1] in values:
            w = np.abs(values[ins[1]].astype(np.float64))
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            if op == "Conv" or (op == "Gemm" and trans_b):
                norm = w.reshape(w.shape[0], -1).sum(axis=1).max()   # rows: output channels
            else:
                norm = w.sum(axis=0).max()                          # columns: outputs
            out = first * float(norm) + (get(ins[2]) if len(ins) > 2 else 0.0)
        else:
            out = float("inf")
        for o in node.output:
            bound[o] = float(out) if np.isfinite(out) else float("inf")
    return bound
