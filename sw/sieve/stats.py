"""Paired comparison of a candidate model with a reference (fp32) on the same held-out images.

Why a paired test: both models see the same images, so only the *discordant* ones tell them
apart — *gains* (reference wrong, candidate right) and *losses* (reference right, candidate
wrong).  Images both get right or both get wrong say nothing about which is better.

Normalized accuracy is ``candidate correct / reference correct`` (None when the reference gets
nothing right: there is nothing to normalize by).

How a target enters the test.  A target ``T`` on normalized accuracy (1.0 = "as accurate as
fp32", 0.999 = "at most 0.1 % of fp32's correct images lost") allows the candidate to lose, net,

    allowance = reference_correct - ceil(T * reference_correct)      (whole images)

on this split — the same integer *slack* the search's validation rule uses
(:meth:`sieve.search.context.SearchContext.need`).  The null hypothesis is "the candidate sits
exactly on its target": its expected net loss on these images is the allowance,
``E[losses - gains] = allowance``.  Given the ``n = gains + losses`` discordant images, each is
a loss with probability ``q0`` such that ``n * q0 - n * (1 - q0) = allowance``:

    q0 = min(1, 1/2 + allowance / (2 n))

The one-sided exact p-value for "the candidate is worse than its target" is then
``P(Binomial(n, q0) >= losses)``.  With ``T = 1`` (allowance 0) this is the textbook exact
one-sided McNemar test (``q0 = 1/2``).  The shift conditions on the observed discordant count
(the discordance rate is the test's nuisance parameter), so for ``T < 1`` it is exact given
that plug-in, not unconditionally exact.  When the allowance covers every discordant image
(``allowance >= n``), nothing the candidate did can put it below the target: p = 1.

*Holds* on held-out data: the candidate is **not significantly below** its target at level
``alpha`` (5 %), i.e. ``p >= alpha``.  This is deliberately the lenient side of the question —
"the data do not show it is worse" — which is what a held-out verdict can honestly say about a
plan chosen to meet a target on validation; the raw gains/losses stand beside it.  Edge cases:
no discordant image gives p = 1 (holds); a reference that gets nothing right cannot lose
anything (losses = 0), so p = 1 (holds) and the normalized accuracy is None.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest

from .errors import SieveError

__all__ = ["ALPHA", "Paired", "allowance", "compare", "holds", "margin_passes", "mcnemar_worse_p", "paired_verdict",
           "verdict"]

ALPHA = 0.05  # significance level of the held-out verdict


@dataclass(frozen=True)
class Paired:
    """Counts of a paired comparison on one split."""

    images: int
    reference_correct: int
    correct: int
    gains: int    # reference wrong -> candidate right
    losses: int   # reference right -> candidate wrong

    @property
    def normalized(self) -> float | None:
        """Candidate correct over reference correct; None when the reference gets nothing right."""
        return self.correct / self.reference_correct if self.reference_correct else None

    def to_json(self) -> dict:
        return {**asdict(self), "normalized_accuracy": self.normalized}


def compare(reference_correct, candidate_correct) -> Paired:
    """Paired counts from two per-image correctness vectors (bool, same length, non-empty)."""
    ref = np.asarray(reference_correct, dtype=bool).ravel()
    cand = np.asarray(candidate_correct, dtype=bool).ravel()
    if ref.shape != cand.shape or ref.size == 0:
        raise SieveError("a paired comparison needs two equally long, non-empty correctness vectors "
                         f"(got {ref.size} and {cand.size} images); evaluate both on the same split")
    return Paired(images=int(ref.size), reference_correct=int(ref.sum()), correct=int(cand.sum()),
                  gains=int((cand & ~ref).sum()), losses=int((ref & ~cand).sum()))


def allowance(reference_correct: int, target: float) -> int:
    """Images the target lets the candidate lose, net, on a split where the reference gets
    ``reference_correct`` right (module docstring; the search's slack)."""
    if not 0.0 < target <= 1.0:
        raise SieveError(f"target {target!r} is not a normalized accuracy in (0, 1]; use e.g. 0.999")
    return int(reference_correct - math.ceil(target * reference_correct - 1e-9))


def mcnemar_worse_p(gains: int, losses: int, allowed: int = 0) -> float:
    """Exact one-sided p-value that the candidate is worse than a target allowing ``allowed``
    net lost images (module docstring); ``allowed = 0`` is the plain exact McNemar test."""
    if min(gains, losses, allowed) < 0:
        raise SieveError(f"gains, losses and allowance must be >= 0 (got {gains}, {losses}, {allowed})")
    n = gains + losses
    if n == 0 or allowed >= n:
        return 1.0
    q0 = min(1.0, 0.5 + allowed / (2.0 * n))
    return float(binomtest(losses, n, q0, alternative="greater").pvalue)


def holds(paired: Paired, target: float = 1.0, alpha: float = ALPHA) -> bool:
    """Whether the candidate's accuracy is not significantly below ``target`` (normalized
    accuracy, e.g. 0.999) at level ``alpha``: ``p >= alpha`` (module docstring)."""
    return mcnemar_worse_p(paired.gains, paired.losses, allowance(paired.reference_correct, target)) >= alpha


def verdict(paired: Paired, target: float = 1.0, alpha: float = ALPHA) -> dict:
    """The JSON-ready comparison: counts, normalized accuracy, allowance, p-value and verdict."""
    allowed = allowance(paired.reference_correct, target)
    p = mcnemar_worse_p(paired.gains, paired.losses, allowed)
    return {**paired.to_json(), "target": target, "allowance": allowed, "p_worse": p,
            "alpha": alpha, "holds": p >= alpha}


def paired_verdict(ref_correct, new_correct, target: float = 1.0, alpha: float = ALPHA) -> dict:
    """The report-ready comparison the seed systems (multi-dsNN, pruning) print: images,
    both accuracies, normalized accuracy (NaN when the reference gets nothing right), gains,
    losses, the plain exact McNemar p that the candidate is worse, whether the point estimate
    meets ``target`` and whether the candidate holds (not significantly worse) at ``alpha``."""
    paired = compare(ref_correct, new_correct)
    ref_acc, new_acc = paired.reference_correct / paired.images, paired.correct / paired.images
    p = mcnemar_worse_p(paired.gains, paired.losses)
    normalised = new_acc / ref_acc if ref_acc else float("nan")
    return {"images": paired.images, "reference_accuracy": ref_acc, "accuracy": new_acc,
            "normalised_accuracy": normalised, "gains": paired.gains, "losses": paired.losses,
            "p_worse": p, "alpha": alpha, "meets_point_target": normalised >= target - 1e-12,
            "holds": p >= alpha}


def margin_passes(gains: int, losses: int, ref_correct: int, target: float, z: float) -> bool:
    """The search's generalization-margin rule (:mod:`sieve.search.context`) for a choice made
    on validation data: ``(gains - losses) + allowance >= z * sqrt(gains + losses)``, so a
    candidate that only breaks even by luck is not chosen."""
    return (gains - losses) + allowance(ref_correct, target) >= z * math.sqrt(gains + losses) - 1e-9
