"""Exponent histograms count what the search sizes formats from: every element in exactly one
place (its binade, zeros, or non-finite), negatives apart from -0."""

from __future__ import annotations

import numpy as np
import torch

from sieve.histograms import EXP_OFFSET, ExponentHistogram


def _reference(values: np.ndarray) -> dict:
    """The counts by definition, element by element in NumPy."""
    v = values.astype(np.float32)
    bits = v.view(np.uint32)
    field = (bits >> 23) & 0xFF
    finite = np.isfinite(v)
    zero = v == 0
    counts = np.zeros(255, dtype=np.int64)
    np.add.at(counts, field[finite & ~zero], 1)
    return {"counts": counts, "zeros": int(zero.sum()), "negatives": int(((bits >> 31) == 1).sum() - np.sum(zero & np.signbit(v))),
            "nonfinite": int((~finite).sum()), "total": v.size}


def test_counts_every_kind_of_element_once() -> None:
    rng = np.random.default_rng(3)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 1e-39, -3e-39,
                        np.finfo(np.float32).max, -np.finfo(np.float32).max, np.finfo(np.float32).tiny], dtype=np.float32)
    for trial in range(20):
        scale = np.float32(2.0) ** rng.integers(-140, 120, size=2000).astype(np.float32)
        values = np.concatenate([rng.standard_normal(2000).astype(np.float32) * scale, special,
                                 np.zeros(int(rng.integers(0, 50)), dtype=np.float32)])
        rng.shuffle(values)
        hist = ExponentHistogram("t", "activation")
        half = len(values) // 2
        hist.add(torch.from_numpy(values[:half].copy()).reshape(-1, 1))
        hist.add(torch.from_numpy(values[half:].copy()))
        want = _reference(values)
        assert np.array_equal(hist.counts, want["counts"])
        assert (hist.zeros, hist.negatives, hist.nonfinite, hist.total) == (
            want["zeros"], want["negatives"], want["nonfinite"], want["total"])
        assert hist.counts.sum() + hist.zeros + hist.nonfinite == hist.total


def test_subnormals_are_binade_minus_127_and_never_negative_ignores_minus_zero() -> None:
    hist = ExponentHistogram("t", "activation")
    hist.add(torch.tensor([1e-40, 0.0, -0.0, 3.0], dtype=torch.float32))
    assert hist.counts[-127 + EXP_OFFSET] == 1 and hist.counts[1 + EXP_OFFSET] == 1
    assert hist.zeros == 2 and hist.never_negative
    hist.add(torch.tensor([-0.5], dtype=torch.float64))  # other float dtypes are converted
    assert hist.negatives == 1 and not hist.never_negative and hist.counts[-1 + EXP_OFFSET] == 1
