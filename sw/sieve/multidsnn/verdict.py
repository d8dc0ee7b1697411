"""Is the multi-dsNN at least as accurate as the monolith?  A paired comparison per input.

On the same inputs, only the discordant ones tell the two apart: *gains* (monolith wrong,
multi-dsNN right) and *losses* (the reverse).  Under "equally accurate" each discordant input
is a loss with probability 1/2, so the exact one-sided McNemar p-value of "the multi-dsNN is
worse" is P(Binomial(gains + losses, 1/2) >= losses).  The target *holds* on held-out data
unless that p-value is below ``alpha`` (5 %): not significantly below the monolith.

For the *choice* on the validation split the search's generalization margin is used
(:mod:`sieve.search.context`): ``(gains - losses) + slack >= z * sqrt(gains + losses)``, so a
design that only breaks even by luck on validation is not chosen.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest

from ..errors import SieveError

ALPHA = 0.05


def mcnemar_worse_p(gains: int, losses: int) -> float:
    """Exact one-sided p-value that the new model is worse (1.0 with no discordant input)."""
    n = gains + losses
    if n == 0:
        return 1.0
    return float(binomtest(losses, n, 0.5, alternative="greater").pvalue)


def paired_verdict(ref_correct: np.ndarray, new_correct: np.ndarray, target: float = 1.0,
                   alpha: float = ALPHA) -> dict:
    """Gains, losses, accuracies, normalised accuracy, McNemar p and whether the target holds."""
    ref_correct, new_correct = np.asarray(ref_correct, bool), np.asarray(new_correct, bool)
    if ref_correct.shape != new_correct.shape or ref_correct.size == 0:
        raise SieveError("paired comparison needs two equally long, non-empty correctness vectors")
    gains = int((new_correct & ~ref_correct).sum())
    losses = int((ref_correct & ~new_correct).sum())
    ref_acc, new_acc = float(ref_correct.mean()), float(new_correct.mean())
    p = mcnemar_worse_p(gains, losses)
    normalised = new_acc / ref_acc if ref_acc else float("nan")
    return {"images": int(ref_correct.size), "reference_accuracy": ref_acc, "accuracy": new_acc,
            "normalised_accuracy": normalised, "gains": gains, "losses": losses,
            "p_worse": p, "alpha": alpha, "meets_point_target": normalised >= target - 1e-12,
            "holds": p >= alpha}


def margin_passes(gains: int, losses: int, ref_correct: int, target: float, z: float) -> bool:
    """The search's generalization-margin rule for a target fraction of ``ref_correct``."""
    slack = ref_correct - math.ceil(target * ref_correct - 1e-9)
    return (gains - losses) + slack >= z * math.sqrt(gains + losses) - 1e-9
