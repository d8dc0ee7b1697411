"""Pruning and custom-float formats together: bits per *original* weight of a pruned network
whose weights and activations the search also compressed, against the search alone.

For one network and seed of a study, ``sieve search`` runs on the dense network and on its
pruned version (same validation split); the pruned plan's memory counts only the kept weights
plus the cheaper index per tensor (:mod:`sieve.sparse_storage`).  Each searched plan is then judged on the
held-out test split against the *dense fp32* network with the exact one-sided McNemar test
(:func:`sieve.stats.paired_verdict`), so "≥ 100 % of dense" is a held-out claim.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..stats import paired_verdict
from ..qeval import apply_plan, quantizable_tensors
from ..search.formats import plan_bits
from .masks import prunable_layers
from ..sparse_storage import cheapest, with_sparse_layouts

VARIANTS = ("accurate", "approximate")


def _correct(model: torch.nn.Module, split) -> np.ndarray:
    from ..zoo import evaluate

    _, logits = evaluate(model, split)
    return (logits.argmax(dim=1) == split.labels).numpy()


def _encodings(model: torch.nn.Module, plan: dict, input_shape) -> list[dict]:
    infos = with_sparse_layouts(model, quantizable_tensors(model, input_shape))
    rows = []
    for info in infos:
        if info.kind != "weight":
            continue
        fmt = plan.get(info.name)
        width = fmt.width if fmt is not None else 32
        name, bits = cheapest(getattr(info, "sparse", None), info.elements, width)
        rows.append({"tensor": info.name, "elements": info.elements, "format": str(fmt) if fmt else "fp32",
                     "kept": getattr(info, "sparse", None).nonzero if getattr(info, "sparse", None) else info.elements,
                     "encoding": name, "bits": bits, "bits_per_original_weight": bits / info.elements})
    return rows


def _row(label: str, model, plan: dict, dataset, dense_correct: np.ndarray) -> dict:
    shape = tuple(dataset.test.images.shape[1:])
    infos = with_sparse_layouts(model, quantizable_tensors(model, shape))
    bits = plan_bits(plan, infos)
    q = apply_plan(model, plan, shape) if plan else model
    verdict = paired_verdict(dense_correct, _correct(q, dataset.test))
    return {"configuration": label, "bits_per_original_weight": bits["mean_bits_weights"],
            "mean_bits": bits["mean_bits"], "test_accuracy": verdict["accuracy"],
            "normalised_to_dense": verdict["normalised_accuracy"], "gains": verdict["gains"],
            "losses": verdict["losses"], "p_worse": verdict["p_worse"], "holds": verdict["holds"],
            "at_least_dense": verdict["meets_point_target"], "tensors": _encodings(model, plan, shape)}


def compose(dense: torch.nn.Module, pruned: torch.nn.Module, dataset, search_dirs: dict[str, Path], net: str,
            progress: bool = True) -> dict:
    """Search both networks and compare.  ``search_dirs`` (``dense``/``pruned`` → directory) hold
    each search's plan.json, report and resume cache: keyed by the weights, one dense search serves
    every sparsity."""
    from ..plan_io import load_plan
    from ..search import run_search

    rows = []
    dense_correct = _correct(dense, dataset.test)
    rows.append(_row("dense fp32", dense, {}, dataset, dense_correct))
    rows.append(_row("pruned fp32", pruned, {}, dataset, dense_correct))
    plans = {}
    for label, model in (("dense", dense), ("pruned", pruned)):
        where = Path(search_dirs[label])
        if not (where / "plan.json").is_file():
            run_search(model, dataset, model_name=net, out_dir=where, progress=progress)
        plans[label] = str(where / "plan.json")
        for variant in VARIANTS:
            plan = load_plan(where / "plan.json", variant)
            rows.append(_row(f"{label} + search ({variant})", model, plan, dataset, dense_correct))
    kept = sum(int(m.weight.ne(0).sum()) for _, m in prunable_layers(pruned))
    total = sum(int(m.weight.numel()) for _, m in prunable_layers(pruned))
    return {"net": net, "kept_weights": kept, "weights": total, "plans": plans, "rows": rows}


def markdown(result: dict, source: str) -> str:
    lines = [f"## Pruning + searched formats ({result['net']}, {source})", "",
             f"{result['kept_weights']:,} of {result['weights']:,} weights kept. Bits per *original* weight: kept "
             "values at the plan's width plus, per tensor, the cheaper of a 1-bit-per-weight bitmap and b-bit "
             "relative (CSR-style) indices with filler entries. Verdict: held-out test split, paired against the "
             "dense fp32 net (exact one-sided McNemar, holds = p ≥ 0.05).", "",
             "| configuration | bits / original weight | mean bits (w + act) | test acc % | vs dense % | gains / losses | p(worse) | holds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['configuration']} | {r['bits_per_original_weight']:.3f} | {r['mean_bits']:.2f} | "
                     f"{100 * r['test_accuracy']:.2f} | {100 * r['normalised_to_dense']:.2f} | {r['gains']} / {r['losses']} | "
                     f"{r['p_worse']:.3f} | {'yes' if r['holds'] else 'no'} |")
    best = [r for r in result["rows"] if "pruned + search" in r["configuration"]]
    if best:
        lines += ["", "Encodings of the pruned + search (accurate) weights: "
                  + ", ".join(f"{t['tensor']} {t['format']} {t['encoding']} ({t['bits_per_original_weight']:.3f} b/w)"
                              for t in best[0]["tensors"])]
    return "\n".join(lines) + "\n"
