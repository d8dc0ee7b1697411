"""Confidence probes: how sure a classifier is about its own top-1 answer.

The speculative runtime trusts a cheap model's answer only when a probe says it is confident.
Both probes here read the softmax of the logits, so they cost nothing next to the model:

* ``max_softmax`` — the top-1 probability (SIEVE's misspeculation detector, dissertation §4.3);
* ``score_margin`` — top-1 minus top-2 probability (Park et al. "Big/little deep neural
  network", and the flexible-ensemble papers of Tann, Hashemi and Reda).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import SieveError


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable: subtracts the row maximum first)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise SieveError(f"logits must be a 2-D (images, classes) array, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise SieveError("logits contain NaN or Inf; check the model's weights and the input data")
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def max_softmax(probs: np.ndarray) -> np.ndarray:
    """Top-1 probability of each row of a probability matrix."""
    return np.asarray(probs).max(axis=1)


def score_margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability of each row (0 = a tie, 1 = certain)."""
    p = np.asarray(probs)
    if p.shape[1] < 2:
        return np.ones(p.shape[0])
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


PROBES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "max_softmax": max_softmax,
    "score_margin": score_margin,
}


def get_probe(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The probe function called ``name`` (``max_softmax`` or ``score_margin``)."""
    try:
        return PROBES[name]
    except KeyError:
        raise SieveError(f"unknown probe {name!r}; choose one of {sorted(PROBES)}") from None
