"""Masks as fixed zeros, through ``torch.nn.utils.prune``.

``prune.custom_from_mask`` re-parametrises ``weight`` as ``weight_orig * weight_mask`` (a
forward pre-hook), so a pruned connection contributes exactly 0 to every forward pass and its
gradient is 0 whatever the optimiser does; ``prune.remove`` bakes the product back into a
plain ``weight`` so the saved state dict has the usual keys, zeros where pruned.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv2d and Linear (their weights are pruned; biases and batch norm are not, as in SNIP)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every prunable weight, by layer name."""
    return {name: m.weight.detach().clone() for name, m in prunable_layers(model)}


def top_k_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """1 at the ``keep`` highest scores (ties broken by position, first wins), 0 elsewhere."""
    flat = scores.flatten()
    mask = torch.zeros_like(flat)
    if keep > 0:
        # a stable sort makes ties deterministic (torch.topk leaves their order unspecified)
        order = torch.sort(flat, descending=True, stable=True).indices
        mask[order[:keep]] = 1.0
    return mask.view_as(scores)


def random_mask(shape: torch.Size, keep: int, generator: torch.Generator) -> torch.Tensor:
    """1 at ``keep`` positions drawn uniformly without replacement."""
    numel = int(torch.Size(shape).numel())
    mask = torch.zeros(numel)
    mask[torch.randperm(numel, generator=generator)[:keep]] = 1.0
    return mask.view(shape)


def layer_masks(scores: dict[str, torch.Tensor], keep: dict[str, int]) -> dict[str, torch.Tensor]:
    """Per layer, keep the ``keep[layer]`` highest-scoring connections."""
    return {name: top_k_mask(s, keep[name]) for name, s in scores.items()}


def apply(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Attach ``masks`` to the model's weights (fixed zeros during training)."""
    layers = dict(prunable_layers(model))
    for name, mask in masks.items():
        prune.custom_from_mask(layers[name], "weight", mask)
    return model


def remove(model: nn.Module) -> nn.Module:
    """Make the pruning permanent: plain ``weight`` tensors with zeros, no masks or hooks."""
    for _, m in prunable_layers(model):
        if prune.is_pruned(m):
            prune.remove(m, "weight")
    return model


def sparsity(model: nn.Module) -> dict:
    """Per-layer and global fraction of zero weights (of the effective ``weight``)."""
    layers, zeros, total = {}, 0, 0
    for name, m in prunable_layers(model):
        w = m.weight.detach()
        z = int((w == 0).sum())
        layers[name] = {"weights": int(w.numel()), "kept": int(w.numel()) - z, "sparsity": z / w.numel()}
        zeros += z
        total += int(w.numel())
    return {"layers": layers, "global": zeros / total if total else 0.0, "weights": total, "kept": total - zeros}
