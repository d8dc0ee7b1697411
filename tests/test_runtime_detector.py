"""Probes and the misspeculation detector on synthetic outputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from sieve.errors import SieveError
from sieve.runtime import detector
from sieve.runtime.probes import max_softmax, score_margin, softmax


def test_softmax_and_probes():
    p = softmax(np.array([[0.0, 0.0], [np.log(3.0), 0.0]]))
    assert np.allclose(p.sum(1), 1)
    assert np.allclose(max_softmax(p), [0.5, 0.75])
    assert np.allclose(score_margin(p), [0.0, 0.5])
    q = np.array([[0.1, 0.6, 0.3]])
    assert np.allclose(score_margin(q), [0.3])


def test_softmax_rejects_nan():
    with pytest.raises(SieveError, match="NaN"):
        softmax(np.array([[np.nan, 1.0]]))


def test_outcome_groups():
    g = detector.outcome_groups(np.array([1, 0, 0, 1], bool), np.array([0, 1, 0, 1], bool))
    assert g.tolist() == [detector.CORRECT, detector.CORRECTABLE, detector.UNCORRECTABLE, detector.CORRECT]


def test_fit_single_picks_fewest_recoveries():
    # confidences 0.1 .. 0.9; little wrong on the three least confident; big right on 0.1 and 0.3 only
    conf = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    little_ok = conf > 0.35
    recover_ok = np.isin(conf, [0.1, 0.3]) | (conf > 0.35)
    # need 8 correct: must recover 0.1 and 0.3 -> threshold just above 0.3 = 0.4 (recovers 3)
    t, met = detector.fit_single(conf, little_ok, recover_ok, need=8)
    assert met and t == pytest.approx(0.4)
    assert (conf < t).sum() == 3
    # need 7: recovering only 0.1 is enough -> threshold 0.2 (recovers 1)
    t, met = detector.fit_single(conf, little_ok, recover_ok, need=7)
    assert met and (conf < t).sum() == 1
    # need 9 is impossible (0.2 uncorrectable): best threshold, not met
    t, met = detector.fit_single(conf, little_ok, recover_ok, need=9)
    assert not met and (recover_ok[conf < t].sum() + little_ok[conf >= t].sum()) == 8


def test_fit_single_ties_never_split():
    conf = np.array([0.5, 0.5, 0.5, 0.9])
    little_ok = np.array([0, 1, 1, 1], bool)
    recover_ok = np.ones(4, bool)
    t, met = detector.fit_single(conf, little_ok, recover_ok, need=4)
    assert met and (conf < t).sum() == 3  # ties at 0.5 go together


def _two_class_case():
    # class 0: wrong answers sit at low confidence; class 1: wrong answers at high-ish confidence
    conf = np.array([0.30, 0.40, 0.90, 0.95, 0.60, 0.70, 0.80, 0.99])
    pred = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    little_ok = np.array([0, 1, 1, 1, 1, 1, 0, 1], bool)
    recover_ok = np.array([1, 1, 1, 1, 1, 1, 1, 1], bool)
    return conf, pred, little_ok, recover_ok


def test_per_class_beats_single():
    conf, pred, little_ok, recover_ok = _two_class_case()
    t_single, met = detector.fit_single(conf, little_ok, recover_ok, need=8)
    assert met and (conf < t_single).sum() == 5  # must go above 0.80: recovers everything below 0.90
    vals, met = detector.fit_per_class(conf, pred, little_ok, recover_ok, need=8, num_classes=2)
    rec = conf < vals[pred]
    assert met
    assert (np.where(rec, recover_ok, little_ok)).sum() == 8
    assert rec.sum() == 4  # fewer recoveries at equal accuracy
    # per-class optimum for class 0 is 0.40 (recover only 0.30); class 1 is 0.99 (recover 0.6..0.8)
    assert rec.tolist() == [True, False, False, False, True, True, True, False]


def test_per_class_greedy_meets_target():
    conf, pred, little_ok, recover_ok = _two_class_case()
    vals, met = detector.fit_per_class(conf, pred, little_ok, recover_ok, need=7, num_classes=2, method="greedy")
    rec = conf < vals[pred]
    assert met and np.where(rec, recover_ok, little_ok).sum() >= 7
    assert rec.tolist() == [True] + [False] * 7  # one recovery (0.30) is the cheapest way to 7


def test_equal_step_stops_before_target_breaks():
    rng = np.random.default_rng(1)
    n, k = 4000, 5
    pred = rng.integers(0, k, n)
    conf = rng.uniform(0.2, 1.0, n)
    little_ok = rng.uniform(size=n) < conf  # confident answers are right more often
    recover_ok = rng.uniform(size=n) < 0.9
    need = int(np.where(conf < 0.7, recover_ok, little_ok).sum())
    vals, met = detector.fit_per_class(conf, pred, little_ok, recover_ok, need, k)
    rec = conf < vals[pred]
    assert met and np.where(rec, recover_ok, little_ok).sum() >= need
    lower = np.maximum(vals - 0.005, 0)
    rec2 = conf < lower[pred]
    assert np.where(rec2, recover_ok, little_ok).sum() < need  # one more step would break it


def test_fit_and_evaluate_rates():
    labels = np.array([0, 1, 0, 1])
    little = np.array([[0.9, 0.1], [0.55, 0.45], [0.6, 0.4], [0.2, 0.8]])  # wrong on #1 only
    big = np.array([[0.8, 0.2], [0.1, 0.9], [0.3, 0.7], [0.1, 0.9]])  # wrong on #2 only
    rule = detector.fit(little, big, labels, big_correct=4, target=1.0)  # a reference as good as both
    assert not rule.per_class and rule.met
    out = detector.evaluate(rule, little, big, big, labels)
    assert out.accuracy == 1.0 and out.recovery_rate == 0.25
    assert out.false_negative_rate == 0.0 and out.false_positive_rate == 0.0
    assert out.groups == {"correct": 3, "correctable": 1, "uncorrectable": 0}
    loose = detector.Thresholds("max_softmax", np.array([0.7]), False)
    out = detector.evaluate(loose, little, big, big, labels)  # also recovers #2 (0.6): a false positive
    assert out.false_positive_rate == pytest.approx(1 / 3) and out.accuracy == 0.75


def test_mismatched_inputs_are_clear_errors():
    with pytest.raises(SieveError, match="number of classes"):
        detector.check_same_task(np.ones((3, 10)), np.ones((3, 5)), np.zeros(3, int))
    with pytest.raises(SieveError, match="numbers of images"):
        detector.check_same_task(np.ones((3, 10)), np.ones((4, 10)))
    with pytest.raises(SieveError, match="labels range"):
        detector.check_same_task(np.ones((3, 10)), np.array([0, 1, 12]))
    rule = detector.Thresholds("max_softmax", np.full(10, 0.5), True)
    with pytest.raises(SieveError, match="per-class"):
        rule.recover_mask(np.ones((2, 4)) / 4)


def test_distributions_and_curve():
    conf = np.array([0.05, 0.5, 0.95])
    d = detector.distributions(conf, np.array([0, 0, 1], bool), np.array([1, 0, 1], bool), bins=2)
    assert d["correct"] == [0, 1] and d["correctable"] == [1, 0] and d["uncorrectable"] == [0, 1]
    c = detector.accuracy_vs_recovery(conf, np.array([0, 0, 1], bool), np.array([1, 0, 1], bool))
    assert c["recovery_rate"][0] == 0 and c["recovery_rate"][-1] == 1
    assert max(c["accuracy"]) == pytest.approx(2 / 3)
