"""SNIP (Lee et al., 2019): connection sensitivity on one minibatch at initialisation.

The sensitivity of connection j is ``|∂L/∂c_j|`` at ``c = 1``, which equals ``|g_j · w_j|``
(``g = ∂L/∂w``).  The global top-k sensitivities (k = the user's keep count) are SNIP's mask;
how many of them fall in each layer is the *layer-wise keep count* that local random and
double-shot pruning borrow (dissertation §7.3–7.4).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import SieveError
from .masks import prunable_layers, top_k_mask


def sensitivities(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """``|g ⊙ w|`` of every prunable weight for one minibatch (the model is left unchanged)."""
    model.zero_grad(set_to_none=True)
    was_training = model.training
    model.train()   # batch norm uses the batch statistics, as SNIP's training graph does
    loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    model.train(was_training)
    out = {name: (m.weight.grad * m.weight).detach().abs() for name, m in prunable_layers(model)}
    model.zero_grad(set_to_none=True)
    return out


def keep_total(scores: dict[str, torch.Tensor], sparsity: float) -> int:
    """How many connections a global ``sparsity`` keeps (rounded to the nearest count)."""
    if not 0.0 <= sparsity < 1.0:
        raise SieveError(f"sparsity {sparsity} is not a fraction in [0, 1); use e.g. 0.98")
    total = sum(int(s.numel()) for s in scores.values())
    return max(1, round((1.0 - sparsity) * total))


def global_masks(scores: dict[str, torch.Tensor], keep: int) -> dict[str, torch.Tensor]:
    """SNIP's mask: 1 at the ``keep`` highest scores over all layers together."""
    names = list(scores)
    flat = torch.cat([scores[n].flatten() for n in names])
    mask = top_k_mask(flat, keep)
    out, start = {}, 0
    for n in names:
        size = int(scores[n].numel())
        out[n] = mask[start:start + size].view_as(scores[n])
        start += size
    return out


def layer_keep_counts(masks: dict[str, torch.Tensor]) -> dict[str, int]:
    """Connections kept per layer by a mask (SNIP's layer-wise rates as counts)."""
    return {name: int(m.sum()) for name, m in masks.items()}
