"""The few ONNX operators with no single torch function of the same meaning.

Plain module-level functions of torch operations, so that the imported ``GraphModule`` can be
traced again by ``torch.fx`` (the search's prefix cache does) and exported by ``torch.onnx``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["lrn", "softmax_coerced", "log_softmax_coerced", "prelu", "hard_sigmoid", "onnx_div"]


def lrn(x: torch.Tensor, size: int, alpha: float, beta: float, bias: float) -> torch.Tensor:
    """ONNX LRN: the window over channels has floor((size-1)/2) channels before, ceil(...) after
    (``nn.LocalResponseNorm`` puts the larger half before, which differs for even sizes)."""
    sq = (x * x).unsqueeze(1)
    sq = F.pad(sq, (0, 0, 0, 0, (size - 1) // 2, size // 2))
    mean = F.avg_pool3d(sq, (size, 1, 1), stride=1).squeeze(1)
    return x / (mean * alpha + bias).pow(beta)


def softmax_coerced(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Softmax before opset 13: over all dimensions from ``axis`` on, as one flattened row."""
    return torch.softmax(x.flatten(axis), -1).reshape(x.shape)


def log_softmax_coerced(x: torch.Tensor, axis: int) -> torch.Tensor:
    """LogSoftmax before opset 13 (see :func:`softmax_coerced`)."""
    return torch.log_softmax(x.flatten(axis), -1).reshape(x.shape)


def prelu(x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """ONNX PRelu: ``slope`` broadcasts numpy-style (``F.prelu`` wants a per-channel vector)."""
    return torch.where(x < 0, x * slope, x)


def hard_sigmoid(x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    return torch.clamp(x * alpha + beta, 0.0, 1.0)


def onnx_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Div: integer tensors truncate (shape arithmetic), floats divide."""
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return torch.div(a, b)
