"""The comparison of chapter 7: every method on every network, several seeds, paired verdicts.

For each network and seed one :class:`~.pipeline.Pipeline` trains the dense net, SNIP, local
random and double-shot with each metric.  Accuracy is normalised by the *same seed's* dense
test accuracy (the figures of §7.5), then summarised as mean ± standard deviation over seeds.
Whether a pruned net is as accurate as the dense one is judged per seed on the held-out test
split with the exact one-sided McNemar test (:func:`sieve.stats.paired_verdict`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from ..errors import SieveError
from ..stats import paired_verdict
from . import networks
from .metrics import METRICS
from .pipeline import Pipeline, Setup

ALL_METHODS = ("snip", "random") + tuple(f"doubleshot/{m}" for m in METRICS)
HEADLINE = "doubleshot/weighted_movement"


@dataclass(frozen=True)
class StudySettings:
    nets: tuple[str, ...] = tuple(networks.BENCHMARKS)
    seeds: int = 3
    epochs: int = 2
    train_images: int = 55000
    methods: tuple[str, ...] = ALL_METHODS
    sparsity: float | None = None     # None: each net's Table 7.1 sparsity
    first_seed: int = 1


def _mean_std(values) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0, "n": int(arr.size)}


def check_methods(methods) -> tuple[str, ...]:
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad:
        raise SieveError(f"unknown pruning method '{bad[0]}'; choose from {', '.join(ALL_METHODS)}")
    return tuple(methods)


def run_study(settings: StudySettings, train, dataset, fingerprint: str, progress: bool = True) -> dict:
    """Train (or read from the cache) every run and return the summary dict (JSON-able)."""
    methods = check_methods(settings.methods)
    jobs = [(net, settings.first_seed + k) for net in settings.nets for k in range(settings.seeds)]
    per_run = len(methods) + 1
    bar = tqdm(total=len(jobs) * per_run, desc="prune study", unit="run", disable=not progress)
    nets = {}
    for net in settings.nets:
        sparsity = settings.sparsity if settings.sparsity is not None else networks.BENCHMARKS[net].sparsity
        seeds = []
        for seed in (s for n, s in jobs if n == net):
            pipe = Pipeline(Setup(net, seed, sparsity, settings.epochs, settings.train_images), train, dataset,
                            fingerprint)
            dense = pipe.run("dense")
            bar.update(1)
            row = {"seed": seed, "keep_counts": pipe.keep, "dense": _run_row(dense, None), "methods": {}}
            for method in methods:
                row["methods"][method] = _run_row(pipe.run(method), dense)
                bar.update(1)
            seeds.append(row)
        nets[net] = {"sparsity": sparsity, "description": networks.BENCHMARKS[net].description,
                     "seeds": seeds, "summary": _summarise(seeds, methods)}
    bar.close()
    return {"settings": {"nets": list(settings.nets), "seeds": settings.seeds, "first_seed": settings.first_seed,
                         "epochs": settings.epochs, "train_images": settings.train_images,
                         "methods": list(methods), "data": fingerprint,
                         "test_images": len(dataset.test)},
            "nets": nets, "headline": headline(nets, methods)}


def _run_row(run, dense) -> dict:
    rec = run.record
    row = {"test_accuracy": rec["test_accuracy"], "test_error": 1.0 - rec["test_accuracy"],
           "val_accuracy": rec["val_accuracy"], "train_seconds": rec["train_seconds"],
           "sparsity": rec["sparsity"], "weights_path": rec["weights_path"]}
    if dense is not None:
        row["normalised_accuracy"] = rec["test_accuracy"] / dense.record["test_accuracy"]
        row["verdict_vs_dense"] = paired_verdict(dense.correct, run.correct)
    return row


def _summarise(seeds: list[dict], methods) -> dict:
    out = {"dense": {"test_error": _mean_std([s["dense"]["test_error"] for s in seeds]),
                     "train_seconds": _mean_std([s["dense"]["train_seconds"] for s in seeds])}}
    for method in methods:
        rows = [s["methods"][method] for s in seeds]
        layers = rows[0]["sparsity"]["layers"]
        out[method] = {
            "test_error": _mean_std([r["test_error"] for r in rows]),
            "normalised_accuracy": _mean_std([r["normalised_accuracy"] for r in rows]),
            "train_seconds": _mean_std([r["train_seconds"] for r in rows]),
            "global_sparsity": _mean_std([r["sparsity"]["global"] for r in rows]),
            "layer_sparsity": {n: _mean_std([r["sparsity"]["layers"][n]["sparsity"] for r in rows]) for n in layers},
            "seeds_at_least_dense": sum(r["verdict_vs_dense"]["meets_point_target"] for r in rows),
            "seeds_not_worse_than_dense": sum(r["verdict_vs_dense"]["holds"] for r in rows),
        }
    return out


def headline(nets: dict, methods) -> dict:
    """Each double-shot metric against SNIP: per net the mean (over seeds) difference of
    normalised accuracy, then the mean ± std of those differences over nets."""
    if "snip" not in methods:
        return {}
    out = {}
    for method in methods:
        if not method.startswith("doubleshot/"):
            continue
        diffs = {}
        for net, info in nets.items():
            pairs = [s["methods"][method]["normalised_accuracy"] - s["methods"]["snip"]["normalised_accuracy"]
                     for s in info["seeds"]]
            diffs[net] = _mean_std(pairs)
        means = [d["mean"] for d in diffs.values()]
        out[method] = {"per_net": diffs, "over_nets": _mean_std(means),
                       "nets_at_least_snip": sum(m >= 0 for m in means), "nets": len(means)}
    return out
