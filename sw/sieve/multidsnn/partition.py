"""Per-input error of the monolith and the main/tail partition (dissertation §3.2.1, §3.4.1).

The error of an input is 1 - confidence, the confidence being the largest softmax probability:
unlike right/wrong it grades how hard an input is.  Sorted, the errors form a dense *main* part
of confident inputs and a sparse *tail* of hard ones (Fig. 3.4); a threshold splits them.
Thresholds are given as the tail's share of the training set (a threshold queue of tail
fractions), because the raw error scale differs from network to network.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import SieveError


def confidence_error(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    """1 - max softmax per row, in float64.

    Computed as s / (1 + s) with s = sum over the other classes of exp(l_j - l_max), so the
    confident inputs keep distinct tiny errors instead of all rounding to 0 (float32 softmax
    gives exactly 1.0 for them, and a threshold could not order them).
    """
    z = torch.as_tensor(logits, dtype=torch.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise SieveError(f"logits of shape {tuple(z.shape)}: expected N x classes with at least two classes")
    top, where = z.max(dim=1, keepdim=True)
    others = torch.exp(z - top).scatter(1, where, 0.0)    # drop the top class's 1, not subtract it
    s = others.sum(dim=1)
    return (s / (1.0 + s)).numpy()


def thresholds_for_fractions(errors: np.ndarray, tail_fractions: Sequence[float]) -> list[float]:
    """The error threshold that puts (about) each fraction of ``errors`` in the tail."""
    out = []
    for frac in tail_fractions:
        if not 0.0 < frac < 1.0:
            raise SieveError(f"tail fraction {frac} is not between 0 and 1; use e.g. 0.1,0.2,0.3")
        out.append(float(np.quantile(errors, 1.0 - frac)))
    return out


def partition(errors: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of the tail: inputs whose error is above ``threshold``."""
    return np.asarray(errors) > threshold
