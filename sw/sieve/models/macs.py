"""Multiply-accumulates of one input through a network: the compute cost that the seed systems
(multi-dsNN's cost model, M&MNet's Minions) compare.  It lives beside the model definitions so
that every package above can count MACs without reaching into another one's cost model."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["module_macs"]


def module_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one input through ``module`` (Linear and Conv2d layers).

    Counted from the shapes seen in a forward pass of one zero input: a Linear layer does
    in x out MACs, a convolution (in_channels / groups) x kernel area per output element.
    """
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        if isinstance(layer, nn.Linear):
            total += layer.in_features * layer.out_features
        elif isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            total += output[0].numel() * (layer.in_channels // layer.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            module(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    return total
