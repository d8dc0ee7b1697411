"""Per-tensor exponent histograms of weights and activations (what the search sizes formats from).

Why exponents: a float format's exponent field decides which binades are representable and
its bias where they sit; counting how many elements fall in each fp32 binade is all the search
needs to choose the exponent width and bias (dissertation §4.4.1, its Fig. 4.7).  Activations
are observed on the validation split in the same pass that computes the fp32 predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["ExponentHistogram", "HistogramCollector", "weight_histograms"]

# fp32 exponent field f (1..254) is the binade [2^(f-127), 2^(f-126)); field 0 (subnormals) is
# counted as binade -127 so that every nonzero finite value has a bin.
EXP_OFFSET = 127


@dataclass
class ExponentHistogram:
    """Counts of nonzero finite elements per binade ``2^e <= |x| < 2^(e+1)``, e = -127 .. 127."""

    name: str
    kind: str
    counts: np.ndarray = field(default_factory=lambda: np.zeros(255, dtype=np.int64))  # index e + 127
    zeros: int = 0
    negatives: int = 0
    nonfinite: int = 0
    total: int = 0

    @property
    def nonzero(self) -> int:
        return int(self.counts.sum())

    @property
    def never_negative(self) -> bool:
        """True when no element was below zero (-0.0 counts as zero): an unsigned format fits."""
        return self.negatives == 0

    def exponent_range(self) -> tuple[int, int]:
        """Smallest and largest observed binade exponent (0, 0 for an all-zero tensor)."""
        nz = np.flatnonzero(self.counts)
        if nz.size == 0:
            return 0, 0
        return int(nz[0]) - EXP_OFFSET, int(nz[-1]) - EXP_OFFSET

    def coverage(self, lo: int, hi: int) -> float:
        """Fraction of nonzero elements whose binade lies in ``[lo, hi]``."""
        total = self.nonzero
        if total == 0:
            return 1.0
        a, b = max(lo + EXP_OFFSET, 0), min(hi + EXP_OFFSET, self.counts.size - 1)
        return float(self.counts[a:b + 1].sum()) / total if b >= a else 0.0

    def add(self, x: torch.Tensor) -> None:
        """Accumulate the elements of a float32 tensor.

        One ``bincount`` of sign and exponent field (9 bits) plus two counts of zeros, with no
        masked gather: the search's first fp32 pass calls this on every activation of every batch,
        and the masked version cost ~2 fp32 passes of resnet20 on its own."""
        x = x.detach().reshape(-1)
        if x.dtype != torch.float32:
            x = x.float()
        bits = x.view(torch.int32)
        # bit 8: sign, bits 0-7: exponent field (the arithmetic shift's sign extension is masked off)
        bins = torch.bincount((bits >> 23).bitwise_and_(0x1FF), minlength=512).cpu().numpy().astype(np.int64)
        by_field = bins[:256] + bins[256:]
        zeros = int((x == 0).sum())                         # +0 and -0 (field 0, mantissa 0)
        negative_zeros = int((bits == torch.iinfo(torch.int32).min).sum())
        by_field[0] -= zeros                                # field 0 keeps the subnormals only
        self.counts += by_field[:255]  # index = fp32 exponent field = e + 127 (field 0: subnormals, e = -127)
        self.zeros += zeros
        self.negatives += int(bins[256:].sum()) - negative_zeros
        self.nonfinite += int(by_field[255])
        self.total += int(x.numel())

    def to_json(self) -> dict:
        lo, hi = self.exponent_range()
        return {"name": self.name, "kind": self.kind, "total": self.total, "zeros": self.zeros,
                "negatives": self.negatives, "nonfinite": self.nonfinite, "min_exp": lo, "max_exp": hi,
                "counts": {str(lo + i): int(c) for i, c in enumerate(self.counts[lo + EXP_OFFSET:hi + EXP_OFFSET + 1])}}


class HistogramCollector:
    """An observer for :meth:`sieve.qeval.PrefixEvaluator.run`: accumulates activation histograms."""

    def __init__(self) -> None:
        self.histograms: dict[str, ExponentHistogram] = {}

    def __call__(self, name: str, x: torch.Tensor) -> None:
        hist = self.histograms.get(name)
        if hist is None:
            hist = self.histograms[name] = ExponentHistogram(name, "activation")
        hist.add(x)


def weight_histograms(model: torch.nn.Module, names: list[str]) -> dict[str, ExponentHistogram]:
    """Histograms of the named weight tensors (``"<module>.weight"``)."""
    params = dict(model.named_parameters())
    out = {}
    for name in names:
        hist = ExponentHistogram(name, "weight")
        hist.add(params[name])
        out[name] = hist
    return out
