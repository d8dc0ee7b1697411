"""SIEVE's misspeculation detector: when to distrust the little model and recover.

On a calibration split the little model's outputs fall into three groups (dissertation §4.3,
Fig. 4.4): *correct* (little right), *correctable* (little wrong, the recovery right) and
*uncorrectable* (both wrong).  Recovering a correct or an uncorrectable output only costs time;
recovering a correctable one buys accuracy.  A threshold on a confidence probe decides
("recover when confidence < threshold"); we pick the one that meets a target quality — a
fraction of the big model's accuracy on the same split — with the fewest recoveries.

Two kinds of threshold:

* single — one number for every input;
* per-class — one number per class *predicted by the little model* (Dynamic Duo, §6.4), found
  by the dissertation's heuristic: each class at its own optimum (the smallest threshold that
  maximises that class's correct count), then all thresholds lowered in equal steps while the
  overall target still holds.  A ``greedy`` variant lowers one class at a time, always the one
  that saves most recoveries per correct answer lost.

Accuracy targets are compared as integer counts of correct answers, so "100 % of big" means
"at least as many correct answers as the big model", with no floating-point slack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import SieveError
from .probes import get_probe

CORRECT, CORRECTABLE, UNCORRECTABLE = 0, 1, 2
GROUP_NAMES = ("correct", "correctable", "uncorrectable")


def outcome_groups(little_ok: np.ndarray, recover_ok: np.ndarray) -> np.ndarray:
    """0 = little correct, 1 = correctable (little wrong, recovery right), 2 = uncorrectable."""
    little_ok = np.asarray(little_ok, bool)
    recover_ok = np.asarray(recover_ok, bool)
    return np.where(little_ok, CORRECT, np.where(recover_ok, CORRECTABLE, UNCORRECTABLE))


def _curve(conf: np.ndarray, little_ok: np.ndarray, recover_ok: np.ndarray):
    """Every distinct "recover when conf < t" rule on these inputs, fewest recoveries first.

    Returns (thresholds, recovered counts, correct counts); thresholds[i] recovers exactly
    ``recovered[i]`` inputs.  The last threshold is +inf (recover everything).
    """
    order = np.argsort(conf, kind="stable")
    c = conf[order]
    n = len(c)
    rec_ok = np.concatenate([[0], np.cumsum(recover_ok[order])])
    lit_ok = np.concatenate([[0], np.cumsum(little_ok[order])])
    correct = rec_ok + (lit_ok[-1] - lit_ok)
    j = np.arange(n + 1)
    valid = np.ones(n + 1, bool)
    if n:
        valid[1:n] = c[1:] > c[:-1]
    thresholds = np.concatenate([c, [np.inf]])
    return thresholds[valid], j[valid], correct[valid]


@dataclass
class Thresholds:
    """A fitted recovery rule: recover an input when probe(little) < value[predicted class]."""

    probe: str
    values: np.ndarray  # shape (1,) for a single threshold, (K,) per class
    per_class: bool
    method: str = "single"
    met: bool = True  # whether the target was reachable on the calibration split

    def confidence(self, little_probs: np.ndarray) -> np.ndarray:
        return get_probe(self.probe)(little_probs)

    def recover_mask(self, little_probs: np.ndarray) -> np.ndarray:
        """True where the little model's answer is doubtful and must be recovered."""
        conf = self.confidence(little_probs)
        if self.per_class:
            if little_probs.shape[1] != len(self.values):
                raise SieveError(f"per-class thresholds are for {len(self.values)} classes, the "
                                 f"model outputs {little_probs.shape[1]}; calibrate on the same task")
            return conf < self.values[little_probs.argmax(axis=1)]
        return conf < self.values[0]

    def to_json(self) -> dict:
        vals = [float(v) if math.isfinite(v) else None for v in self.values]
        return {"probe": self.probe, "per_class": self.per_class, "method": self.method,
                "met_on_calibration": self.met, "values": vals if self.per_class else vals[0]}


def target_count(target_accuracy: float, n: int) -> int:
    """Correct answers needed out of ``n`` for ``target_accuracy`` (tolerates float round-off)."""
    return int(math.ceil(target_accuracy * n - 1e-9))


def fit_single(conf: np.ndarray, little_ok: np.ndarray, recover_ok: np.ndarray,
               need: int) -> tuple[float, bool]:
    """Lowest threshold whose rule reaches ``need`` correct answers (fewest recoveries).

    When no threshold reaches it, returns the one with the most correct answers and False.
    """
    t, rec, correct = _curve(conf, little_ok, recover_ok)
    ok = np.flatnonzero(correct >= need)
    if len(ok):
        return float(t[ok[0]]), True
    return float(t[int(np.argmax(correct))]), False


def _class_curves(conf, pred, little_ok, recover_ok, k):
    return [_curve(conf[pred == c], little_ok[pred == c], recover_ok[pred == c]) for c in range(k)]


def fit_per_class(conf: np.ndarray, pred: np.ndarray, little_ok: np.ndarray,
                  recover_ok: np.ndarray, need: int, num_classes: int,
                  method: str = "equal_step", step: float = 0.005) -> tuple[np.ndarray, bool]:
    """Per-class thresholds (class = little model's prediction) meeting ``need`` correct.

    ``equal_step``: the dissertation heuristic — start at each class's optimum, lower all by
    ``step`` (in probe units) at a time; keep the last set that still meets the target.
    ``greedy``: move one class at a time to any lower rule of its own, choosing the move that
    saves most recoveries per correct answer lost, while the target holds.
    """
    curves = _class_curves(conf, pred, little_ok, recover_ok, num_classes)
    # per-class optimum: smallest threshold with that class's maximal correct count
    idx = [int(np.argmax(cor)) for (_, _, cor) in curves]
    total = sum(int(cor[i]) for (_, _, cor), i in zip(curves, idx))
    start = np.array([t[i] for (t, _, _), i in zip(curves, idx)], dtype=np.float64)
    if total < need:
        return start, False
    if method == "equal_step":
        finite = np.where(np.isfinite(start), start, 1.0 + step)
        best = start
        for k in range(1, int(math.ceil(float(finite.max()) / step)) + 2):
            cand = np.maximum(finite - k * step, 0.0)
            # "conf < x" with t[i-1] < x <= t[i] recovers exactly what t[i] recovers
            got = sum(int(cor[np.searchsorted(t, cand[c], side="left")])
                      for c, (t, _, cor) in enumerate(curves))
            if got < need:
                break
            best = cand
        return best, True
    if method == "greedy":
        idx = list(idx)
        while True:
            best_move, best_score = None, -np.inf
            for c, (t, rec, cor) in enumerate(curves):
                i = idx[c]
                if i == 0:
                    continue
                saved = rec[i] - rec[:i]  # every lower rule of this class, not just the next one
                lost = cor[i] - cor[:i]
                ok = total - lost >= need
                if not ok.any():
                    continue
                score = np.where(lost > 0, saved / np.maximum(lost, 1), 1e6 * saved - lost)
                score = np.where(ok, score, -np.inf)
                j = int(np.argmax(score))
                if score[j] > best_score:
                    best_move, best_score = (c, j, int(lost[j])), float(score[j])
            if best_move is None:
                break
            c, j, lost = best_move
            idx[c] = j
            total -= lost
        return np.array([t[i] for (t, _, _), i in zip(curves, idx)], dtype=np.float64), True
    raise SieveError(f"unknown per-class method {method!r}; choose equal_step or greedy")


def fit(little_probs: np.ndarray, recover_probs: np.ndarray, labels: np.ndarray,
        big_correct: int, target: float = 1.0, probe: str = "max_softmax",
        per_class: bool = False, method: str = "equal_step") -> Thresholds:
    """Fit a recovery rule on a calibration split.

    ``recover_probs`` are what the system answers on recovery (the big model's softmax, or the
    average of both models' softmax when outputs are combined); ``big_correct`` is the number of
    calibration inputs the big model alone gets right, so the target is
    ``target * big_correct`` correct answers.
    """
    check_same_task(little_probs, recover_probs, labels)
    conf = get_probe(probe)(little_probs)
    pred = little_probs.argmax(axis=1)
    little_ok = pred == labels
    recover_ok = recover_probs.argmax(axis=1) == labels
    need = int(math.ceil(target * big_correct - 1e-9))
    if per_class:
        vals, met = fit_per_class(conf, pred, little_ok, recover_ok, need,
                                  little_probs.shape[1], method=method)
        return Thresholds(probe, vals, True, method, met)
    val, met = fit_single(conf, little_ok, recover_ok, need)
    return Thresholds(probe, np.array([val]), False, "single", met)


def check_same_task(*arrays: np.ndarray) -> None:
    """Probability matrices and label vectors must describe the same images and classes."""
    probs = [a for a in arrays if np.ndim(a) == 2]
    labels = [a for a in arrays if np.ndim(a) == 1]
    n = {len(a) for a in arrays}
    if len(n) != 1:
        raise SieveError(f"outputs cover different numbers of images {sorted(n)}; evaluate all "
                         "models on the same data")
    k = {a.shape[1] for a in probs}
    if len(k) > 1:
        raise SieveError(f"models disagree on the number of classes {sorted(k)}; a pool must "
                         "share one task and dataset")
    for y in labels:
        if len(y) and k and (y.min() < 0 or y.max() >= next(iter(k))):
            raise SieveError(f"labels range {int(y.min())}..{int(y.max())} does not fit "
                             f"{next(iter(k))} classes; the data is not the models' task")


@dataclass
class Outcome:
    """What a recovery rule does on one split: accuracy, recoveries and the probe's errors."""

    accuracy: float
    recovery_rate: float
    little_accuracy: float
    big_accuracy: float
    false_negative_rate: float  # little wrong but not recovered / little wrong
    false_positive_rate: float  # recovered although little right / little right
    missed_correctable_rate: float  # correctable but not recovered / correctable
    groups: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def evaluate(rule: Thresholds, little_probs: np.ndarray, recover_probs: np.ndarray,
             big_probs: np.ndarray, labels: np.ndarray) -> Outcome:
    """Apply ``rule`` on a (held-out) split and measure it."""
    check_same_task(little_probs, recover_probs, big_probs, labels)
    mask = rule.recover_mask(little_probs)
    lp = little_probs.argmax(axis=1)
    rp = recover_probs.argmax(axis=1)
    final = np.where(mask, rp, lp)
    little_ok = lp == labels
    recover_ok = rp == labels
    g = outcome_groups(little_ok, recover_ok)
    wrong = ~little_ok
    correctable = g == CORRECTABLE
    return Outcome(
        accuracy=float((final == labels).mean()),
        recovery_rate=float(mask.mean()),
        little_accuracy=float(little_ok.mean()),
        big_accuracy=float((big_probs.argmax(axis=1) == labels).mean()),
        false_negative_rate=float((wrong & ~mask).sum() / max(wrong.sum(), 1)),
        false_positive_rate=float((little_ok & mask).sum() / max(little_ok.sum(), 1)),
        missed_correctable_rate=float((correctable & ~mask).sum() / max(correctable.sum(), 1)),
        groups={name: int((g == i).sum()) for i, name in enumerate(GROUP_NAMES)},
    )


def distributions(conf: np.ndarray, little_ok: np.ndarray, recover_ok: np.ndarray,
                  bins: int = 20) -> dict:
    """Histogram of probe values per group (Fig. 4.4), on [0, 1]."""
    g = outcome_groups(little_ok, recover_ok)
    edges = np.linspace(0.0, 1.0, bins + 1)
    return {"edges": edges.tolist(),
            **{name: np.histogram(conf[g == i], bins=edges)[0].tolist()
               for i, name in enumerate(GROUP_NAMES)}}


def accuracy_vs_recovery(conf: np.ndarray, little_ok: np.ndarray, recover_ok: np.ndarray,
                         points: int = 101) -> dict:
    """Accuracy as a function of recovery rate for a single threshold (Fig. 6.8)."""
    _, rec, correct = _curve(conf, little_ok, recover_ok)
    n = max(len(conf), 1)
    keep = np.unique(np.linspace(0, len(rec) - 1, min(points, len(rec))).round().astype(int))
    return {"recovery_rate": (rec[keep] / n).tolist(), "accuracy": (correct[keep] / n).tolist()}
