"""Run a search end to end: fp32 reference, strategy, honest measurement, plan.json and report.

The search sees only the validation split; the test split is touched once per variant at the
end, to report held-out accuracy.  Outputs are written atomically (nothing half-written).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from ..errors import SieveError
from ..io_utils import write_json
from ..plan_io import write_plan
from ..qeval import PrefixEvaluator
from .context import MARGIN_Z, VARIANTS, SearchContext
from .evalcache import digest
from .formats import plan_bits
from .greedy import search_greedy
from .sieve_strategy import search_sieve
from .uniform import search_uniform

__all__ = ["STRATEGIES", "DEFAULT_STRATEGY", "run_search", "model_digest"]

STRATEGIES: dict[str, Callable] = {"greedy": search_greedy, "sieve": search_sieve, "uniform": search_uniform}
DEFAULT_STRATEGY = "greedy"
ALGORITHM_VERSION = "7"  # bump when a strategy changes, so stale cached outcomes are not replayed


def model_digest(model: torch.nn.Module) -> str:
    parts = []
    for name, t in sorted(model.state_dict().items()):
        parts += [name, t.detach().cpu().contiguous().numpy().tobytes()]
    return digest(*parts)


def _check_split(split, what: str) -> None:
    images, labels = getattr(split, "images", None), getattr(split, "labels", None)
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise SieveError(f"the {what} split has no image/label tensors; load data with sieve.zoo.load")
    if images.shape[0] == 0 or images.shape[0] != labels.shape[0]:
        raise SieveError(f"the {what} split is empty or its images ({images.shape[0]}) and labels"
                         f" ({labels.shape[0]}) differ in number; check the data path or --{what} N")
    if not torch.isfinite(images).all():
        raise SieveError(f"the {what} split holds NaN or Inf pixels; the data file is corrupt")


def _accuracy(model, plan, images, labels, batch_size) -> float:
    ev = PrefixEvaluator(model, images, batch_size=batch_size, max_states=0)
    pred = ev.run(plan).argmax(1)
    return float((pred == labels).float().mean())


def run_search(model: torch.nn.Module, dataset, *, model_name: str, strategy: str = DEFAULT_STRATEGY,
               out_dir: str | Path | None = None, batch_size: int = 500, progress: bool = True,
               log: Callable[[str], None] | None = None, report: bool = True, resume: bool = True,
               threads: int = 1, margin_z: float = MARGIN_Z) -> dict:
    """Search a plan for ``model`` on ``dataset.val``; return the plan.json document.

    ``margin_z``: the generalization margin of the accurate/approximate targets (see
    :mod:`sieve.search.context`; 0 = the plain validation target).
    Writes ``out_dir/plan.json``, ``report.md`` and plots when ``out_dir`` is given, and keeps
    evaluation outcomes under ``out_dir/cache/`` so that an interrupted run resumes exactly.
    """
    if strategy not in STRATEGIES:
        raise SieveError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    _check_split(dataset.val, "val")
    _check_split(dataset.test, "test")
    torch.set_num_threads(max(1, min(threads, torch.get_num_threads())))
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise SieveError(f"weights of {name} hold NaN or Inf; the checkpoint is corrupt")
    val, test = dataset.val, dataset.test
    out = Path(out_dir) if out_dir is not None else None
    identity = digest(ALGORITHM_VERSION, model_name, strategy, margin_z, model_digest(model),
                      val.images.numpy().tobytes(), val.labels.numpy().tobytes())
    cache_path = None
    if out is not None and resume:
        cache_path = out / "cache" / f"{strategy}-{identity[:16]}.jsonl"

    from tqdm import tqdm

    bar = tqdm(desc=f"search {model_name} ({strategy})", unit="eval", disable=not progress, leave=False)
    t0 = time.perf_counter()
    try:
        ctx = SearchContext(model, val.images, val.labels, identity=identity, cache_path=cache_path,
                            batch_size=batch_size, progress=bar, margin_z=margin_z)
        plans, trace = STRATEGIES[strategy](ctx, log=log)
        measured = {v: ctx.evaluate(plans[v], ctx.full, "measure", early=False) for v in VARIANTS}
        seconds = time.perf_counter() - t0
    finally:
        bar.close()

    base_val = ctx.base_correct / ctx.n
    base_test = _accuracy(model, {}, test.images, test.labels, batch_size)
    variants = {}
    for v in VARIANTS:
        plan = plans[v]
        test_acc = _accuracy(model, plan, test.images, test.labels, batch_size)
        bits = plan_bits(plan, ctx.infos)
        variants[v] = {
            "val_accuracy": measured[v].correct / ctx.n,
            "test_accuracy": test_acc,
            "normalized_val_accuracy": measured[v].correct / max(1, ctx.base_correct),
            "normalized_test_accuracy": test_acc / base_test if base_test else 0.0,
            "val_agreement": measured[v].agree / ctx.n,
            "meets_target": ctx.meets(v, measured[v], margin=False),
            "val_flips": int(round(measured[v].flips)),
            "meets_target_with_margin": ctx.meets(v, measured[v]),
            "mean_bits_weights": bits["mean_bits_weights"],
            "mean_bits_activations": bits["mean_bits_activations"],
            "mean_bits": bits["mean_bits"],
            "compression_ratio": bits["compression_ratio"],
            "tensors": [{"name": i.name, "kind": i.kind, "elements": i.elements,
                         "format": str(plan[i.name]) if i.name in plan else "fp32",
                         "bits": plan[i.name].width if i.name in plan else 32} for i in ctx.infos],
        }
    doc = {
        "model": model_name,
        "dataset": getattr(dataset, "name", "unknown"),
        "strategy": strategy,
        "baseline": {"val_accuracy": base_val, "test_accuracy": base_test},
        "variants": variants,
        "search_seconds": seconds,
        "evaluations": ctx.evaluations,
        "margin_z": margin_z,
        "cost": {
            "fp32_pass_seconds": ctx.fp32_pass_seconds,
            "search_fp32_passes": seconds / ctx.fp32_pass_seconds if ctx.fp32_pass_seconds else None,
            "evaluations_run": ctx.computed,
            "evaluations_replayed": ctx.evaluations - ctx.computed,
            "val_images": ctx.n,
            "test_images": int(test.labels.numel()),
        },
    }
    if out is not None:
        write_plan(out / "plan.json", doc)
        write_json(out / "search_trace.json", {"trace": trace,
                                               "histograms": {k: h.to_json() for k, h in ctx.histograms.items()}})
        if report:
            from ..report.search_report import write_report

            write_report(out, doc, ctx.histograms, ctx.points)
    return doc

