"""The paired held-out comparison (sieve.stats): exact McNemar p-values and the target verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sieve.errors import SieveError
from sieve.stats import allowance, compare, holds, mcnemar_worse_p, verdict


def _binom_tail(n: int, k: int, q: float) -> float:
    """P(Binomial(n, q) >= k) by hand (math.comb), independent of scipy."""
    return sum(math.comb(n, i) * q ** i * (1 - q) ** (n - i) for i in range(k, n + 1))


def test_plain_mcnemar_matches_hand_computed_values() -> None:
    # 2 gains, 8 losses: P(Bin(10, 1/2) >= 8) = (45 + 10 + 1) / 1024
    assert mcnemar_worse_p(2, 8) == pytest.approx(56 / 1024, rel=1e-12)
    assert mcnemar_worse_p(0, 3) == pytest.approx(1 / 8, rel=1e-12)
    assert mcnemar_worse_p(5, 0) == pytest.approx(1.0)
    assert mcnemar_worse_p(3, 3) == pytest.approx(42 / 64, rel=1e-12)   # (20 + 15 + 6 + 1) / 64
    for g, l in [(7, 19), (40, 61), (0, 1)]:
        assert mcnemar_worse_p(g, l) == pytest.approx(_binom_tail(g + l, l, 0.5), rel=1e-9)


def test_allowance_shifts_the_null_by_the_allowed_images() -> None:
    # 4 allowed images on 12 discordant: q0 = 1/2 + 4/24 = 2/3
    assert mcnemar_worse_p(4, 8, allowed=4) == pytest.approx(_binom_tail(12, 8, 2 / 3), rel=1e-9)
    # allowance covering every discordant image: cannot be worse than the target
    assert mcnemar_worse_p(0, 5, allowed=5) == 1.0
    # the allowance can only make the verdict more lenient
    assert mcnemar_worse_p(10, 25, allowed=3) > mcnemar_worse_p(10, 25)
    # the allowance is the search's slack: floor(0.1 % of the reference's correct images)
    assert allowance(4000, 0.999) == 4 and allowance(1999, 0.999) == 1 and allowance(999, 0.999) == 0
    assert allowance(1234, 1.0) == 0
    with pytest.raises(SieveError):
        allowance(100, 1.5)
    with pytest.raises(SieveError):
        mcnemar_worse_p(-1, 2)


def test_compare_counts_gains_losses_and_normalized_accuracy() -> None:
    ref = np.array([1, 1, 1, 0, 0, 1], bool)
    cand = np.array([1, 0, 1, 1, 1, 1], bool)
    p = compare(ref, cand)
    assert (p.images, p.reference_correct, p.correct, p.gains, p.losses) == (6, 4, 5, 2, 1)
    assert p.normalized == pytest.approx(1.25)
    with pytest.raises(SieveError):
        compare(ref, cand[:3])
    with pytest.raises(SieveError):
        compare([], [])


def test_holds_edge_cases() -> None:
    same = np.array([1, 0, 1, 1, 0], bool)
    # no discordant pair: p = 1, holds
    v = verdict(compare(same, same), target=1.0)
    assert v["p_worse"] == 1.0 and v["holds"] and v["gains"] == v["losses"] == 0
    # reference all wrong: nothing to lose, normalized accuracy undefined, holds
    none = np.zeros(5, bool)
    v = verdict(compare(none, same), target=0.999)
    assert v["normalized_accuracy"] is None and v["losses"] == 0 and v["p_worse"] == 1.0 and v["holds"]
    # clearly worse: 0 gains, 6 losses -> p = 1/64 < 5 %
    ref = np.ones(10, bool)
    cand = np.array([0] * 6 + [1] * 4, bool)
    assert not holds(compare(ref, cand), target=1.0)
    # 5 losses, no gains: p = 1/32 < 5 % -> does not hold; at level 1 % it does
    cand5 = np.array([0] * 5 + [1] * 5, bool)
    assert not holds(compare(ref, cand5), 1.0) and holds(compare(ref, cand5), 1.0, alpha=0.01)
    # a target allowing losses on a big split: 2 net lost images of 5,000 correct (allowance 5)
    ref_big = np.ones(5000, bool)
    cand_big = ref_big.copy()
    cand_big[:2] = False
    assert holds(compare(ref_big, cand_big), target=0.999)
    assert verdict(compare(ref_big, cand_big), target=1.0)["p_worse"] == pytest.approx(0.25)  # 2 losses at T = 1
