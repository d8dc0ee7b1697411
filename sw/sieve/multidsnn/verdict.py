"""Is the multi-dsNN at least as accurate as the monolith?  A paired comparison per input.

The statistics are the project's one paired comparison (:mod:`sieve.stats`: gains, losses,
exact one-sided McNemar p-value that the multi-dsNN is worse); this module only shapes its
result for the multi-dsNN report.  The target *holds* on held-out data unless that p-value is
below ``alpha`` (5 %): not significantly below the monolith.

For the *choice* on the validation split the search's generalization margin is used
(:mod:`sieve.search.context`): ``(gains - losses) + slack >= z * sqrt(gains + losses)``, so a
design that only breaks even by luck on validation is not chosen.
"""

from __future__ import annotations

import math

import numpy as np

from .. import stats

ALPHA = stats.ALPHA


def mcnemar_worse_p(gains: int, losses: int) -> float:
    """Exact one-sided p-value that the new model is worse (1.0 with no discordant input)."""
    return stats.mcnemar_worse_p(gains, losses)


def paired_verdict(ref_correct: np.ndarray, new_correct: np.ndarray, target: float = 1.0,
                   alpha: float = ALPHA) -> dict:
    """Gains, losses, accuracies, normalised accuracy, McNemar p and whether the target holds."""
    paired = stats.compare(ref_correct, new_correct)
    ref_acc, new_acc = paired.reference_correct / paired.images, paired.correct / paired.images
    p = mcnemar_worse_p(paired.gains, paired.losses)
    normalised = new_acc / ref_acc if ref_acc else float("nan")
    return {"images": paired.images, "reference_accuracy": ref_acc, "accuracy": new_acc,
            "normalised_accuracy": normalised, "gains": paired.gains, "losses": paired.losses,
            "p_worse": p, "alpha": alpha, "meets_point_target": normalised >= target - 1e-12,
            "holds": p >= alpha}


def margin_passes(gains: int, losses: int, ref_correct: int, target: float, z: float) -> bool:
    """The search's generalization-margin rule for a target fraction of ``ref_correct``."""
    slack = stats.allowance(ref_correct, target)
    return (gains - losses) + slack >= z * math.sqrt(gains + losses) - 1e-9
