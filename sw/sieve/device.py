"""Where evaluation runs: ``--device cpu|cuda|cuda:N|auto`` and ``--batch-size``.

Why one place: the search, ``models --eval``, the runtime studies and the Python API all take
the same spelling, and a request the machine cannot honour (``cuda`` without a GPU, a GPU index
past the last one) must fail the same way everywhere: one :class:`~sieve.errors.SieveError`
line before any work starts.  Rounding is device-agnostic (:func:`sieve.qeval.quantize_tensor`
is integer arithmetic on the fp32 bit pattern), so the device changes speed, not results.
"""

from __future__ import annotations

import os
import re

import torch

from .errors import SieveError

__all__ = ["DEVICE_CHOICES", "all_cores", "resolve_device", "check_batch_size", "to_device"]

DEVICE_CHOICES = "cpu|cuda|cuda:N|auto"
_SPEC = re.compile(r"auto|cpu|cuda(?::(?P<index>[0-9]+))?")


def all_cores() -> int:
    """CPU cores this process may run on (the search's default ``--threads``; ``--workers`` takes
    at most four of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not Linux
        return os.cpu_count() or 1


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``spec``: ``auto`` (or None) is the first GPU when torch sees one,
    else the CPU; ``cuda``/``cuda:N`` need that GPU."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = "auto" if spec is None else str(spec).strip().lower()
    m = _SPEC.fullmatch(spec)
    if m is None:
        raise SieveError(f"device {spec!r} is not one of {DEVICE_CHOICES}")
    if spec == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SieveError(f"device {spec!r} requested but torch sees no CUDA GPU on this machine;"
                         " pass --device cpu (or auto)")
    index = int(m["index"] or 0)
    if index >= torch.cuda.device_count():
        raise SieveError(f"device {spec!r} requested but this machine has {torch.cuda.device_count()} CUDA GPU(s);"
                         f" pass cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return torch.device("cuda", index)


def check_batch_size(batch_size) -> int:
    """``batch_size`` as a positive int, or a SieveError naming the bad value."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SieveError(f"batch size must be a whole number >= 1, got {batch_size!r}")
    return batch_size


def to_device(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """One batch ``x`` (on the host) on ``device``: ``x`` itself on the CPU, no copy.

    On CUDA the copy is asynchronous from page-locked (pinned) memory, so the transfer of the
    next batch overlaps the GPU's work on this one.  A slice of a split pinned once up front is
    already pinned; any other batch is pinned here, one batch at a time, so a caller never has
    to page-lock a whole split (50,000 ImageNet inputs are 30 GB).  The values are the same
    either way; an unpinned staging copy stays alive until its transfer is done (torch's pinned
    allocator records the copy's stream)."""
    device = torch.device(device)
    if device.type == "cpu" or x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        if not x.is_pinned():
            x = x.pin_memory()
        return x.to(device, non_blocking=True)
    return x.to(device)
