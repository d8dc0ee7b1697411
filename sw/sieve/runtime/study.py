"""The cascade study behind ``sieve cascade``: pool → pair → policy → measured speed.

Steps, all calibrated on the ``val`` half and reported on the held-out ``test`` half:

1. logits of every pool member (cached) and per-image latency measured on this machine;
2. pair selection (heuristic and exhaustive, :mod:`.pairing`);
3. candidate policies for the chosen pair — single vs per-class threshold, max-softmax vs
   score-margin probe, recovery answering with big alone vs both models combined — plus
   three-stage cascades over the pool; each candidate also in "safety" versions fitted to a
   slightly higher calibration target.  The deployed policy is chosen by 2-fold
   cross-validation *inside* the calibration half (cheapest candidate whose out-of-fold
   accuracy still reaches the reference), then refitted on the whole calibration half;
4. the deployed policy runs for real on the test half (throughput vs the reference model
   alone) and in the offered-load simulation (latency percentiles vs the reference alone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import detector, ensemble, pairing
from .cascade import Policy, measure, offered_load, throughput
from .detector import Thresholds
from .probes import get_probe, softmax
from .sources import PoolData, fit_service_time, measure_latencies, per_image_latency

SLACKS = (0.0, 0.002, 0.004)  # extra calibration accuracy a "safety" candidate must reach
LOADS = (0.3, 0.5, 0.7, 0.9, 1.2, 1.6, 2.0)


@dataclass
class Candidate:
    """A recipe that turns calibration data into a policy."""

    name: str
    fit: Callable[[dict, np.ndarray, int], Policy]  # (probs, labels, need) -> Policy


def pair_candidate(little: str, big: str, probe: str, per_class: bool, combine: bool,
                   slack: float, method: str = "equal_step") -> Candidate:
    def fit(probs, labels, need):
        pl, pb = probs[little], probs[big]
        rec = (pl + pb) / 2 if combine else pb
        extra = int(math.ceil(slack * len(labels)))
        rule = detector.fit(pl, rec, labels, need + extra, 1.0, probe, per_class, method)
        return Policy([little, big], [rule], combine)

    kind = f"per-class/{method}" if per_class else "single"
    return Candidate(f"{little}→{big} {kind} {probe}{' combined' if combine else ''} slack={slack:g}", fit)


def chain_candidate(models: list[str], probe: str, slack: float, latency: dict[str, float],
                    points: int = 48) -> Candidate:
    def fit(probs, labels, need):
        extra = int(math.ceil(slack * len(labels)))
        res = ensemble.fit_for_accuracy(models, probs, labels, latency, need + extra, probe, True, points)
        ts = res.chain.thresholds if res else [np.inf] * (len(models) - 1)
        rules = [Thresholds(probe, np.array([t]), False, "grid", res is not None) for t in ts]
        return Policy(list(models), rules, True)

    return Candidate(f"{'→'.join(models)} 3-stage {probe} combined slack={slack:g}", fit)


def cross_validate(cand: Candidate, probs: dict, labels: np.ndarray, ref: str, target: float,
                   per_image: dict[str, float], seed: int = 0) -> dict:
    """2-fold CV inside the calibration split: out-of-fold accuracy margin and cost."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(labels))
    folds = [perm[: len(perm) // 2], perm[len(perm) // 2:]]
    right = ref_right = 0
    cost = 0.0
    for a, b in ((0, 1), (1, 0)):
        fa, fb = folds[a], folds[b]
        pa = {m: p[fa] for m, p in probs.items()}
        pb = {m: p[fb] for m, p in probs.items()}
        need = int(math.ceil(target * int((pa[ref].argmax(1) == labels[fa]).sum()) - 1e-9))
        pol = cand.fit(pa, labels[fa], need)
        got = measure(pol, pb, labels[fb])
        right += got.accuracy * len(fb)
        ref_right += int((pb[ref].argmax(1) == labels[fb]).sum())
        cost += got.cost(per_image, pol.stages) * len(fb)
    n = len(labels)
    return {"cv_accuracy": right / n, "cv_reference": ref_right / n, "cv_cost": cost / n,
            "cv_ok": right >= target * ref_right - 1e-6}


def run_study(pool: PoolData, target: float = 1.0, batch_size: int = 500, reps: int = 3,
              loads=LOADS, progress: bool = True, measure_speed: bool = True,
              latency_batches=(1, 16, 64), throughput_images: int | None = None) -> dict:
    """Everything ``sieve cascade`` reports, as one JSON-able dict."""
    from tqdm import tqdm

    names = pool.names
    vp = {m: softmax(pool.val_logits[m]) for m in names}
    tp = {m: softmax(pool.test_logits[m]) for m in names}
    yv, yt = pool.val_labels, pool.test_labels

    # 1. measured latency
    sizes = sorted(set(latency_batches) | {batch_size})
    timings = measure_latencies({m: pool.models[m] for m in names}, pool.test_images, sizes, progress=progress)
    per_image = {m: per_image_latency(timings[m]) for m in names}
    table = pairing.model_table(vp, yv, per_image)
    for row in table:
        row["test_accuracy"] = float((tp[row["model"]].argmax(1) == yt).mean())
    ref = max(names, key=lambda m: (int((vp[m].argmax(1) == yv).sum()), -per_image[m]))
    need = pairing.needed(vp, yv, target)

    # 2. pair selection (Dynamic Duo), default rule: per-class max-softmax, big alone on recovery
    heur = pairing.heuristic(vp, yv, per_image, target)
    exh = pairing.exhaustive(vp, yv, per_image, target)
    exh_comb = pairing.exhaustive(vp, yv, per_image, target, combine=True)
    chosen = heur.pair or exh.pair or exh_comb.pair
    cheapest = min(names, key=lambda m: per_image[m])
    out: dict = {"dataset": pool.dataset, "source": pool.source, "pool": names, "target": target,
                 "reference": ref, "calibration_images": int(len(yv)), "test_images": int(len(yt)),
                 "models": table, "timings_s": {m: {str(b): t for b, t in timings[m].items()} for m in names},
                 "pairing": {"heuristic": heur.to_json(), "exhaustive": exh.to_json(),
                             "exhaustive_combined": exh_comb.to_json()}}

    if chosen is None:
        fb = heur.fallback or exh.fallback
        out["fallback"] = {"model": fb, "message": heur.message if heur.pair is None else exh.message,
                           "test_accuracy": float((tp[fb].argmax(1) == yt).mean())}
        out["deployed"] = None
        return out
    # the detector is analysed on the pair the papers study: cheapest model speculating for the reference
    little, big = (cheapest, ref) if cheapest != ref else (chosen.little, chosen.big)

    # 3. detector analysis on that pair (per-class vs single, probes, combining)
    variants = []
    ref_test = float((tp[ref].argmax(1) == yt).mean())
    for probe in ("max_softmax", "score_margin"):
        for combine in (False, True):
            for per_class, method in ((False, "single"), (True, "equal_step"), (True, "greedy")):
                pol = pair_candidate(little, big, probe, per_class, combine, 0.0, method).fit(vp, yv, need)
                rec_v = (vp[little] + vp[big]) / 2 if combine else vp[big]
                rec_t = (tp[little] + tp[big]) / 2 if combine else tp[big]
                cal = detector.evaluate(pol.rules[0], vp[little], rec_v, vp[big], yv)
                test = detector.evaluate(pol.rules[0], tp[little], rec_t, tp[big], yt)
                variants.append({"probe": probe, "combine": combine, "rule": method,
                                 "thresholds": pol.rules[0].to_json(), "calibration": cal.to_json(),
                                 "test": test.to_json(),
                                 "modelled_speedup": per_image[ref] / (per_image[little] + test.recovery_rate * per_image[big])})
    out["detector"] = {"little": little, "big": big, "variants": variants}
    # equal-accuracy comparison on the test half: single-threshold recovery needed to match per-class
    pc = next(v for v in variants if v["probe"] == "max_softmax" and not v["combine"] and v["rule"] == "equal_step")
    conf_t = get_probe("max_softmax")(tp[little])
    curve = detector.accuracy_vs_recovery(conf_t, tp[little].argmax(1) == yt, tp[big].argmax(1) == yt, points=10**6)
    acc_c, rec_c = np.array(curve["accuracy"]), np.array(curve["recovery_rate"])
    hit = np.flatnonzero(acc_c >= pc["test"]["accuracy"] - 1e-12)
    out["detector"]["equal_accuracy"] = {
        "accuracy": pc["test"]["accuracy"], "per_class_recovery": pc["test"]["recovery_rate"],
        "single_recovery_in_sample": float(rec_c[hit[0]]) if len(hit) else None}
    out["figures_data"] = {
        "histograms": detector.distributions(conf_t, tp[little].argmax(1) == yt, tp[big].argmax(1) == yt),
        "accuracy_vs_recovery": {
            "big": detector.accuracy_vs_recovery(conf_t, tp[little].argmax(1) == yt, tp[big].argmax(1) == yt),
            "combined": detector.accuracy_vs_recovery(
                conf_t, tp[little].argmax(1) == yt, ((tp[little] + tp[big]) / 2).argmax(1) == yt)},
        "per_class": _per_class(pc, tp[little], yt, pool.classes)}

    # 4. candidates, chosen by cross-validation inside the calibration half
    cands = []
    by_cost = sorted(names, key=lambda m: per_image[m])
    for slack in SLACKS:
        for i, lo in enumerate(by_cost):
            for hi in by_cost[i + 1:]:
                for probe in ("max_softmax", "score_margin"):
                    for combine in (False, True):
                        for per_class in (False, True):
                            cands.append(pair_candidate(lo, hi, probe, per_class, combine, slack))
        for mid in by_cost[1:]:
            if per_image[mid] < per_image[ref]:
                cands.append(chain_candidate([cheapest, mid, ref], "score_margin", slack, per_image))
    scored = []
    for c in tqdm(cands, desc="candidates", disable=not progress, leave=False):
        cv = cross_validate(c, vp, yv, ref, target, per_image)
        pol = c.fit(vp, yv, need)
        got = measure(pol, tp, yt)
        scored.append({"name": c.name, **cv, "policy": pol.to_json(),
                       "test_accuracy": got.accuracy, "test_reach": got.reach,
                       "test_cost": got.cost(per_image, pol.stages),
                       "modelled_speedup": per_image[ref] / got.cost(per_image, pol.stages), "_pol": pol})
    ok = [s for s in scored if s["cv_ok"]]
    pick = min(ok, key=lambda s: s["cv_cost"]) if ok else max(scored, key=lambda s: s["cv_accuracy"] - s["cv_reference"])
    policy: Policy = pick["_pol"]
    for s in scored:
        s.pop("_pol")
    out["candidates"] = scored
    got = measure(policy, tp, yt)
    out["deployed"] = {"name": pick["name"], "policy": policy.to_json(), "chosen_by": "2-fold CV on calibration",
                       "test_accuracy": got.accuracy, "reference_test_accuracy": ref_test,
                       "relative_accuracy": got.accuracy / ref_test, "test_reach": got.reach,
                       "modelled_speedup": per_image[ref] / got.cost(per_image, policy.stages)}

    # 5. real throughput and offered load
    if measure_speed:
        k = len(yt) if throughput_images is None else min(throughput_images, len(yt))
        tput = throughput(policy, ref, pool.models, pool.test_images[:k], yt[:k], batch_size, reps, progress)
        out["throughput"] = tput
        svc = {m: fit_service_time({b: t for b, t in timings[m].items() if b <= 64}) for m in names}
        _, ex = _exits(policy, tp)
        out["load"] = {"method": "single-process discrete-event simulation, Poisson arrivals, greedy "
                                 "dynamic batching (max 64), service times fitted (fixed + per-image) to per-batch CPU-time latencies "
                                 "of each model measured here at batch 1, 16 and 64",
                       "service_s": {m: {"fixed": f, "per_image": p} for m, (f, p) in svc.items()},
                       "rows": offered_load(ex, [svc[m] for m in policy.stages], svc[ref], list(loads))}
    return out


def _exits(policy: Policy, probs: dict) -> tuple[np.ndarray, np.ndarray]:
    from .cascade import simulate

    return simulate(policy, probs)


def _per_class(variant: dict, little_probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    vals = variant["thresholds"]["values"]
    conf = little_probs.max(1)
    pred = little_probs.argmax(1)
    rates = []
    for c in range(len(classes)):
        sel = pred == c
        t = np.inf if vals[c] is None else vals[c]
        rates.append(float((conf[sel] < t).mean()) if sel.any() else 0.0)
    return {"classes": classes, "thresholds": vals, "recovery_rate": rates}
