"""ONNX operators → torch, one handler per operator type (opsets 7 and later).

A handler receives the :class:`~.builder.FxBuilder` and a :class:`NodeContext` and returns the
node's output values.  Convolutions and fully-connected layers whose weight is a constant become
``nn.Conv2d`` / ``nn.Linear`` submodules holding the file's initializer (so SIEVE's plans, hooks
and exporter see ordinary layers); BatchNormalization becomes ``nn.BatchNorm*d``; everything else
is a torch function call, folded at import time when no input depends on the image.
Where the meaning of an operator changed between opsets (Softmax's axis before opset 13, Clip's
bounds as attributes before 11, Squeeze/Unsqueeze/ReduceSum axes as inputs from 13, Pad's pads
as inputs from 11, Slice's starts/ends from 10) the handler reads ``ctx.opset``.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

from . import functions as fn
from .builder import FxBuilder, ImportFailure, Value

__all__ = ["NodeContext", "OPS", "SUPPORTED_OPS"]


@dataclass
class NodeContext:
    """One ONNX node being imported, with what its handler needs from the importer."""

    node: onnx.NodeProto
    index: int
    inputs: list[Value | None]
    attrs: dict[str, Any]
    opset: int
    importer: Any   # .importer.Importer: naming, shared modules, fusion with the next node

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)

    def input(self, i: int) -> Value | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def need(self, i: int, what: str) -> Value:
        v = self.input(i)
        if v is None:
            raise ImportFailure(f"missing input {i} ({what})")
        return v


def read_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        out[a.name] = value
    return out


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ImportFailure(f"axis {axis} is out of range for a {rank}-D tensor")
    return axis + rank if axis < 0 else axis


def _numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _torch_dtype(onnx_type: int) -> torch.dtype:
    np_type = helper.tensor_dtype_to_np_dtype(onnx_type)
    return torch.from_numpy(np.empty(0, dtype=np_type)).dtype


def _float_tensor(array) -> torch.Tensor:
    t = torch.from_numpy(np.array(array, copy=True))
    return t.float() if t.is_floating_point() else t


OPS: dict[str, Callable[[FxBuilder, NodeContext], list[Value]]] = {}


def op(*names: str):
    def register(handler):
        for name in names:
            OPS[name] = handler
        return handler
    return register


# ------------------------------------------------------------------ padding helpers
def spatial_pads(ctx: NodeContext, x: Value, kernel, strides, dilations) -> list[int]:
    """``[begin_0, begin_1, ..., end_0, end_1, ...]`` from ``pads`` or ``auto_pad``."""
    n = len(kernel)
    auto = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    if auto == "NOTSET":
        pads = list(ctx.attr("pads", [0] * 2 * n))
        if len(pads) != 2 * n:
            raise ImportFailure(f"pads {pads} do not have 2 x {n} entries")
        return pads
    if auto == "VALID":
        return [0] * 2 * n
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise ImportFailure(f"unknown auto_pad {auto!r}")
    pads = [0] * 2 * n
    sizes = x.static_shape[2:]
    for i in range(n):
        if sizes[i] is None:
            raise ImportFailure("auto_pad needs a static spatial size")
        out = -(-sizes[i] // strides[i])
        total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - sizes[i], 0)
        small, big = total // 2, total - total // 2
        pads[i], pads[i + n] = (small, big) if auto == "SAME_UPPER" else (big, small)
    return pads


def _symmetric(pads: list[int]) -> tuple[int, ...] | None:
    n = len(pads) // 2
    return tuple(pads[:n]) if pads[:n] == pads[n:] else None


def _torch_pad_order(pads: list[int]) -> tuple[int, ...]:
    """ONNX ``[b0, b1, e0, e1]`` (spatial) → F.pad's ``(b1, e1, b0, e0)`` (last dim first)."""
    n = len(pads) // 2
    out: list[int] = []
    for d in reversed(range(n)):
        out += [pads[d], pads[d + n]]
    return tuple(out)


def _need_4d(x: Value, what: str) -> None:
    if x.rank != 4:
        raise ImportFailure(f"only 2-D {what} (N x C x H x W input) are imported, got a {x.rank}-D input")


# ------------------------------------------------------------------ layers with weights
@op("Conv")
def conv(b: FxBuilder, ctx: NodeContext) -> list[Value]:
    x, w, bias = ctx.need(0, "X"), ctx.need(1, "W"), ctx.input(2)
    _need_4d(x, "convolutions")
    weight = w.const("the convolution weight").float()
    bias_t = None if bias is None else bias.const("the convolution bias").float()
    kernel = tuple(weight.shape[2:])
    if tuple(ctx.attr("kernel_shape", kernel)) != kernel:
        raise ImportFailure(f"kernel_shape {ctx.attr('kernel_shape')} differs from the weight's {kernel}")
    groups = int(ctx.attr("group", 1))
    strides = tuple(ctx.attr("strides", [1, 1]))
    dilations = tuple(ctx.attr("dilations", [1, 1]))
    pads = spatial_pads(ctx, x, kernel, strides, dilations)
    sym = _symmetric(pads)
    in_channels = int(weight.shape[1]) * groups
    if x.shapes[0][1] != in_channels:
        raise ImportFailure(f"input has {x.shapes[0][1]} channels, the weight expects {in_channels}")
    key = ("Conv", w.onnx_name, bias.onnx_name if bias is not None else "", groups, strides, dilations, sym)

    def make() -> nn.Module:
        m = nn.Conv2d(in_channels, int(weight.shape[0]), kernel, stride=strides, padding=sym or 0,
                      dilation=dilations, groups=groups, bias=bias_t is not None)
        m.weight = nn.Parameter(weight.clone())
        if bias_t is not None:
            m.bias = nn.Parameter(bias_t.reshape(-1).clone())
        return m

    name = ctx.importer.layer(ctx, key, make, weight_name=w.onnx_name, transposed=False)
    if sym is None:   # asymmetric padding: an explicit pad in front (the layer's input is padded)
        x = b.call(F.pad, x, _torch_pad_order(pads))
    return [b.module(name, ctx.importer.modules[name], x)]


def _linear(b: FxBuilder, ctx: NodeContext, a: Value, weight: torch.Tensor, bias: torch.Tensor | None,
            weight_name: str, transposed: bool) -> Value:
    key = ("Linear", weight_name, transposed, None if bias is None else bias.numpy().tobytes())

    def make() -> nn.Module:
        m = nn.Linear(int(weight.shape[1]), int(weight.shape[0]), bias=bias is not None)
        m.weight = nn.Parameter(weight.contiguous().clone())
        if bias is not None:
            m.bias = nn.Parameter(bias.reshape(-1).clone())
        return m

    name = ctx.importer.layer(ctx, key, make, weight_name=weight_name, transposed=transposed)
    return b.module(name, ctx.importer.modules[name], a)


def _row_bias(c: Value | None, n: int) -> torch.Tensor | None:
    """A constant that adds the same length-n vector to every row, else None."""
    if c is None or not c.is_const:
        return None
    t = c.const().float()
    if t.numel() == n and (t.dim() == 0 and n == 1 or t.dim() >= 1 and t.shape[-1] == n):
        return t.reshape(n)
    return None


@op("Gemm")
def gemm(b: FxBuilder, ctx: NodeContext) -> list[Value]:
    a, bm, c = ctx.need(0, "A"), ctx.need(1, "B"), ctx.input(2)
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    if ctx.attr("transA", 0):
        a = b.call(torch.transpose, a, 0, 1)
    trans_b = bool(ctx.attr("transB", 0))
    if bm.is_const and a.is_dynamic and a.rank == 2:
        weight = bm.const().float()
        weight = weight if trans_b else weight.t()
        bias = _row_bias(c, int(weight.shape[0])) if alpha == 1.0 else None
        y = _linear(b, ctx, a, weight, None if bias is None else bias * beta, bm.onnx_name, not trans_b)
        if bias is not None:
            c = None
    else:
        y = b.call(torch.matmul, a, b.call(torch.transpose, bm, 0, 1) if trans_b else bm)
    if alpha != 1.0:
        y = b.call(torch.mul, y, alpha)
    if c is not None:
        y = b.call(torch.add, y, b.call(torch.mul, c, beta) if beta != 1.0 else c)
    return [y]


@op("MatMul")
def matmul(b: FxBuilder, ctx: NodeContext) -> list[Value]:
    a, bm = ctx.need(0, "A"), ctx.need(1, "B")
    if bm.is_const and bm.rank == 2 and a.is_dynamic and a.rank >= 2:
        weight = bm.const().float().t()
        bias = ctx.importer.fusable_bias(ctx, int(weight.shape[0]))
        y = _linear(b, ctx, a, weight, bias, bm.onnx_name, True)
        if bias is not None:
            ctx.importer.fuse_next(ctx, y)
        return [y]
    return [b.call(torch.matmul, a, bm)]


@op("BatchNormalization")
def batch_norm(b: FxBuilder, ctx: NodeContext) -> list[Value]:
    x = ctx.need(0, "X")
    scale, bias, mean, var = (ctx.need(i, n).const(f"BatchNormalization {n}").float()
                              for i, n in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
    if ctx.attr("training_mode", 0):
        raise ImportFailure("training_mode=1 (batch statistics) is not an inference graph")
    classes = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
    if x.rank not in classes:
        raise ImportFailure(f"BatchNormalization of a {x.rank}-D input")
    channels = x.shapes[0][1]
    if any(t.dim() != 1 or t.numel() != channels for t in (scale, bias, mean, var)):
        raise ImportFailure("per-activation statistics (spatial=0) are not supported; re-export with spatial=1")
    key = ("BatchNormalization", ctx.node.input[1], ctx.node.input[3], float(ctx.attr("epsilon", 1e-5)))

    def make() -> nn.Module:
        m = classes[x.rank](channels, eps=float(ctx.attr("epsilon", 1e-5)))
        with torch.no_grad():
            m.weight.copy_(scale)
            m.bias.copy_(bias)
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
        return m

    name = ctx.importer.layer(ctx, key, make, weight_name=ctx.node.input[1])
    return [b.module(name, ctx.importer.modules[name], x)]


# ------------------------------------------------------------------ activations
_UNARY = {"Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp,
          "Log": torch.log, "Sqrt": torch.sqrt, "Neg": torch.neg, "Abs": torch.abs,
          "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil, "Erf": torch.erf,
          "Softplus": F.softplus, "Softsign": F.softsign, "Not": torch.logical_not}


@op(*_UNARY)
def unary(b: FxBuilder, ctx: NodeContext) -> list[Value]:
    return [b.call(_UNARY[ctx.node.op_type], ctx.need(0, "X"))]


@op("LeakyRelu")
def leaky_relu(b, ctx):
    return [b.call(F.leaky_relu, ctx.need(0, "X"), float(ctx.attr("alpha", 0.01)))]


@op("Elu")
def elu(b, ctx):
    return [b.call(F.elu, ctx.need(0, "X"), float(ctx.attr("alpha", 1.0)))]


@op("Selu")
def selu(b, ctx):
    alpha, gamma = float(ctx.attr("alpha", 1.67326319217681884765625)), float(ctx.attr("gamma", 1.05070102214813232421875))
    x = ctx.need(0, "X")
    return [b.call(torch.mul, b.call(F.elu, x, alpha), gamma)]


@op("HardSigmoid")
def hard_sigmoid(b, ctx):
    return [b.call(fn.hard_sigmoid, ctx.need(0, "X"), float(ctx.attr("alpha", 0.2)), float(ctx.attr("beta", 0.5)))]


@op("HardSwish")
def hard_swish(b, ctx):
    return [b.call(F.hardswish, ctx.need(0, "X"))]


@op("PRelu")
def prelu(b, ctx):
    return [b.call(fn.prelu, ctx.need(0, "X"), ctx.need(1, "slope"))]


@op("Clip")
def clip(b, ctx):
    x = ctx.need(0, "input")
    if ctx.opset < 11:
        lo, hi = float(ctx.attr("min", -3.4028234663852886e38)), float(ctx.attr("max", 3.4028234663852886e38))
    else:
        lo_v, hi_v = ctx.input(1), ctx.input(2)
        lo = None if lo_v is None else float(lo_v.const("Clip min"))
        hi = None if hi_v is None else float(hi_v.const("Clip max"))
        if lo is None and hi is None:
            return [x]
    return [b.call(torch.clamp, x, lo, hi)]


@op("Softmax", "LogSoftmax")
def softmax(b, ctx):
    x = ctx.need(0, "input")
    log = ctx.node.op_type == "LogSoftmax"
    if ctx.opset < 13:   # coerced to 2-D at axis (default 1): one softmax over all later dimensions
        axis = _axis(int(ctx.attr("axis", 1)), x.rank)
        if axis < x.rank - 1:
            return [b.call(fn.log_softmax_coerced if log else fn.softmax_coerced, x, axis)]
    else:
        axis = _axis(int(ctx.attr("axis", -1)), x.rank)
    return [b.call(torch.log_softmax if log else torch.softmax, x, axis)]


@op("LRN")
def lrn(b, ctx):
    x = ctx.need(0, "X")
    _need_4d(x, "LRN")
    return [b.call(fn.lrn, x, int(ctx.attr("size")), float(ctx.attr("alpha", 1e-4)),
                   float(ctx.attr("beta", 0.75)), float(ctx.attr("bias", 1.0)))]


@op("Dropout", "Identity")
def identity(b, ctx):
    if ctx.node.op_type == "Dropout" and ctx.attr("is_test", 1) == 0 and ctx.opset < 7:
        raise ImportFailure("a training-mode Dropout")
    return [ctx.need(0, "input")]


# ------------------------------------------------------------------ pooling
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _pool_geometry(ctx, x):
    if x.rank - 2 not in _MAX_POOL:
        raise ImportFailure(f"pooling of a {x.rank}-D input (1-, 2- or 3-D pooling only)")
    kernel = tuple(ctx.attr("kernel_shape"))
    strides = tuple(ctx.attr("strides", [1] * len(kernel)))
    dilations = tuple(ctx.attr("dilations", [1] * len(kernel)))
    pads = spatial_pads(ctx, x, kernel, strides, dilations)
    return kernel, strides, dilations, pads, bool(ctx.attr("ceil_mode", 0))


def _fits_torch_padding(pads, kernel, dilations) -> tuple[int, ...] | None:
    """The symmetric padding torch's pooling accepts itself (at most half the effective kernel)."""
    sym = _symmetric(pads)
    if sym is None or any(2 * p > (k - 1) * d + 1 for p, k, d in zip(sym, kernel, dilations)):
        return None
    return sym


@op("MaxPool")
def max_pool(b, ctx):
    x = ctx.need(0, "X")
    kernel, strides, dilations, pads, ceil = _pool_geometry(ctx, x)
    sym = _fits_torch_padding(pads, kernel, dilations)
    if sym is None:
        x = b.call(F.pad, x, _torch_pad_order(pads), value=-math.inf)
        sym = (0,) * len(kernel)
    return [b.call(_MAX_POOL[len(kernel)], x, kernel, strides, sym, dilations, ceil_mode=ceil)]


@op("AveragePool")
def average_pool(b, ctx):
    x = ctx.need(0, "X")
    kernel, strides, dilations, pads, ceil = _pool_geometry(ctx, x)
    if any(d != 1 for d in dilations):
        raise ImportFailure("AveragePool with dilations")
    include = bool(ctx.attr("count_include_pad", 0))
    sym = _fits_torch_padding(pads, kernel, dilations)
    pool = _AVG_POOL[len(kernel)]
    if sym is not None:
        return [b.call(pool, x, kernel, strides, sym, ceil_mode=ceil, count_include_pad=include)]
    if len(kernel) != 2:
        raise ImportFailure("AveragePool with asymmetric padding on a non-2-D input")
    order = _torch_pad_order(pads)
    padded = b.call(F.pad, x, order)
    if include:
        return [b.call(pool, padded, kernel, strides, 0, ceil_mode=ceil, count_include_pad=True)]
    # the divisor counts only real pixels: window sums of the padded input / of a padded mask of ones
    ones = b.constant(torch.ones((1, 1, *x.shapes[0][2:])))
    counts = b.call(pool, b.call(F.pad, ones, order), kernel, strides, 0, ceil_mode=ceil, divisor_override=1)
    sums = b.call(pool, padded, kernel, strides, 0, ceil_mode=ceil, divisor_override=1)
    return [b.call(torch.div, sums, counts)]


@op("GlobalAveragePool", "GlobalMaxPool")
def global_pool(b, ctx):
    x = ctx.need(0, "X")
    avg = ctx.node.op_type == "GlobalAveragePool"
    if x.rank == 4:
        return [b.call(F.adaptive_avg_pool2d if avg else F.adaptive_max_pool2d, x, 1)]
    dims = tuple(range(2, x.rank))
    return [b.call(torch.mean if avg else torch.amax, x, dims, keepdim=True)]


# ------------------------------------------------------------------ element-wise arithmetic
_BINARY = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": fn.onnx_div, "Pow": torch.pow,
           "Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt, "And": torch.logical_and,
           "Or": torch.logical_or}


@op(*_BINARY)
def binary(b, ctx):
    return [b.call(_BINARY[ctx.node.op_type], ctx.need(0, "A"), ctx.need(1, "B"))]


_VARIADIC = {"Sum": torch.add, "Max": torch.maximum, "Min": torch.minimum, "Mean": torch.add}


@op(*_VARIADIC)
def variadic(b, ctx):
    values = [v for v in ctx.inputs if v is not None]
    out = values[0]
    for v in values[1:]:
        out = b.call(_VARIADIC[ctx.node.op_type], out, v)
    if ctx.node.op_type == "Mean" and len(values) > 1:
        out = b.call(torch.div, out, float(len(values)))
    return [out]


@op("Where")
def where(b, ctx):
    return [b.call(torch.where, ctx.need(0, "condition"), ctx.need(1, "X"), ctx.need(2, "Y"))]


def _reduce_axes(ctx, x: Value, axes_from_input: bool) -> tuple[int, ...] | None:
    if axes_from_input:
        v = ctx.input(1)
        axes = None if v is None else v.ints("the reduction axes")
    else:
        axes = ctx.attr("axes")
    if not axes:
        return None if ctx.attr("noop_with_empty_axes", 0) else tuple(range(x.rank))
    return tuple(_axis(a, x.rank) for a in axes)


_REDUCE = {"ReduceMean": (torch.mean, 18), "ReduceSum": (torch.sum, 13), "ReduceMax": (torch.amax, 18),
           "ReduceMin": (torch.amin, 18), "ReduceProd": (None, 18)}


@op("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def reduce(b, ctx):
    x = ctx.need(0, "data")
    func, input_since = _REDUCE[ctx.node.op_type]
    dims = _reduce_axes(ctx, x, ctx.opset >= input_since)
    if dims is None:
        return [x]
    return [b.call(func, x, dims, keepdim=bool(ctx.attr("keepdims", 1)))]


# ------------------------------------------------------------------ shapes and layout
def reshape_value(b: FxBuilder, x: Value, targets: list[list[int]]) -> Value:
    """``x`` reshaped to ``targets[i]`` at example batch ``i`` (fully resolved shapes)."""
    for ex_shape, t in zip(x.shapes, targets):
        if _numel(ex_shape) != _numel(t):
            raise ImportFailure(f"cannot reshape {list(ex_shape)} to {list(t)}")
    if not x.is_dynamic:
        return b.per_batch([e.reshape(t) for e, t in zip(x.examples, targets)])
    return b.call(torch.reshape, x, b.reshape_target(x, targets))


def _resolve(target: list[int], dims: tuple[int, ...], allow_zero: bool) -> list[int] | None:
    """ONNX Reshape target → concrete shape (0 copies the input dimension, -1 is inferred)."""
    t = [dims[i] if v == 0 and not allow_zero and i < len(dims) else v for i, v in enumerate(target)]
    known = _numel([v for v in t if v != -1])
    if t.count(-1) > 1:
        raise ImportFailure(f"Reshape target {target} has more than one -1")
    if -1 in t:
        if known == 0 or _numel(dims) % known:
            return None
        t[t.index(-1)] = _numel(dims) // known
    return t if _numel(t) == _numel(dims) else None


@op("Reshape")
def reshape(b, ctx):
    x, shape = ctx.need(0, "data"), ctx.need(1, "shape")
    allow_zero = bool(ctx.attr("allowzero", 0))
    targets = []
    for i in range(2):
        target = [int(v) for v in shape.examples[i].reshape(-1).tolist()]
        batch = ctx.importer.g.input_dims[0]
        if (shape.is_const and target and target[0] == batch
                and x.is_dynamic and x.shapes[0][0] != x.shapes[1][0]):
            # a file exported for a fixed batch ([1, 9216] or [1, -1] hard-coded): its leading size
            # is the batch; the other sizes are what they are at the file's batch size
            at_file_batch = _resolve(target, (batch, *x.shapes[i][1:]), allow_zero)
            if at_file_batch is not None:
                target = [-1, *at_file_batch[1:]]
        full = _resolve(target, x.shapes[i], allow_zero)
        if full is None:
            raise ImportFailure(f"cannot reshape {list(x.shapes[i])} to {target}")
        targets.append(full)
    return [reshape_value(b, x, targets)]


@op("Flatten")
def flatten(b, ctx):
    x = ctx.need(0, "input")
    axis = int(ctx.attr("axis", 1))
    axis = axis + x.rank if axis < 0 else axis
    targets = [[_numel(s[:axis]), _numel(s[axis:])] for s in x.shapes]
    return [reshape_value(b, x, targets)]


def _axes_arg(ctx, x_rank: int, from_input_since: int, out_rank: int | None = None) -> list[int] | None:
    rank = x_rank if out_rank is None else out_rank
    if ctx.opset >= from_input_since:
        v = ctx.input(1)
        axes = None if v is None else v.ints("the axes")
    else:
        axes = ctx.attr("axes")
    return None if axes is None else sorted(_axis(a, rank) for a in axes)


@op("Squeeze")
def squeeze(b, ctx):
    x = ctx.need(0, "data")
    axes = _axes_arg(ctx, x.rank, 13)
    if axes is None:   # every size-1 dimension; the batch-2 example shows which are not the batch
        axes = [i for i, d in enumerate(x.shapes[1]) if d == 1]
    targets = [[d for i, d in enumerate(s) if i not in axes] for s in x.shapes]
    return [reshape_value(b, x, targets)]


@op("Unsqueeze")
def unsqueeze(b, ctx):
    x = ctx.need(0, "data")
    count = len(ctx.input(1).ints()) if ctx.opset >= 13 else len(ctx.attr("axes"))
    axes = _axes_arg(ctx, x.rank, 13, out_rank=x.rank + count)
    targets = []
    for s in x.shapes:
        dims = list(s)
        for a in axes:
            dims.insert(a, 1)
        targets.append(dims)
    return [reshape_value(b, x, targets)]


@op("Transpose")
def transpose(b, ctx):
    x = ctx.need(0, "data")
    perm = ctx.attr("perm") or list(reversed(range(x.rank)))
    return [b.call(torch.permute, x, tuple(int(p) for p in perm))]


@op("Concat")
def concat(b, ctx):
    values = [v for v in ctx.inputs if v is not None]
    axis = _axis(int(ctx.attr("axis")), values[0].rank)
    return [b.call(torch.cat, values, axis)]


@op("Pad")
def pad(b, ctx):
    x = ctx.need(0, "data")
    mode = ctx.attr("mode", "constant")
    if ctx.opset < 11:
        pads, value, axes = list(ctx.attr("pads")), float(ctx.attr("value", 0.0)), None
    else:
        pads = ctx.need(1, "pads").ints("the pads")
        value_v = ctx.input(2)
        value = 0.0 if value_v is None else float(value_v.const("the constant value"))
        axes_v = ctx.input(3)
        axes = None if axes_v is None else [_axis(a, x.rank) for a in axes_v.ints("the axes")]
    axes = axes if axes is not None else list(range(x.rank))
    full = [0] * (2 * x.rank)
    for i, a in enumerate(axes):
        full[a], full[a + x.rank] = pads[i], pads[i + len(axes)]
    order = list(_torch_pad_order(full))
    while order and order[-1] == 0 and order[-2] == 0:
        order = order[:-2]
    if not order:
        return [x]
    modes = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
    if mode not in modes:
        raise ImportFailure(f"Pad mode {mode!r}")
    if mode == "constant":
        return [b.call(F.pad, x, tuple(order), value=value)]
    return [b.call(F.pad, x, tuple(order), mode=modes[mode])]


# ------------------------------------------------------------------ constants and shape arithmetic
@op("Constant")
def constant(b, ctx):
    attrs = ctx.attrs
    if "value" in attrs:
        array = attrs["value"]
    elif "value_float" in attrs:
        array = np.float32(attrs["value_float"])
    elif "value_floats" in attrs:
        array = np.array(attrs["value_floats"], dtype=np.float32)
    elif "value_int" in attrs:
        array = np.int64(attrs["value_int"])
    elif "value_ints" in attrs:
        array = np.array(attrs["value_ints"], dtype=np.int64)
    else:
        raise ImportFailure(f"Constant with attribute(s) {sorted(attrs)}")
    return [b.constant(_float_tensor(array), ctx.node.output[0])]


@op("ConstantOfShape")
def constant_of_shape(b, ctx):
    value = ctx.attr("value")
    fill = _float_tensor(value).reshape(-1) if value is not None else torch.zeros(1)
    shape = ctx.need(0, "shape")
    return [b.per_batch([fill.expand(tuple(int(v) for v in s.tolist())).clone() for s in shape.examples])]


@op("Shape")
def shape(b, ctx):
    x = ctx.need(0, "data")
    start, end = ctx.attr("start", 0), ctx.attr("end", None)
    return [b.per_batch([torch.tensor(s[start:end], dtype=torch.int64) for s in x.shapes])]


@op("Size")
def size(b, ctx):
    return [b.per_batch([torch.tensor(_numel(s), dtype=torch.int64) for s in ctx.need(0, "data").shapes])]


def _gather_eager(data: torch.Tensor, indices: torch.Tensor, axis: int) -> torch.Tensor:
    idx = torch.where(indices < 0, indices + data.shape[axis], indices).long()
    out = torch.index_select(data, axis, idx.reshape(-1))
    return out.reshape(tuple(data.shape[:axis]) + tuple(idx.shape) + tuple(data.shape[axis + 1:]))


@op("Gather")
def gather(b, ctx):
    data, indices = ctx.need(0, "data"), ctx.need(1, "indices")
    axis = _axis(int(ctx.attr("axis", 0)), data.rank)
    if not data.is_dynamic:
        return [b.call(_gather_eager, data, indices, axis)]
    size_ = data.static_shape[axis]
    idx = indices.const("the Gather indices").long()
    if size_ is None:
        raise ImportFailure("Gather along the batch dimension")
    idx = torch.where(idx < 0, idx + size_, idx)
    if idx.dim() == 0:
        return [b.call(torch.select, data, axis, int(idx))]
    if idx.dim() == 1:
        return [b.call(torch.index_select, data, axis, b.constant(idx, ctx.node.input[1]))]
    raise ImportFailure("Gather of image data with multi-dimensional indices")


def _slice_eager(data: torch.Tensor, index: tuple) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(data.numpy()[index]))


@op("Slice")
def slice_(b, ctx):
    data = ctx.need(0, "data")
    if ctx.opset < 10:
        starts, ends, axes, steps = ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes"), None
    else:
        starts, ends = ctx.need(1, "starts").ints("starts"), ctx.need(2, "ends").ints("ends")
        axes = None if ctx.input(3) is None else ctx.input(3).ints("axes")
        steps = None if ctx.input(4) is None else ctx.input(4).ints("steps")
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    index = [slice(None)] * data.rank
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        index[_axis(ax, data.rank)] = slice(st, en, sp)
    if not data.is_dynamic:
        return [b.call(_slice_eager, data, tuple(index))]
    if any(sp < 0 for sp in steps):
        raise ImportFailure("Slice of image data with a negative step")
    return [b.call(operator.getitem, data, tuple(index))]


@op("Cast")
def cast(b, ctx):
    x = ctx.need(0, "input")
    dtype = _torch_dtype(int(ctx.attr("to")))
    if x.is_dynamic and dtype == torch.float32:
        return [x]
    return [b.method("to", x, dtype)]


@op("Range")
def range_(b, ctx):
    start, limit, delta = (ctx.need(i, n) for i, n in ((0, "start"), (1, "limit"), (2, "delta")))
    if any(v.is_dynamic for v in (start, limit, delta)):
        raise ImportFailure("Range over image data")
    return [b.call(_arange, start, limit, delta)]


def _arange(start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


@op("Expand")
def expand(b, ctx):
    x, shape = ctx.need(0, "input"), ctx.need(1, "shape")
    if x.is_dynamic:
        raise ImportFailure("Expand of image data")
    return [b.per_batch([e * torch.ones(tuple(int(v) for v in s.tolist()), dtype=e.dtype)
                         for e, s in zip(x.examples, shape.examples)])]


SUPPORTED_OPS = tuple(sorted(OPS))
