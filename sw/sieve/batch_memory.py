"""How many images a forward pass may take so that one batch's largest activation stays small.

Why: the search's batches default to 500 images, which is right for MNIST and CIFAR models
(ResNet-20's largest activation is 64 kB per image) but not at ImageNet size: SqueezeNet 1.0's
first convolution alone writes 4.7 MB per image, 2.4 GB for 500, and rounding it takes a few
int32 temporaries of the same size, so a batch of 500 peaked above 7 GB of RSS.  Capping the
batch by the largest activation keeps that transient memory bounded whatever the model, while
small models keep their batches (and hence their results) unchanged.

On the CPU the batches a forward pass *runs* are smaller still (:data:`CACHE_BUDGET`): a
tensor of a few MB stays in this CPU's 32 MB L3 and below glibc's 32 MB mmap threshold, so the
activations and their rounded copies are neither refetched from RAM nor page-faulted in
afresh on every allocation (the rounding itself is one loop with no temporaries on the CPU:
:mod:`sieve.cpu_rounding`).  Measured (one thread, 112 SqueezeNet images,
fp32 / all activations rounded): batches of 28 took 1.73 / 4.24 s, batches of 4 1.15 / 1.42 s;
ResNet-20, 2,000 images: 500 per batch 2.05 / 3.71 s, 100 per batch 1.03 / 1.36 s.  The search
still *judges* early rejection at the coarser batch (:func:`memory_batch_size`), so its
decisions do not depend on how finely the CPU runs.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ACTIVATION_BUDGET", "CACHE_BUDGET", "largest_activation_bytes", "memory_batch_size", "run_batch_size",
           "largest_divisor"]

ACTIVATION_BUDGET = 128 * 2**20  # bytes one batch's largest activation may take
CACHE_BUDGET = 8 * 2**20  # ... in the batches a CPU forward pass runs (cache-sized)
MIN_RUN_BATCH = 4  # below it the graph interpreter's per-batch Python costs more than the cache saves


def largest_activation_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Bytes of the largest tensor (the input or any module's output) of one image's forward
    pass, measured by running one all-zero image through ``model``."""
    sizes = [4 * int(torch.Size(input_shape).numel())]

    def record(mod, args, out):
        if isinstance(out, torch.Tensor):
            sizes.append(out.numel() * out.element_size())

    handles = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    try:
        param = next(model.parameters(), None)
        x = torch.zeros((1, *input_shape), device=param.device if param is not None else "cpu")
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return max(sizes)


def memory_batch_size(model: nn.Module, input_shape: tuple[int, ...], requested: int,
                      budget: int = ACTIVATION_BUDGET) -> int:
    """``requested``, or fewer images when a batch's largest activation would exceed ``budget``."""
    per_image = largest_activation_bytes(model, input_shape)
    return max(1, min(int(requested), budget // max(1, per_image)))


def run_batch_size(model: nn.Module, input_shape: tuple[int, ...], requested: int, device) -> int:
    """Images per forward pass on ``device``: on the CPU at most :data:`CACHE_BUDGET` of largest
    activation (but at least :data:`MIN_RUN_BATCH` images; SqueezeNet, 112 images: batches of
    1 took 1.25 / 1.59 s, of 4 1.15 / 1.42 s), and a divisor of ``requested``; on a GPU ``requested`` (its
    throughput wants large batches)."""
    if torch.device(device).type != "cpu":
        return int(requested)
    cap = max(min(MIN_RUN_BATCH, int(requested)), memory_batch_size(model, input_shape, requested, budget=CACHE_BUDGET))
    # a divisor of ``requested``, so the coarse batches the search judges at are whole run batches
    return largest_divisor(int(requested), cap)


def largest_divisor(n: int, at_most: int) -> int:
    """The largest divisor of ``n`` that is at most ``at_most`` (at least 1): a run batch that
    splits a judged batch of ``n`` images into whole runs."""
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)
