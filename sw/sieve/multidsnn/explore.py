"""Design-space exploration of a 2-way multi-dsNN (dissertation §3.4, Fig. 3.6).

For every tail fraction of the threshold queue:

1. the monolith's per-input errors on the *training* split give the threshold and the ideal
   main/tail partition;
2. the selector tree is fitted on the training features; its depth is swept and the depth
   whose routing best matches the ideal partition of the *validation* split (balanced
   accuracy) is kept;
3. the training split is partitioned by that selector, not ideally, so each dsNN also learns
   the inputs the selector will send it by mistake (§3.4.2), and every topology of the grid is
   trained on each part (the tail may also reuse the monolith's own head, unchanged);
4. every (main, tail) pair is a design point, evaluated on the validation split: accuracy,
   gains/losses against the monolith, and expected cost with the validation routing shares.

The Pareto frontier is taken on validation (accuracy vs energy per input).  The chosen point
is the cheapest whose validation accuracy meets ``target`` (optionally with the search's
generalization margin ``margin_z``, :func:`~sieve.stats.margin_passes`); only that
point is then run on the held-out test split, with the paired statistical verdict, the
selector's misclassification rate and measured latency.  The margin is off by default: retrained
dsNNs disagree with the monolith on 3-4 % of the inputs, so z = 1 asks a net gain of about 13 of
lenet5's 5,000 validation images, which no design showed (the best: +13 net over 173 flips); the held-out
McNemar verdict is what judges the chosen point.  The grid is exhaustive (a few dozen trainings per benchmark)
instead of the dissertation's hill-climbing heuristic (§3.5.7), which exists to cut thousands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from . import cost, dsnn, latency, selector
from .benchmarks import CLASSES, Benchmark
from .partition import confidence_error, partition, thresholds_for_fractions
from .pareto import cheapest_passing, pareto_front
from ..stats import margin_passes, paired_verdict

MONOLITH_TAIL = "monolith"


@dataclass
class Settings:
    """What the exploration sweeps and how it chooses (every default is stated in the report)."""

    tail_fractions: tuple[float, ...] = (0.1, 0.2, 0.3)
    depths: tuple[int, ...] = (2, 4, 6, 8, 10)
    target: float = 1.0
    margin_z: float = 0.0      # plain target on validation; see the module docstring
    alpha: float = 0.05
    selector_rows: int = selector.MAX_ROWS
    reuse_monolith_tail: bool = True
    latency_inputs: int = 200
    seed: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Artefacts:
    """What the plots need beyond the JSON: raw errors and the chosen tree."""

    train_errors: np.ndarray
    thresholds: list[float]
    chosen_tree: object | None = None
    chosen_depth: int | None = None
    feature_count: int = 0


def _predict(net: torch.nn.Module, feats: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return net(feats).argmax(1).numpy()


def _name(nfeat: int, hidden) -> str:
    return MONOLITH_TAIL if hidden == MONOLITH_TAIL else dsnn.topology_name(nfeat, hidden, CLASSES)


def explore(bench: Benchmark, settings: Settings | None = None, progress: bool = True) -> tuple[dict, Artefacts]:
    """Run the exploration of ``bench``; returns the JSON-able result and the plot artefacts."""
    s = settings or Settings()
    energy = cost.EnergyModel()
    nfeat = bench.feature_count()
    f_tr, f_va, f_te = (bench.features(split.images) for split in (bench.train, bench.val, bench.test))
    y_tr, y_va, y_te = (split.labels.numpy() for split in (bench.train, bench.val, bench.test))
    np_tr, np_va, np_te = (f.numpy() for f in (f_tr, f_va, f_te))
    with torch.no_grad():
        logits_tr = bench.head(f_tr)
    err_tr = confidence_error(logits_tr)
    with torch.no_grad():
        err_va, err_te = confidence_error(bench.head(f_va)), confidence_error(bench.head(f_te))
    mono_tr = logits_tr.argmax(1).numpy() == y_tr
    mono_va = _predict(bench.head, f_va) == y_va
    mono_te = _predict(bench.head, f_te) == y_te
    thresholds = thresholds_for_fractions(err_tr, s.tail_fractions)

    pre_cost = cost.net_cost(bench.preprocessor, bench.input_shape) if bench.preprocessor is not None \
        else cost.NetCost(0, 0)
    head_cost = cost.net_cost(bench.head, (nfeat,))
    mono_cost = cost.monolith_cost(pre_cost, head_cost, energy)
    head_macs = head_cost.macs
    main_grid = [h for h in bench.grid if cost.module_macs(dsnn.build_mlp(nfeat, h, CLASSES), (nfeat,)) < head_macs]
    tail_grid = list(bench.grid)

    total = len(thresholds) * (len(main_grid) + len(tail_grid))
    bar = tqdm(total=total, desc=f"multidsnn {bench.name}: dsNN trainings", unit="net", disable=not progress)
    points: list[dict] = []
    partitions: list[dict] = []
    nets: dict[tuple, torch.nn.Module] = {}
    routers: dict[float, selector.Router] = {}
    for frac, thr in zip(s.tail_fractions, thresholds):
        ideal_tr, ideal_va = partition(err_tr, thr), partition(err_va, thr)
        tree = selector.fit_tree(np_tr, ideal_tr, max(s.depths), s.seed, s.selector_rows)
        sweep = []
        for depth in s.depths:
            route_va, _ = selector.Router(tree, depth).route(np_va)
            sweep.append({"depth": depth, "val_balanced_accuracy": selector.balanced_accuracy(route_va, ideal_va),
                          "val_routing_error": selector.routing_error(route_va, ideal_va),
                          "val_tail_share": float(route_va.mean())})
        best = max(sweep, key=lambda r: (round(r["val_balanced_accuracy"], 6), -r["depth"]))
        router = selector.Router(tree, best["depth"])
        routers[frac] = router
        route_tr, _ = router.route(np_tr)
        route_va, cmp_va = router.route(np_va)
        if route_tr.all() or not route_tr.any():
            bar.update(len(main_grid) + len(tail_grid))
            partitions.append({"tail_fraction": frac, "threshold": thr, "skipped": "selector sends every training input one way"})
            continue
        part = {"tail_fraction": frac, "threshold": thr, "depth_sweep": sweep, "depth": best["depth"],
                "tree_nodes": router.nodes(), "train_ideal_tail_share": float(ideal_tr.mean()),
                "train_routed_tail_share": float(route_tr.mean()),
                "train_routed_monolith_accuracy": {"main": float(mono_tr[~route_tr].mean()),
                                                   "tail": float(mono_tr[route_tr].mean())},
                "val_routed_tail_share": float(route_va.mean()), "val_mean_compares": float(cmp_va.mean())}
        partitions.append(part)
        preds_va: dict[tuple, np.ndarray] = {}
        for role, grid, mask in (("main", main_grid, ~route_tr), ("tail", tail_grid, route_tr)):
            for hidden in grid:
                bar.set_postfix_str(f"tail {frac:g} {role} {_name(nfeat, hidden)}")
                net = dsnn.train_mlp(f"dsnn-{bench.name}-{role}", f_tr[torch.from_numpy(mask)],
                                     bench.train.labels[torch.from_numpy(mask)], hidden, CLASSES)
                nets[(frac, role, hidden)] = net
                preds_va[(role, hidden)] = _predict(net, f_va)
                bar.update()
        if s.reuse_monolith_tail:
            nets[(frac, "tail", MONOLITH_TAIL)] = bench.head
            preds_va[("tail", MONOLITH_TAIL)] = _predict(bench.head, f_va)
        tails = tail_grid + ([MONOLITH_TAIL] if s.reuse_monolith_tail else [])
        tail_share, compares = float(route_va.mean()), float(cmp_va.mean())
        node_bytes = compares * selector.NODE_BYTES + selector.NODE_BYTES   # the leaf is read too
        for m in main_grid:
            main_ok = preds_va[("main", m)] == y_va
            for t in tails:
                tail_ok = preds_va[("tail", t)] == y_va
                ok = np.where(route_va, tail_ok, main_ok)
                main_c = cost.net_cost(nets[(frac, "main", m)], (nfeat,))
                tail_c = cost.net_cost(nets[(frac, "tail", t)], (nfeat,))
                c = cost.system_cost(pre_cost, main_c, tail_c, tail_share, compares, node_bytes,
                                     router.nodes() * selector.NODE_BYTES, energy)
                gains, losses = int((ok & ~mono_va).sum()), int((mono_va & ~ok).sum())
                points.append({"tail_fraction": frac, "threshold": thr, "depth": router.depth,
                               "main": _name(nfeat, m), "tail": _name(nfeat, t),
                               "main_hidden": list(m), "tail_hidden": t if t == MONOLITH_TAIL else list(t),
                               "val_accuracy": float(ok.mean()), "val_normalised": float(ok.mean() / mono_va.mean()),
                               "val_gains": gains, "val_losses": losses,
                               "val_misclassification": selector.misclassification_rate(route_va, main_ok, tail_ok),
                               **{f"val_{k}": v for k, v in c.items()}})
    bar.close()

    mono_correct_va = int(mono_va.sum())
    front = pareto_front(points, "val_energy_total_pj", "val_accuracy")
    for p in points:
        p["passes_target"] = margin_passes(p["val_gains"], p["val_losses"], mono_correct_va, s.target, s.margin_z)
        p["pareto"] = any(p is q for q in front)
    chosen = cheapest_passing(points, "val_energy_total_pj", lambda p: p["passes_target"], tie_break="val_accuracy")
    result = {
        "benchmark": bench.name, "dataset": bench.dataset, "description": bench.description, "notes": bench.notes,
        "settings": s.to_json(), "energy_model": energy.to_json(),
        "training": {"batch_size": dsnn.BATCH, "target_steps": dsnn.TARGET_STEPS,
                     "epochs_bounds": [dsnn.MIN_EPOCHS, dsnn.MAX_EPOCHS], "recipe": dsnn.RECIPE,
                     "trainings": total},
        "splits": {"train": len(y_tr), "val": len(y_va), "test": len(y_te)},
        "features": nfeat,
        "monolith": {"replaced_part": dsnn.topology_name(nfeat, bench.head_hidden, CLASSES),
                     "train_accuracy": float(mono_tr.mean()), "val_accuracy": float(mono_va.mean()),
                     "test_accuracy": float(mono_te.mean()), "cost": mono_cost,
                     "preprocessor": {"macs": pre_cost.macs, "bytes": pre_cost.bytes}},
        "error_distribution": {"train_quantiles": {str(q): float(np.quantile(err_tr, q))
                                                   for q in (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)}},
        "partitions": partitions, "points": points,
        "pareto": [{k: p[k] for k in ("tail_fraction", "main", "tail", "val_accuracy", "val_energy_total_pj",
                                      "val_macs_replaced")} for p in front],
        "chosen": None,
    }
    art = Artefacts(err_tr, thresholds, feature_count=nfeat)
    if chosen is None:
        margin = f" with the margin z = {s.margin_z:g}" if s.margin_z else ""
        result["no_choice"] = (f"no design point reaches {100 * s.target:.1f} % of the monolith's validation accuracy"
                               f"{margin}; the most accurate is reported instead")
        chosen = max(points, key=lambda p: (p["val_accuracy"], -p["val_energy_total_pj"])) if points else None
    if chosen is not None:
        result["chosen"] = _held_out(bench, s, chosen, nets, routers, pre_cost, energy, mono_cost,
                                     f_te, np_te, y_te, mono_te, partition(err_te, chosen["threshold"]))
        art.chosen_tree, art.chosen_depth = routers[chosen["tail_fraction"]].tree, chosen["depth"]
    return result, art


def _lookup(nets: dict, frac: float, role: str, hidden) -> torch.nn.Module:
    key = hidden if hidden == MONOLITH_TAIL else tuple(hidden)
    return nets[(frac, role, key)]


def _held_out(bench: Benchmark, s: Settings, chosen: dict, nets: dict, routers: dict, pre_cost, energy,
              mono_cost: dict, f_te: torch.Tensor, np_te: np.ndarray, y_te: np.ndarray, mono_te: np.ndarray,
              ideal_partition_test: np.ndarray) -> dict:
    """The chosen point on the held-out test split: verdict, costs, selector quality, latency."""
    frac = chosen["tail_fraction"]
    router = routers[frac]
    main = _lookup(nets, frac, "main", chosen["main_hidden"])
    tail = _lookup(nets, frac, "tail", chosen["tail_hidden"])
    route_te, cmp_te = router.route(np_te)
    main_ok, tail_ok = _predict(main, f_te) == y_te, _predict(tail, f_te) == y_te
    ok = np.where(route_te, tail_ok, main_ok)
    nfeat = f_te.shape[1]
    compares = float(cmp_te.mean())
    c = cost.system_cost(pre_cost, cost.net_cost(main, (nfeat,)), cost.net_cost(tail, (nfeat,)),
                         float(route_te.mean()), compares, (compares + 1) * selector.NODE_BYTES,
                         router.nodes() * selector.NODE_BYTES, energy)
    reduction = {k: (mono_cost[k] / c[k] if c[k] else float("inf"))
                 for k in ("macs_replaced", "macs_total", "bytes_replaced", "bytes_total",
                           "energy_replaced_pj", "energy_total_pj")}
    system = latency.MultiDsnn(bench.preprocessor, router, main, tail).eval()
    preds = np.where(route_te, _predict(tail, f_te), _predict(main, f_te))
    same = latency.check_same_predictions(system, bench.test.images, preds)
    timing = latency.measure(bench.preprocessor, bench.head, system, bench.test.images, s.latency_inputs)
    return {**{k: chosen[k] for k in chosen}, "test": paired_verdict(mono_te, ok, s.target, s.alpha),
            "test_cost": c, "reduction_vs_monolith": reduction,
            "selector": {"depth": router.depth, "nodes": router.nodes(), "mean_compares": compares,
                         "test_tail_share": float(route_te.mean()),
                         "test_misclassification": selector.misclassification_rate(route_te, main_ok, tail_ok),
                         "test_routing_error": selector.routing_error(route_te, ideal_partition_test),
                         "test_balanced_accuracy": selector.balanced_accuracy(route_te, ideal_partition_test)},
            "latency": timing, "batch1_predictions_match": same}
