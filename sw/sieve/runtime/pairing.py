"""Dynamic Duo pair selection: which cheap model speculates for which trustworthy one.

For every model of a pool we know (on the calibration split) its accuracy, its measured
per-image latency and its outputs.  For a pair (little, big):

* *common* corrects — both right; *odd* corrects — little right where big is wrong (what a
  pair gains when the little answer is kept, or both are combined); big-only corrects;
* the recovery rule (:mod:`.detector`) that meets the target, and its recovery rate P_r;
* the cost model ``L_pair = L_little + P_r · L_big`` with measured latencies.

The target is a fraction of the *best* model's calibration accuracy.  The heuristic (Dynamic
Duo, §6.3) takes as big the cheapest model that meets the target alone and tries the cheaper
models as little in order of decreasing odd-subset size, keeping the first pair that meets the
target and beats big alone; the exhaustive search tries every pair with a cheaper little and
keeps the cheapest.  When no pair meets the target the pool falls back to one model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .detector import Thresholds, fit


@dataclass
class PairResult:
    little: str
    big: str
    rule: Thresholds
    combine: bool
    accuracy: float  # calibration
    recovery_rate: float  # calibration
    cost: float  # L_little + P_r * L_big, seconds per image
    met: bool
    common: int
    odd: int
    big_only: int

    def to_json(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "rule"}
        d["rule"] = self.rule.to_json()
        return d


@dataclass
class Selection:
    """Outcome of a pair search: the chosen pair (or None) and everything considered."""

    method: str
    pair: PairResult | None
    fallback: str | None
    tried: list[PairResult] = field(default_factory=list)
    message: str = ""

    def to_json(self) -> dict:
        return {"method": self.method, "pair": self.pair.to_json() if self.pair else None,
                "fallback": self.fallback, "message": self.message,
                "tried": [p.to_json() for p in self.tried]}


def model_table(probs: dict[str, np.ndarray], labels: np.ndarray, per_image: dict[str, float]) -> list[dict]:
    """Per model: calibration accuracy, correct count and measured latency, cheapest first."""
    rows = [{"model": m, "accuracy": float((p.argmax(1) == labels).mean()),
             "correct": int((p.argmax(1) == labels).sum()), "latency_s": per_image[m]}
            for m, p in probs.items()]
    return sorted(rows, key=lambda r: r["latency_s"])


def overlap(little: np.ndarray, big: np.ndarray, labels: np.ndarray) -> tuple[int, int, int]:
    """(common, odd, big-only) correct counts of two models' probabilities."""
    lo = little.argmax(1) == labels
    bo = big.argmax(1) == labels
    return int((lo & bo).sum()), int((lo & ~bo).sum()), int((~lo & bo).sum())


def evaluate_pair(little: str, big: str, probs: dict[str, np.ndarray], labels: np.ndarray,
                  per_image: dict[str, float], need: int, probe: str, per_class: bool,
                  combine: bool, method: str = "equal_step") -> PairResult:
    """Fit the recovery rule of one pair on the calibration split and cost it."""
    pl, pb = probs[little], probs[big]
    recover = (pl + pb) / 2 if combine else pb
    rule = fit(pl, recover, labels, need, 1.0, probe, per_class, method)
    mask = rule.recover_mask(pl)
    final = np.where(mask, recover.argmax(1), pl.argmax(1))
    correct = int((final == labels).sum())
    pr = float(mask.mean())
    common, odd, big_only = overlap(pl, pb, labels)
    return PairResult(little, big, rule, combine, correct / len(labels), pr,
                      per_image[little] + pr * per_image[big], correct >= need,
                      common, odd, big_only)


def needed(probs: dict[str, np.ndarray], labels: np.ndarray, target: float) -> int:
    """Correct answers a configuration must reach: target × the best model's count."""
    best = max(int((p.argmax(1) == labels).sum()) for p in probs.values())
    return int(math.ceil(target * best - 1e-9))


def _fallback(table: list[dict], need: int) -> str:
    meeting = [r for r in table if r["correct"] >= need]
    return (meeting[0] if meeting else max(table, key=lambda r: r["correct"]))["model"]


def heuristic(probs, labels, per_image, target=1.0, probe="max_softmax", per_class=True,
              combine=False, method="equal_step") -> Selection:
    """Dynamic Duo's heuristic search (see module docstring)."""
    table = model_table(probs, labels, per_image)
    need = needed(probs, labels, target)
    bigs = [r["model"] for r in table if r["correct"] >= need]
    if not bigs:
        best = _fallback(table, need)
        return Selection("heuristic", None, best, [], f"no model meets the target; using {best} alone")
    big = bigs[0]
    cheaper = [r["model"] for r in table if r["latency_s"] < per_image[big]]
    cheaper.sort(key=lambda m: -overlap(probs[m], probs[big], labels)[1])
    tried = []
    for little in cheaper:
        res = evaluate_pair(little, big, probs, labels, per_image, need, probe, per_class, combine, method)
        tried.append(res)
        if res.met and res.cost < per_image[big]:
            return Selection("heuristic", res, None, tried, f"{little} speculates for {big}")
    return Selection("heuristic", None, big, tried,
                     f"no pair meets the target more cheaply than {big}; using {big} alone")


def exhaustive(probs, labels, per_image, target=1.0, probe="max_softmax", per_class=True,
               combine=False, method="equal_step") -> Selection:
    """Every (little, big) with a cheaper little; the cheapest pair meeting the target."""
    table = model_table(probs, labels, per_image)
    need = needed(probs, labels, target)
    tried = []
    for i, lr in enumerate(table):
        for br in table[i + 1:]:
            tried.append(evaluate_pair(lr["model"], br["model"], probs, labels, per_image, need,
                                       probe, per_class, combine, method))
    ok = [p for p in tried if p.met]
    single = [r for r in table if r["correct"] >= need]
    best_single = single[0]["latency_s"] if single else math.inf
    if not ok or min(p.cost for p in ok) >= best_single:
        fb = _fallback(table, need)
        why = "no pair meets the target" if not ok else f"no pair beats {fb} alone"
        return Selection("exhaustive", None, fb, tried, f"{why}; using {fb} alone")
    best = min(ok, key=lambda p: p.cost)
    return Selection("exhaustive", best, None, tried, f"{best.little} speculates for {best.big}")
