"""The study behind ``sieve mmnet``: Minions, pairs, placement, held-out verdicts.

Calibrated on the ``val`` half, reported on the held-out ``test`` half, for every Master and
every network of the selector (3G, LTE, WiFi):

1. per-input latency of every model measured here at batch 1 (a phone answers one camera
   frame at a time), the Master placed on device or cloud (:func:`.mmnet.place_master`);
2. the Minion pair by exhaustive search (when the pairs are few enough) and by the heuristic,
   and their agreement; the best single-Minion cascade (Dynamic Duo) for comparison;
3. on held-out data: accuracy against the Master alone as a paired comparison (gains, losses,
   exact one-sided McNemar p; the target *holds* unless significantly below), latency and
   energy per input split into Minion 1 / Minion 2 / Master / transfer, against mobile-only
   (Master on the device) and cloud-only (Master in the cloud).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from ..multidsnn.verdict import paired_verdict
from . import mmnet
from .cascade import Policy, simulate
from .probes import softmax
from .selector import NETWORKS, Device
from .sources import measure_latencies, per_image_latency

MAX_EXHAUSTIVE_PAIRS = 400


def _breakdown(parts: dict[str, float]) -> dict:
    return {**parts, "total": float(sum(parts.values()))}


def _evaluate(policy: Policy | None, tp: dict, yt: np.ndarray, master: str, lat_dev: dict,
              energy_dev: dict, mc: mmnet.MasterCost, master_ok: np.ndarray, target: float) -> dict:
    """Held-out accuracy verdict and per-input latency/energy breakdown of a policy
    (``None``: the Master alone where it is placed)."""
    if policy is None:
        final, reach = tp[master].argmax(1), [1.0]
        stages = [master]
    else:
        final, exit_stage = simulate(policy, tp)
        stages = policy.stages
        reach = [float((exit_stage >= i).mean()) for i in range(len(stages))]
    names = ["minion1", "minion2"][:len(stages) - 1]
    lat = {n: reach[i] * lat_dev[m] for i, (n, m) in enumerate(zip(names, stages))}
    eng = {n: reach[i] * energy_dev[m] for i, (n, m) in enumerate(zip(names, stages))}
    lat.update(master=reach[-1] * mc.compute_s, transfer=reach[-1] * mc.transfer_s)
    eng.update(master=reach[-1] * mc.compute_j, transfer=reach[-1] * mc.transfer_j)
    return {"stages": stages, "reach": reach, "latency_s": _breakdown(lat), "energy_j": _breakdown(eng),
            "verdict": paired_verdict(master_ok, final == yt, target)}


def run_mmnet(val_logits: dict, test_logits: dict, val_labels: np.ndarray, test_labels: np.ndarray,
              models: dict, test_images, masters: list[str], candidates: dict[str, list[str]],
              target: float = 1.0, dev: Device = Device(), networks=("LTE", "WiFi", "3G"),
              max_pairs: int = MAX_EXHAUSTIVE_PAIRS, points: int = 8, progress: bool = True,
              per_image: dict[str, float] | None = None, dataset: str = "") -> dict:
    """Everything ``sieve mmnet`` reports, as one JSON-able dict (see module docstring)."""
    from tqdm import tqdm

    names = sorted(set(masters) | {c for cs in candidates.values() for c in cs})
    if per_image is None:
        timings = measure_latencies({m: models[m] for m in names}, test_images, [1], reps=7, progress=progress)
        per_image = {m: per_image_latency(timings[m]) for m in names}
    vp = {m: softmax(val_logits[m]) for m in names}
    tp = {m: softmax(test_logits[m]) for m in names}
    yv, yt = val_labels, test_labels
    input_bytes = int(np.prod(tuple(test_images.shape[1:])))  # one byte per pixel and channel
    rows, memo = [], {}
    jobs = [(m, n) for m in masters for n in networks]
    for master, net_name in tqdm(jobs, desc="M&MNet (master × network)", total=len(jobs), disable=not progress):
        net = NETWORKS[net_name]
        mc = mmnet.place_master(net, dev, input_bytes, per_image[master])
        lat_dev = {m: mmnet.device_cost(dev, per_image[m])[0] for m in names}
        energy_dev = {m: mmnet.device_cost(dev, per_image[m])[1] for m in names}
        lat_sel = {**lat_dev, master: mc.seconds}
        need = mmnet.needed(vp, master, yv, target)
        key = (master, mc.where, round(mc.seconds, 12))
        if key not in memo:
            cands = candidates[master]
            heur = mmnet.select_heuristic(master, cands, vp, yv, need, lat_sel, points)
            elig = mmnet._eligible(cands, master, lat_sel)
            n_pairs = sum(1 for a in elig for b in elig if a != b and lat_sel[a] + lat_sel[b] < lat_sel[master])
            exh = (mmnet.select_exhaustive(master, cands, vp, yv, need, lat_sel, points, progress)
                   if n_pairs <= max_pairs else None)
            single = mmnet.single_minion(master, cands, vp, yv, need, lat_sel)
            memo[key] = (heur, exh, single)
        heur, exh, single = memo[key]
        chosen = [s.best for s in (exh, heur) if s is not None and s.best is not None]
        deployed = min(chosen, key=lambda f: f.cost_s) if chosen else None
        master_ok = tp[master].argmax(1) == yt
        ev = lambda pol, where=None: _evaluate(  # noqa: E731 - a local shorthand
            pol, tp, yt, master, lat_dev, energy_dev,
            mc if where is None else mmnet.place_master(net, dev, input_bytes, per_image[master], where),
            master_ok, target)
        row = {"master": master, "network": net_name, "placement": mc.to_json(), "need": need,
               "calibration_master_correct": int((vp[master].argmax(1) == yv).sum()),
               "heuristic": heur.to_json(),
               "exhaustive": exh.to_json() if exh is not None else None,
               "exhaustive_skipped": None if exh is not None else f"more than {max_pairs} pairs; heuristic only",
               "agreement": _agreement(heur, exh),
               "deployed": deployed.to_json() if deployed else None,
               "mobile_only": ev(None, "device"), "cloud_only": ev(None, "cloud"),
               "mmnet": ev(deployed.policy if deployed else None),
               "single_minion": None}
        if single is not None:
            row["single_minion"] = {"minion": single.little, "rule": single.rule.to_json(),
                                    "calibration_cost_s": single.cost,
                                    **ev(Policy([single.little, master], [single.rule]))}
        rows.append(row)
    return {"dataset": dataset, "target": target, "masters": masters, "candidates": candidates,
            "latency_s": per_image, "device": asdict(dev), "input_bytes": input_bytes,
            "networks": {n: asdict(NETWORKS[n]) for n in networks},
            "calibration_images": int(len(yv)), "test_images": int(len(yt)),
            "calibration_accuracy": {m: float((vp[m].argmax(1) == yv).mean()) for m in names},
            "test_accuracy": {m: float((tp[m].argmax(1) == yt).mean()) for m in names},
            "rows": rows, "lookup": lookup_table(rows)}


def _agreement(heur: mmnet.PairSelection, exh: mmnet.PairSelection | None) -> dict | None:
    if exh is None:
        return None
    h, e = heur.best, exh.best
    same = (h is None and e is None) or (h is not None and e is not None
                                         and (h.minion1, h.minion2) == (e.minion1, e.minion2))
    ratio = (h.cost_s / e.cost_s) if (h is not None and e is not None and e.cost_s > 0) else None
    return {"same_pair": bool(same), "heuristic_cost_over_exhaustive": ratio,
            "pairs_heuristic": heur.tried, "pairs_exhaustive": exh.tried}


def lookup_table(rows: list[dict]) -> dict[str, list[dict]]:
    """Table 5.4 per network: Master → Minion 1, Minion 2, placement."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        d = r["deployed"]
        out.setdefault(r["network"], []).append(
            {"master": r["master"], "minion1": d["minion1"] if d else None,
             "minion2": d["minion2"] if d else None, "placement": r["placement"]["where"]})
    return out
