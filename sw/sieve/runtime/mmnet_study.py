"""The study behind ``sieve mmnet``: Minions, pairs, placement, held-out verdicts.

Calibrated on the ``val`` half, reported on the held-out ``test`` half, for every Master and
every network of the selector (3G, LTE, WiFi):

0. the calibration half is split in two: thresholds and pairs are fitted on one (*fit*, with
   the margin ``z``), the chosen policy must also reach the target on the other (*check*,
   with the margin ``check_z``, default 0), else the next cheapest is checked;
1. per-input latency of every model measured here at batch 1 (a phone answers one camera
   frame at a time), the Master placed on device or cloud (:func:`.mmnet.place_master`);
2. the Minion pair by exhaustive search (when the pairs are few enough) and by the heuristic,
   and their agreement; the best single-Minion cascade (Dynamic Duo) for comparison; both
   held to the search's generalization margin (``z`` standard errors, :func:`.mmnet.keeps_margin`);
3. on held-out data: accuracy against the Master alone as a paired comparison (gains, losses,
   exact one-sided McNemar p; the target *holds* unless significantly below), latency and
   energy per input split into Minion 1 / Minion 2 / Master / transfer, against mobile-only
   (Master on the device) and cloud-only (Master in the cloud).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from .. import stats
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
            "verdict": held_out_verdict(master_ok, final == yt, target)}


def held_out_verdict(master_ok: np.ndarray, ok: np.ndarray, target: float) -> dict:
    """:func:`sieve.stats.verdict` (gains, losses, exact one-sided McNemar, holds at 5 %)
    plus both accuracies."""
    v = stats.verdict(stats.compare(master_ok, ok), target)
    return {**v, "accuracy": v["correct"] / v["images"], "reference_accuracy": v["reference_correct"] / v["images"]}


def run_mmnet(val_logits: dict, test_logits: dict, val_labels: np.ndarray, test_labels: np.ndarray,
              models: dict, test_images, masters: list[str], candidates: dict[str, list[str]],
              target: float = 1.0, dev: Device = Device(), networks=("LTE", "WiFi", "3G"),
              max_pairs: int = MAX_EXHAUSTIVE_PAIRS, points: int = 8, progress: bool = True, z: float = 0.0,
              per_image: dict[str, float] | None = None, dataset: str = "", seed: int = 0,
              check_z: float = 0.0) -> dict:
    """Everything ``sieve mmnet`` reports, as one JSON-able dict (see module docstring)."""
    from tqdm import tqdm

    names = sorted(set(masters) | {c for cs in candidates.values() for c in cs})
    if per_image is None:
        timings = measure_latencies({m: models[m] for m in names}, test_images, [1], reps=7, progress=progress)
        per_image = {m: per_image_latency(timings[m]) for m in names}
    vp = {m: softmax(val_logits[m]) for m in names}
    tp = {m: softmax(test_logits[m]) for m in names}
    yv, yt = val_labels, test_labels
    # fit on one half of the calibration split, check the chosen policy on the other: choosing
    # the cheapest of hundreds of fitted policies on the data they were fitted on picks the
    # luckiest, which then falls short on held-out data (seen here before this check)
    perm = np.random.default_rng(seed).permutation(len(yv))
    fit_idx, check_idx = np.sort(perm[: len(yv) // 2]), np.sort(perm[len(yv) // 2:])
    fp, yf = {m: p[fit_idx] for m, p in vp.items()}, yv[fit_idx]
    cp, yc = {m: p[check_idx] for m, p in vp.items()}, yv[check_idx]
    input_bytes = int(np.prod(tuple(test_images.shape[1:])))  # one byte per pixel and channel
    rows, memo = [], {}
    jobs = [(m, n) for m in masters for n in networks]
    for master, net_name in tqdm(jobs, desc="M&MNet (master × network)", total=len(jobs), disable=not progress):
        net = NETWORKS[net_name]
        mc = mmnet.place_master(net, dev, input_bytes, per_image[master])
        lat_dev = {m: mmnet.device_cost(dev, per_image[m])[0] for m in names}
        energy_dev = {m: mmnet.device_cost(dev, per_image[m])[1] for m in names}
        lat_sel = {**lat_dev, master: mc.seconds}
        need = mmnet.needed(fp, master, yf, target)
        key = (master, mc.where, round(mc.seconds, 12))
        if key not in memo:
            cands = candidates[master]
            check = _checker(cp, yc, master, target, check_z)
            heur = mmnet.select_heuristic(master, cands, fp, yf, need, lat_sel, points, z=z, check=check)
            elig = mmnet._eligible(cands, master, lat_sel)
            n_pairs = sum(1 for a in elig for b in elig if a != b and lat_sel[a] + lat_sel[b] < lat_sel[master])
            exh = (mmnet.select_exhaustive(master, cands, fp, yf, need, lat_sel, points, progress, z, check)
                   if n_pairs <= max_pairs else None)
            single = mmnet.single_minion(master, cands, fp, yf, need, lat_sel, z, check)
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
               "fit_master_correct": int((fp[master].argmax(1) == yf).sum()),
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
    return {"dataset": dataset, "target": target, "margin_z": z, "check_z": check_z, "masters": masters, "candidates": candidates,
            "latency_s": per_image, "device": asdict(dev), "input_bytes": input_bytes,
            "networks": {n: asdict(NETWORKS[n]) for n in networks},
            "calibration_images": int(len(yv)), "fit_images": int(len(yf)), "check_images": int(len(yc)),
            "test_images": int(len(yt)),
            "calibration_accuracy": {m: float((vp[m].argmax(1) == yv).mean()) for m in names},
            "test_accuracy": {m: float((tp[m].argmax(1) == yt).mean()) for m in names},
            "rows": rows, "lookup": lookup_table(rows)}


def _checker(probs: dict, labels: np.ndarray, master: str, target: float, z: float):
    """A policy passes when it keeps the margin against the Master on the check half."""
    master_ok = probs[master].argmax(1) == labels
    need = mmnet.needed(probs, master, labels, target)
    return lambda policy: mmnet.keeps_margin(simulate(policy, probs)[0] == labels, master_ok, need, z)


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


def run_pool_study(members, masters: list[str] | None = None, grid: str = "default", epochs: int | None = None,
                   data: str | None = None, val: int | None = None, test: int | None = None,
                   cache: str = "build/cache/logits", target: float = 1.0, networks=("LTE", "WiFi"),
                   max_pairs: int = MAX_EXHAUSTIVE_PAIRS, check_z: float = 0.0, progress: bool = True) -> dict:
    """:func:`run_mmnet` on a pool: a Fashion-MNIST pool gets its Minions generated (grid
    ``default`` or ``full``, trained and cached), any other pool uses its other members as
    Minion candidates of its most accurate member (or of ``masters``)."""
    import torch

    from ..errors import SieveError
    from . import minions
    from .sources import _logits, load_pool

    tags = [m.tag for m in members]
    if masters is not None:
        unknown = [m for m in masters if m not in tags]
        if unknown:
            raise SieveError(f"--masters {','.join(unknown)} not in the pool {','.join(tags)}; name pool members")
    generated = all(m.variant is None and m.model in minions.FASHION_BASES for m in members)
    torch.set_num_threads(1)
    pool = load_pool(members, data, val, test, cache, 1, progress)
    val_logits, test_logits, models = dict(pool.val_logits), dict(pool.test_logits), dict(pool.models)
    infos, minion_tags = [], []
    epochs = epochs or minions.DEFAULT_EPOCHS
    if generated:
        if grid == "full":
            points = minions.grid(tags, minions.ALPHAS, minions.RHOS)
        else:
            points = minions.grid([b for b in minions.DEFAULT_BASES if b in tags] or tags[:1])
        points = [p for p in points if minions.minion_tag(*p) not in tags]
        gen, infos, ds = minions.train_minions(points, epochs, data, progress)
        nv, nt = len(pool.val_labels), len(pool.test_labels)
        if (not torch.equal(ds.val.labels[:nv], torch.from_numpy(pool.val_labels))
                or not torch.equal(ds.test.labels[:nt], torch.from_numpy(pool.test_labels))):
            raise SieveError("the Minions' data differs from the pool's; give both the same --data")
        for tag, model in gen.items():
            val_logits[tag] = _logits(model, ds.val.images[:nv], 500)
            test_logits[tag] = _logits(model, ds.test.images[:nt], 500)
            models[tag] = model
        masters = masters or tags
        minion_tags = list(gen)
    elif masters is None:
        masters = [max(tags, key=lambda t: int((pool.val_logits[t].argmax(1) == pool.val_labels).sum()))]
    candidates = {m: [t for t in minion_tags + tags if t != m] for m in masters}
    result = run_mmnet(val_logits, test_logits, pool.val_labels, pool.test_labels, models, pool.test_images,
                       masters, candidates, target, networks=networks, max_pairs=max_pairs,
                       check_z=check_z, progress=progress, dataset=pool.dataset)
    result.update(minions=[i.to_json() for i in infos], minion_epochs=epochs if generated else None,
                  grid=grid if generated else None)
    return result
