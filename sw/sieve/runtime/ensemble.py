"""Flexible ensembles and multi-stage cascades: run models one after another, stop early.

Tann, Hashemi and Reda ("Flexible deep neural network processing", 2018) run N models in
sequence; after each model the running ensemble (average of the softmax outputs so far) is
scored with the score-margin probe and the input leaves as soon as the margin clears that
step's threshold.  The same machinery, with two or three stages, is the multi-stage cascade
the speculative runtime uses (little → medium → big, combining outputs on recovery).

Everything here works on cached probabilities, so a threshold grid search over thousands of
candidates costs seconds.  Thresholds are always chosen on the calibration split.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..errors import SieveError
from .probes import get_probe


@dataclass
class Chain:
    """N models in sequence; ``thresholds[i]`` is the exit threshold after stage i (N-1 of them)."""

    models: list[str]
    thresholds: list[float]
    probe: str = "score_margin"
    combine: bool = True  # stage i answers with the mean softmax of stages 0..i

    def to_json(self) -> dict:
        return {"models": self.models, "thresholds": [float(t) for t in self.thresholds],
                "probe": self.probe, "combine": self.combine}


def stage_outputs(probs: list[np.ndarray], combine: bool, probe: str):
    """Per stage: the answer (argmax) and its confidence, given all models' probabilities."""
    fn = get_probe(probe)
    preds, confs = [], []
    running = np.zeros_like(probs[0])
    for i, p in enumerate(probs):
        running = running + p
        out = running / (i + 1) if combine else p
        preds.append(out.argmax(axis=1))
        confs.append(fn(out))
    return np.stack(preds), np.stack(confs)


def run_chain(preds: np.ndarray, confs: np.ndarray, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """Final answers and exit stage of every input for the given thresholds."""
    n_stages, n = preds.shape
    exit_stage = np.full(n, n_stages - 1)
    alive = np.ones(n, bool)
    for i, t in enumerate(thresholds):
        leave = alive & (confs[i] >= t)
        exit_stage[leave] = i
        alive &= ~leave
    return preds[exit_stage, np.arange(n)], exit_stage


def chain_cost(exit_stage: np.ndarray, latencies: list[float]) -> float:
    """Average latency per input: stage i's latency is paid by every input that reaches it."""
    n_stages = len(latencies)
    reach = np.array([(exit_stage >= i).mean() for i in range(n_stages)])
    return float((reach * np.asarray(latencies)).sum())


def _candidates(conf: np.ndarray, points: int) -> np.ndarray:
    qs = np.quantile(conf, np.linspace(0.0, 1.0, points))
    return np.unique(np.concatenate([[0.0], qs, [np.inf]]))


@dataclass
class ChainResult:
    chain: Chain
    accuracy: float
    latency: float
    exit_fractions: list[float]

    def to_json(self) -> dict:
        return {**self.chain.to_json(), "accuracy": self.accuracy, "latency": self.latency,
                "exit_fractions": self.exit_fractions}


def evaluate_chain(chain: Chain, probs: dict[str, np.ndarray], labels: np.ndarray,
                   latency: dict[str, float]) -> ChainResult:
    """Accuracy, average latency and where inputs leave, on one split."""
    preds, confs = stage_outputs([probs[m] for m in chain.models], chain.combine, chain.probe)
    final, ex = run_chain(preds, confs, chain.thresholds)
    lat = chain_cost(ex, [latency[m] for m in chain.models])
    return ChainResult(chain, float((final == labels).mean()), lat,
                       [float((ex == i).mean()) for i in range(len(chain.models))])


def grid_search(models: list[str], probs: dict[str, np.ndarray], labels: np.ndarray,
                latency: dict[str, float], objective, probe: str = "score_margin",
                combine: bool = True, points: int = 24) -> ChainResult:
    """Exhaustive grid over per-stage thresholds (quantiles of each stage's confidence).

    ``objective(accuracy, latency) -> float`` is minimised; return ``inf`` to forbid a point.
    """
    if len(models) < 1:
        raise SieveError("an ensemble needs at least one model")
    preds, confs = stage_outputs([probs[m] for m in models], combine, probe)
    lats = [latency[m] for m in models]
    grids = [_candidates(confs[i], points) for i in range(len(models) - 1)]
    correct = preds == labels[None, :]
    n = len(labels)
    best = None
    if len(models) == 1:
        acc = float(correct[0].mean())
        score = objective(acc, lats[0])
        return None if not np.isfinite(score) else evaluate_chain(Chain(list(models), [], probe, combine),
                                                                  probs, labels, latency)
    # the outer stages are enumerated; the last threshold is swept at once with cumulative sums
    last = len(models) - 2
    for outer in itertools.product(*grids[:last]):
        alive = np.ones(n, bool)
        right = 0
        cost = 0.0
        for i, t in enumerate(outer):
            cost += lats[i] * alive.mean()
            leave = alive & (confs[i] >= t)
            right += int(correct[i][leave].sum())
            alive &= ~leave
        cost += lats[last] * alive.mean()
        idx = np.flatnonzero(alive)
        order = np.argsort(confs[last][idx], kind="stable")
        c = confs[last][idx][order]
        stay = np.concatenate([[0], np.cumsum(correct[-1][idx][order])])  # go on: last model answers
        go = np.concatenate([[0], np.cumsum(correct[last][idx][order][::-1])])[::-1]  # leave here
        ts = grids[last]
        k = np.searchsorted(c, ts, side="left")  # inputs with conf < t continue to the last model
        rights = right + stay[k] + go[k]
        costs = cost + lats[-1] * k / n
        for t, r, co in zip(ts, rights, costs):
            score = objective(r / n, co)
            if best is None or score < best[0]:
                best = (score, (*outer, t))
    if best is None or not np.isfinite(best[0]):
        return None
    chain = Chain(list(models), [float(t) for t in best[1]], probe, combine)
    return evaluate_chain(chain, probs, labels, latency)


def fit_flexible(models: list[str], probs: dict[str, np.ndarray], labels: np.ndarray,
                 latency: dict[str, float], lam: float = 10.0, probe: str = "score_margin",
                 points: int = 24) -> ChainResult:
    """Tann et al.'s objective: minimise L/L_full + λ · relative error increase over the full ensemble."""
    full = Chain(list(models), [np.inf] * (len(models) - 1), probe, True)
    ref = evaluate_chain(full, probs, labels, latency)
    err_full = max(1.0 - ref.accuracy, 1e-9)

    def objective(acc, lat):
        return lat / ref.latency + lam * ((1.0 - acc) - err_full) / err_full

    return grid_search(models, probs, labels, latency, objective, probe, True, points)


def fit_for_accuracy(models: list[str], probs: dict[str, np.ndarray], labels: np.ndarray,
                     latency: dict[str, float], need_correct: int, probe: str = "score_margin",
                     combine: bool = True, points: int = 24) -> ChainResult | None:
    """Cheapest thresholds whose calibration accuracy reaches ``need_correct`` answers (or None)."""
    n = len(labels)

    def objective(acc, lat):
        return lat if acc * n >= need_correct - 1e-6 else np.inf

    return grid_search(models, probs, labels, latency, objective, probe, combine, points)


LAMBDAS = (1.0, 3.0, 10.0, 30.0, 100.0)
MARGINS = (0.0, 0.001, 0.002, 0.003, 0.004)


def _fit_within(order, probs, labels, latency, drop, points):
    full = evaluate_chain(Chain(order, [np.inf] * (len(order) - 1)), probs, labels, latency)
    need = int(np.ceil((full.accuracy - drop) * len(labels) - 1e-9))
    return fit_for_accuracy(order, probs, labels, latency, need, points=points)


def _within_drop(order, probs, labels, latency, max_drop, points, seed=0):
    """Cheapest thresholds whose accuracy drop vs the full ensemble stays within ``max_drop``.

    Fitting exactly to ``max_drop`` on calibration data overshoots on new data, so a safety
    margin is chosen by 2-fold cross-validation inside the calibration half: the smallest
    margin whose out-of-fold drop (pooled over both folds) is within ``max_drop``.
    """
    perm = np.random.default_rng(seed).permutation(len(labels))
    folds = [perm[: len(perm) // 2], perm[len(perm) // 2:]]
    for margin in MARGINS:
        drop_sum = 0.0
        for a, b in ((0, 1), (1, 0)):
            pa = {m: p[folds[a]] for m, p in probs.items()}
            pb = {m: p[folds[b]] for m, p in probs.items()}
            res = _fit_within(order, pa, labels[folds[a]], latency, max_drop - margin, points)
            if res is None:
                break
            full_b = evaluate_chain(Chain(order, [np.inf] * (len(order) - 1)), pb, labels[folds[b]], latency)
            got = evaluate_chain(res.chain, pb, labels[folds[b]], latency)
            drop_sum += (full_b.accuracy - got.accuracy) * len(folds[b])
        else:
            if drop_sum / len(labels) <= max_drop + 1e-12:
                return _fit_within(order, probs, labels, latency, max_drop - margin, points), margin
    return _fit_within(order, probs, labels, latency, max_drop - MARGINS[-1], points), MARGINS[-1]


def run_ensemble_study(pool, lam: float | None = None, max_drop: float = 0.005,
                       progress: bool = True, points: int | None = None, batch: int = 500) -> dict:
    """Flexible ensemble of a pool vs the full ensemble (``sieve ensemble``).

    Models run cheapest first (latency measured here).  For each λ the thresholds minimise
    L/L_full + λ·relative error increase on the calibration half; separately the cheapest
    thresholds whose calibration accuracy stays within ``max_drop`` of the full ensemble.
    All accuracies and latencies reported are on the held-out half.
    """
    from tqdm import tqdm

    from .probes import softmax
    from .sources import measure_latencies, per_image_latency

    names = pool.names
    timings = measure_latencies({m: pool.models[m] for m in names}, pool.test_images, [batch], reps=3)
    per_image = {m: per_image_latency(timings[m]) for m in names}
    order = sorted(names, key=lambda m: per_image[m])
    vp = {m: softmax(pool.val_logits[m]) for m in names}
    tp = {m: softmax(pool.test_logits[m]) for m in names}
    yv, yt = pool.val_labels, pool.test_labels
    if points is None:
        points = {1: 2, 2: 400, 3: 60}.get(len(order) - 1, 16 if len(order) == 4 else 8)
    full = Chain(order, [np.inf] * (len(order) - 1), "score_margin", True)
    full_v = evaluate_chain(full, vp, yv, per_image)
    full_t = evaluate_chain(full, tp, yt, per_image)
    singles = [{"model": m, "latency_s": per_image[m], "test_accuracy": float((tp[m].argmax(1) == yt).mean())}
               for m in order]

    def row(res: ChainResult, label: str) -> dict:
        t = evaluate_chain(res.chain, tp, yt, per_image)
        return {"label": label, **res.chain.to_json(), "cal_accuracy": res.accuracy,
                "test_accuracy": t.accuracy, "test_latency_s": t.latency,
                "latency_fraction": t.latency / full_t.latency, "accuracy_drop": full_t.accuracy - t.accuracy,
                "exit_fractions": t.exit_fractions}

    rows = []
    for lm in tqdm([lam] if lam is not None else list(LAMBDAS), desc="lambda", disable=not progress, leave=False):
        rows.append(row(fit_flexible(order, vp, yv, per_image, lm, points=points), f"λ={lm:g}"))
    best, chosen_margin = _within_drop(order, vp, yv, per_image, max_drop, points)
    if best is not None:
        best = row(best, f"≤{100 * max_drop:g} pt drop (margin {100 * chosen_margin:g} pt by 2-fold CV)")
        rows.append(best)
    return {"dataset": pool.dataset, "order": order, "latency_s": per_image, "singles": singles,
            "full": {"test_accuracy": full_t.accuracy, "test_latency_s": full_t.latency,
                     "cal_accuracy": full_v.accuracy},
            "max_drop": max_drop, "rows": rows, "best_within_drop": best,
            "selection": "cheapest thresholds whose calibration accuracy is within max_drop - margin of the full "
                         "ensemble; the margin is the smallest whose 2-fold cross-validated drop inside the "
                         "calibration half stays within max_drop",
            "calibration_images": int(len(yv)), "test_images": int(len(yt))}
