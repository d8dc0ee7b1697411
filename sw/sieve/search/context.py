"""What every strategy shares: the validation split, the fp32 reference, the accuracy targets,
evaluation with early rejection, the on-disk outcome cache and the cost bookkeeping.

Targets (normalized validation accuracy = quantized correct / fp32 correct):

* ``exact``       every validation prediction equals the fp32 model's (so accuracy is 100 %);
* ``accurate``    normalized accuracy >= 100 %;
* ``approximate`` normalized accuracy >= 99.9 %.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from ..cfloat import Format
from ..histograms import ExponentHistogram, HistogramCollector, weight_histograms
from ..qeval import PrefixEvaluator, TensorInfo
from .evalcache import EvalCache, digest
from .formats import plan_bits, plan_key

__all__ = ["VARIANTS", "TARGETS", "Outcome", "SearchContext"]

VARIANTS = ("exact", "accurate", "approximate")
TARGETS = {"exact": 1.0, "accurate": 1.0, "approximate": 0.999}


@dataclass
class Outcome:
    """Result of evaluating one plan on one sample set under one criterion."""

    passed: bool
    correct: int            # correct predictions among the evaluated samples
    agree: int              # predictions equal to fp32 among the evaluated samples
    evaluated: int          # samples run (fewer than the set when rejected early)
    complete: bool
    est_correct: int        # estimated correct count on the whole validation split
    mismatches: list[int] = field(default_factory=list)  # val indices whose prediction != fp32 (complete runs)

    def to_json(self) -> dict:
        return self.__dict__.copy()


class SampleSet:
    """A subset of the validation split in evaluation order (lowest fp32 margin first).

    It holds *covered* images (the lowest-margin ones, whose change is counted exactly) and
    optionally a uniform random *sample* of the other images, whose net change is scaled up to
    all of them: an unbiased estimate of what the images outside the covered part do.
    """

    def __init__(self, ctx: "SearchContext", covered: Sequence[int], sample: Sequence[int], batch_size: int):
        covered_set = set(covered)
        sample = [i for i in sample if i not in covered_set]
        order = sorted(set(covered) | set(sample), key=lambda i: ctx.margin_rank[i])
        sampled = set(sample)
        self.indices = torch.tensor(order, dtype=torch.long)
        self.is_sample = torch.tensor([i in sampled for i in order], dtype=torch.bool)
        self.key = digest(*order, "|", *sorted(sampled))[:16]
        self.evaluator = PrefixEvaluator(ctx.model, ctx.images[self.indices], batch_size=batch_size)
        self.labels = ctx.labels[self.indices]
        self.ref_pred = ctx.fp32_pred[self.indices]
        ref_ok = self.ref_pred == self.labels
        self.ref_correct_covered = int((ref_ok & ~self.is_sample).sum())
        self.ref_correct_sample = int((ref_ok & self.is_sample).sum())
        self.ref_correct = self.ref_correct_covered + self.ref_correct_sample
        self.size = len(order)
        self.covered = self.size - len(sampled)
        self.scale = (ctx.n - self.covered) / len(sampled) if sampled else 0.0


class SearchContext:
    """The fp32 reference on the validation split plus cached, counted plan evaluations."""

    def __init__(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                 identity: str, cache_path=None, batch_size: int = 500, early_tolerance: float = 0.002,
                 subset_surplus: float = 0.0,
                 progress=None):
        self.model = model.eval()
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.early_tolerance = early_tolerance
        self.subset_surplus = subset_surplus
        self.progress = progress
        t0 = time.perf_counter()
        full_eval = PrefixEvaluator(model, images, batch_size=batch_size, max_states=0)
        collector = HistogramCollector()
        logits = full_eval.fp32_logits(observer=collector)
        self.fp32_seconds_with_histograms = time.perf_counter() - t0
        t0 = time.perf_counter()
        full_eval.run({})  # timed plain fp32 pass: the unit of search cost
        self.fp32_pass_seconds = time.perf_counter() - t0
        self.infos: list[TensorInfo] = full_eval.infos
        self.histograms: dict[str, ExponentHistogram] = dict(collector.histograms)
        self.histograms.update(weight_histograms(model, [i.name for i in self.infos if i.kind == "weight"]))
        self.fp32_logits = logits
        self.fp32_pred = logits.argmax(1)
        self.base_correct = int((self.fp32_pred == labels).sum())
        self.n = int(labels.numel())
        top2 = logits.topk(2, dim=1).values if logits.shape[1] > 1 else torch.cat([logits, logits], 1)
        margin = (top2[:, 0] - top2[:, 1]).numpy()
        self.margin_rank = np.empty(self.n, dtype=np.int64)
        self.margin_rank[np.argsort(margin, kind="stable")] = np.arange(self.n)
        self.identity = identity
        self.cache = EvalCache(cache_path)
        self.evaluations = 0          # evaluate() calls (replayed ones included: deterministic)
        self.computed = 0             # of which actually ran the model
        self.samples_run = 0          # images pushed through (part of) the model
        self._sets: dict[str, SampleSet] = {}
        self.points: list[tuple[float, float]] = []
        self.full = self.sample_set(range(self.n))

    # -- targets
    def need(self, variant: str) -> int:
        """Correct validation predictions a plan needs for ``accurate``/``approximate``."""
        return math.ceil(TARGETS[variant] * self.base_correct - 1e-9)

    def sample_set(self, covered, sample=()) -> SampleSet:
        covered, sample = list(covered), list(sample)
        size = len(set(covered) | set(sample))
        # small sets run in ~8 batches, so a failing candidate is dropped after a few images
        batch = self.batch_size if size == self.n else min(self.batch_size, max(50, size // 8))
        s = SampleSet(self, covered, sample, batch)
        if s.key not in self._sets:
            self._sets[s.key] = s
        return self._sets[s.key]

    # -- evaluation
    def evaluate(self, plan: Mapping[str, Format], sset: SampleSet, criterion: str, *,
                 checkpoint: str | None = None, early: bool = True) -> Outcome:
        """Evaluate ``plan`` on ``sset``: pass/fail for ``criterion`` (a variant name or ``measure``).

        Samples outside the set are assumed to keep their fp32 prediction (exactly true when the
        set is the whole split).  With ``early``, batches run in order of rising fp32 margin and
        the run stops once the plan is clearly failing; that can only reject, never accept.
        """
        self.evaluations += 1
        early = early and criterion != "measure"
        key = digest(self.identity, sset.key, criterion if early else "complete", plan_key(plan))
        raw = self.cache.get(key)
        if raw is None:
            raw = self._run(plan, sset, criterion, checkpoint, early)
            self.cache.put(key, raw)
        out = self._judge(raw, sset, criterion)
        if out.complete:  # for the bits-vs-accuracy plot (estimated on the whole split)
            self.points.append((plan_bits(plan, self.infos)["mean_bits"], 100.0 * out.est_correct / self.base_correct))
        return out

    def _judge(self, raw: dict, sset: SampleSet, criterion: str) -> Outcome:
        complete = raw["n"] == sset.size
        est = -1
        if complete:
            est_f = (raw["correct_covered"] + self.base_correct - sset.ref_correct_covered
                     + sset.scale * (raw["correct_sample"] - sset.ref_correct_sample))
            est = math.floor(est_f + 1e-9)
        if criterion == "exact":
            passed = complete and raw["agree"] == sset.size
        elif criterion in ("accurate", "approximate"):
            # on a subset the estimate must clear the target by a margin, so that the check on
            # the whole split (and the held-out test) rarely undoes the choice
            surplus = 0 if sset.size == self.n else math.ceil(self.subset_surplus * self.n)
            passed = complete and est >= self.need(criterion) + surplus
        else:
            passed = complete
        correct = raw["correct_covered"] + raw["correct_sample"]
        return Outcome(passed, correct, raw["agree"], raw["n"], complete, est, raw["mismatches"])

    def _run(self, plan, sset: SampleSet, criterion: str, checkpoint, early: bool) -> dict:
        self.computed += 1
        need = self.need(criterion) if criterion in ("accurate", "approximate") else None
        bs = sset.evaluator.batch_size
        stats = {"cc": 0, "cs": 0, "rc": 0, "rs": 0, "agree": 0, "n": 0}

        def on_batch(b: int, logits: torch.Tensor) -> bool:
            lo = b * bs
            pred = logits.argmax(1)
            hi = lo + len(pred)
            ok = pred == sset.labels[lo:hi]
            ref = sset.ref_pred[lo:hi]
            ref_ok = ref == sset.labels[lo:hi]
            samp = sset.is_sample[lo:hi]
            stats["cc"] += int((ok & ~samp).sum())
            stats["cs"] += int((ok & samp).sum())
            stats["rc"] += int((ref_ok & ~samp).sum())
            stats["rs"] += int((ref_ok & samp).sum())
            stats["agree"] += int((pred == ref).sum())
            stats["n"] += len(pred)
            if not early:
                return True
            if criterion == "exact":
                return stats["agree"] == stats["n"]
            remaining = sset.size - stats["n"]
            tol = min(remaining, math.ceil(self.early_tolerance * remaining)) + 2 * sset.scale
            deficit = (stats["rc"] - stats["cc"]) + sset.scale * (stats["rs"] - stats["cs"])
            return deficit <= self.base_correct - need + tol

        logits = sset.evaluator.run(plan, checkpoint=checkpoint, on_batch=on_batch)
        self.samples_run += len(logits)
        if self.progress is not None:
            self.progress.update(1)
        mismatches: list[int] = []
        if not early and stats["n"] == sset.size:
            diff = torch.nonzero(logits.argmax(1) != sset.ref_pred).flatten()
            mismatches = sset.indices[diff].tolist()
        return {"correct_covered": stats["cc"], "correct_sample": stats["cs"], "agree": stats["agree"],
                "n": stats["n"], "mismatches": mismatches}
