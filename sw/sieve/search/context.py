"""What every strategy shares: the validation split, the fp32 reference, the accuracy targets,
evaluation with early rejection, the on-disk outcome cache and the cost bookkeeping.

Targets (normalized validation accuracy = quantized correct / fp32 correct):

* ``exact``       every validation prediction equals the fp32 model's (so accuracy is 100 %);
* ``accurate``    normalized accuracy >= 100 %;
* ``approximate`` normalized accuracy >= 99.9 %.

Generalization margin (``margin_z``).  The targets are promised for *held-out* data, but a
search that keeps the narrowest format still passing on validation picks plans whose
validation gain is partly luck: last session's resnet20 accurate plan disagreed with fp32 on
7.7 % of its 1,000 validation images, broke even on them (+1 net) and lost 1.3 points on test.
What carries over to new images is the *expected* net gain per image, and validation only
estimates it.  Per image the quantized model gains (+1: fp32 wrong -> right), loses (-1: fp32
right -> wrong) or neither; over ``g`` gains and ``l`` losses the net gain ``g - l`` has
standard error ``sqrt(g + l)`` (a sum of independent +-1 flips; images whose wrong class only
changes count 0).  A plan passes ``accurate``/``approximate`` only if

    (g - l) + slack  >=  margin_z * sqrt(g + l)

where ``slack`` is what the target allows (0 for ``accurate``, 0.1 % of the fp32-correct count
for ``approximate``).  A plan agreeing with fp32 everywhere passes; a plan with many flips must
show a clearly positive net gain — so break-even-by-luck plans (2 gains, 2 losses) are refused.
``margin_z = 1`` (the default, fixed before any test measurement) is the one-standard-error
rule of model selection: the expected net gain is >= -slack with ~84 % one-sided confidence on
the validation distribution.  No validation rule can make ">= 100 % on test" certain: near the
decision boundary a validation and a test split differ in which of their few lowest-margin
images are fp32-right (Fashion-MNIST lenet5: of the 20 lowest-margin images, val has 7 fp32-right
and 11 whose runner-up is right, test 11 and 3), so any plan that moves those images at all —
even one agreeing with fp32 on all 5,000 validation images — can lose a few test images.
``margin_z = 0`` gives the plain target.  ``subset_z`` (default = ``margin_z``) may demand more of decisions
made on a subset.

How many validation images the rule needs.  The approximate target's allowance is
``slack = floor(0.001 * fp32-correct)`` images; the cheapest loss it could excuse is one lost
image and nothing else (net -1 on 1 flip), which passes only if ``slack - 1 >= margin_z``.  So
below ``1000 * ceil(1 + margin_z)`` fp32-correct validation images (2,000 at ``margin_z = 1``)
*approximate* cannot accept a single lost image and is the *accurate* target under another
name, and on a split of a handful of images any plan that keeps those few predictions is
"exact" (:func:`min_correct_for_allowance`; the driver warns).  A model that gets no
validation image right has no normalized accuracy at all (:meth:`SearchContext.normalized`
gives None, reported as "n/a").
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from ..batch_memory import largest_divisor
from ..cfloat import Format
from ..device import resolve_device
from ..histograms import ExponentHistogram, HistogramCollector, weight_histograms
from ..sparse_storage import with_sparse_layouts
from ..qeval import PrefixEvaluator, TensorInfo
from .evalcache import EvalCache, digest
from .formats import plan_bits, plan_key
from .progress import Progress

__all__ = ["VARIANTS", "TARGETS", "MARGIN_Z", "Outcome", "SearchContext", "min_correct_for_allowance"]

VARIANTS = ("exact", "accurate", "approximate")
TARGETS = {"exact": 1.0, "accurate": 1.0, "approximate": 0.999}
MARGIN_Z = 1.0  # generalization margin in standard errors of the net gain (module docstring)
SUBSET_Z = 1.0  # ... on a subset (raise it to make the many subset decisions of a search surer)


def min_correct_for_allowance(margin_z: float = MARGIN_Z) -> int:
    """Fewest fp32-correct validation images with which the approximate target's allowance can
    excuse one lost image under the margin rule (module docstring): its slack ``floor(a * B)``
    (``a`` = 0.1 %) must reach ``1 + margin_z``."""
    allowance = 1.0 - TARGETS["approximate"]
    slack = math.ceil(1.0 + margin_z - 1e-9)
    return math.ceil(slack / allowance - 1e-6)


@dataclass
class Outcome:
    """Result of evaluating one plan on one sample set under one criterion."""

    passed: bool
    correct: int            # correct predictions among the evaluated samples
    agree: int              # predictions equal to fp32 among the evaluated samples
    evaluated: int          # samples run (fewer than the set when rejected early)
    complete: bool
    est_correct: int        # estimated correct count on the whole validation split
    flips: float = 0.0      # estimated gains + losses (prediction changed, one side correct) on the split
    mismatches: list[int] = field(default_factory=list)  # val indices whose prediction != fp32 (complete runs)

    def to_json(self) -> dict:
        return self.__dict__.copy()


class SampleSet:
    """A subset of the validation split in evaluation order (lowest fp32 margin first).

    It holds *covered* images (the lowest-margin ones, whose change is counted exactly) and
    optionally a uniform random *sample* of the other images, whose net change is scaled up to
    all of them: an unbiased estimate of what the images outside the covered part do.  Without
    a sample, the images outside are not assumed to keep their fp32 prediction (that made noisy
    plans look good: low-margin images are about half fp32-wrong, so noise *gains* there, while
    the confident images it flips are nearly all losses); their flips are predicted from the
    margin shrinkage measured on the covered images (:meth:`SearchContext._predicted_outside`).
    """

    def __init__(self, ctx: "SearchContext", covered: Sequence[int], sample: Sequence[int], batch_size: int,
                 check_every: int | None = None):
        self.check_every = check_every or batch_size  # images between two early-rejection checks
        covered_set = set(covered)
        sample = [i for i in sample if i not in covered_set]
        order = sorted(set(covered) | set(sample), key=lambda i: ctx.margin_rank[i])
        sampled = set(sample)
        self.indices = torch.tensor(order, dtype=torch.long)
        self.is_sample = torch.tensor([i in sampled for i in order], dtype=torch.bool)
        self.key = digest(*order, "|", *sorted(sampled))[:16]
        self.evaluator = ctx.make_evaluator(self.indices, batch_size)
        self.labels = ctx.labels[self.indices]
        self.ref_pred = ctx.fp32_pred[self.indices]
        ref_ok = self.ref_pred == self.labels
        self.ref_correct_covered = int((ref_ok & ~self.is_sample).sum())
        self.ref_correct_sample = int((ref_ok & self.is_sample).sum())
        self.ref_correct = self.ref_correct_covered + self.ref_correct_sample
        self.size = len(order)
        self.covered = self.size - len(sampled)
        self.scale = (ctx.n - self.covered) / len(sampled) if sampled else 0.0
        # for the noise model: fp32 top-2 classes, margin and logit scale of the set's images,
        # and the same for the images outside the set (their flips are predicted, not run)
        self.top2 = ctx.fp32_top2[self.indices]
        self.margin = ctx.margin[self.indices]
        self.logit_scale = ctx.logit_scale[self.indices]
        inside = np.zeros(ctx.n, dtype=bool)
        inside[order] = True
        out = torch.from_numpy(np.nonzero(~inside)[0] if not sampled else np.zeros(0, dtype=np.int64))
        self.out_margin = ctx.margin[out]
        self.out_scale = ctx.logit_scale[out]
        self.out_value = ctx.flip_value[out]


class SearchContext:
    """The fp32 reference on the validation split plus cached, counted plan evaluations."""

    def __init__(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                 identity: str, cache_path=None, batch_size: int = 500, early_tolerance: float = 0.002,
                 subset_surplus: float = 0.0, margin_z: float = MARGIN_Z, subset_z: float = SUBSET_Z,
                 progress: Progress | None = None, device=None, evaluator_factory=None, store=None,
                 family: str = "scalar", early_every: int | None = None):
        self.model = model.eval()
        self.family = family  # the format family the strategy draws candidates from (sieve.search.formats.FAMILIES)
        # where the forward passes run; the model goes there once (every evaluator shares it)
        self.device = resolve_device(device if device is not None else "cpu")
        self.device_model = self.model if self.device.type == "cpu" else copy.deepcopy(self.model).to(self.device)
        # the one seam between the search and the model runs: (split indices, batch size) ->
        # an evaluator with PrefixEvaluator's run() (sieve.search.ray_eval shards it over Ray)
        self._evaluator_factory = evaluator_factory
        self.store = store  # bounds the prefix caches' RAM (sieve.prefix_store); None: unbounded
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        # the batch early rejection of accurate/approximate is judged at (None: ``batch_size``;
        # smaller sets: see sample_set): the rule is statistical, so how often it is asked must
        # not depend on how finely the CPU runs (sieve.batch_memory.run_batch_size); exact is
        # checked after every batch run
        self.early_every = int(early_every) if early_every else None
        self.early_tolerance = early_tolerance
        self.subset_surplus = subset_surplus
        self.margin_z = margin_z
        # the approximate target's margin while a strategy asks for its own looser one
        # (None: ``margin_z`` like the others; 0: the dissertation's plain target; see
        # sieve.search.greedy.APPROXIMATE_OWN_Z)
        self.approximate_z: float | None = None
        self.subset_z = subset_z
        self.progress = progress if progress is not None else Progress()
        self.search_label = "search"  # the strategy loop's bar (see plan_steps)
        self.stage = ""
        self.bar = None
        n = int(labels.numel())
        t0 = time.perf_counter()
        full_eval = PrefixEvaluator(self.device_model, images, batch_size=batch_size, max_states=0, device=self.device)
        collector = HistogramCollector()
        with self.progress.bar("fp32 val (histograms)", n, "img") as bar:
            logits = full_eval.run({}, observer=collector, on_batch=lambda b, out: bar.update(len(out)) or True)
        self.fp32_seconds_with_histograms = time.perf_counter() - t0
        correct = int((logits.argmax(1) == labels).sum())
        self.progress.say(f"fp32 val accuracy {correct / max(1, n):.2%} ({correct:,} of {n:,} images)")
        with self.progress.bar("fp32 val (timed)", n, "img") as bar:
            t0 = time.perf_counter()
            # timed plain fp32 pass: the unit of search cost
            full_eval.run({}, on_batch=lambda b, out: bar.update(len(out)) or True)
            self.fp32_pass_seconds = time.perf_counter() - t0
        self.infos: list[TensorInfo] = with_sparse_layouts(model, full_eval.infos)   # pruned weights: kept values + index
        self.histograms: dict[str, ExponentHistogram] = dict(collector.histograms)
        self.histograms.update(weight_histograms(model, [i.name for i in self.infos if i.kind == "weight"]))
        self.fp32_logits = logits
        self.fp32_pred = logits.argmax(1)
        self.base_correct = int((self.fp32_pred == labels).sum())
        self.n = int(labels.numel())
        top2 = logits.topk(2, dim=1) if logits.shape[1] > 1 else torch.cat([logits, logits], 1).topk(2, dim=1)
        self.fp32_top2 = top2.indices
        self.margin = top2.values[:, 0] - top2.values[:, 1]
        margin = self.margin.numpy()
        self.logit_scale = logits.pow(2).mean(1).sqrt().clamp_min(1e-12)
        # what a flip of image i does to the correct count: -1 if fp32 is right, +1 if fp32 is
        # wrong and its runner-up right, 0 otherwise
        first_ok = top2.indices[:, 0] == labels
        self.flip_value = torch.where(first_ok, -1.0, (top2.indices[:, 1] == labels).float())
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

    def make_evaluator(self, indices: torch.Tensor, batch_size: int):
        """The evaluator of the validation images ``indices`` (in that order)."""
        if self._evaluator_factory is not None:
            return self._evaluator_factory(indices, batch_size)
        return PrefixEvaluator(self.device_model, self.images, indices=indices, batch_size=batch_size, device=self.device,
                               store=self.store)

    # -- progress of the strategy's loop (one bar; its total is what the strategy plans)
    def plan_steps(self, count: int, unit: str = "step") -> None:
        """Announce ``count`` more steps of the strategy's loop: the bar's total grows by it."""
        if self.bar is None:
            self.bar = self.progress.bar(self.search_label, count, unit)
        else:
            self.bar.total = (self.bar.total or 0) + count
            self.bar.refresh()

    def step(self, count: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def close_steps(self) -> None:
        """Close the loop's bar (the steps a strategy planned but did not need count as done)."""
        if self.bar is not None:
            if self.bar.total and self.bar.n < self.bar.total:
                self.bar.update(self.bar.total - self.bar.n)
            self.bar.close()
            self.bar = None

    def normalized(self, correct: float) -> float | None:
        """``correct`` over the fp32 model's correct count; None when fp32 gets nothing right."""
        return correct / self.base_correct if self.base_correct else None

    # -- targets
    def need(self, variant: str) -> int:
        """Correct validation predictions a plan needs for ``accurate``/``approximate``."""
        return math.ceil(TARGETS[variant] * self.base_correct - 1e-9)

    def passes(self, variant: str, net: float, flips: float, surplus: float = 0.0, z: float | None = None) -> bool:
        """The variant's target with the generalization margin (module docstring): ``net`` is
        the estimated change of the correct count, ``flips`` the estimated gains + losses,
        ``z`` the margin in standard errors (default ``margin_z``)."""
        if variant == "exact":
            return flips == 0 and net == 0
        slack = self.base_correct - self.need(variant)
        return net + slack - surplus >= self.margin_for(variant, z) * math.sqrt(max(0.0, flips)) - 1e-9

    def margin_for(self, variant: str, z: float | None = None) -> float:
        """The margin ``variant`` is judged by: ``z`` (default ``margin_z``), or for approximate
        the smaller of that and its own margin once the search has set one (``approximate_z``)."""
        z = self.margin_z if z is None else z
        own = getattr(self, "approximate_z", None)  # (contexts built without __init__ in tests)
        return min(z, own) if variant == "approximate" and own is not None else z

    def meets(self, variant: str, outcome: Outcome, margin: bool = True) -> bool:
        """Whether a complete run on the whole split meets the variant's target: with the
        generalization margin (as the greedy and uniform strategies decide), or the plain one."""
        if variant == "exact":
            return outcome.agree == self.n
        if margin:
            return self.passes(variant, outcome.correct - self.base_correct, outcome.flips)
        return outcome.correct >= self.need(variant)

    def set_z(self, sset: "SampleSet") -> float:
        """The margin for decisions on ``sset``: ``margin_z`` on the whole split, at least
        ``subset_z`` on a subset (see the module docstring)."""
        return self.margin_z if sset.size == self.n else max(self.margin_z, self.subset_z)

    def sample_set(self, covered, sample=()) -> SampleSet:
        covered, sample = list(covered), list(sample)
        size = len(set(covered) | set(sample))
        # small sets are judged every ~1/8 of their images, so a failing candidate is dropped
        # after a few; the CPU runs them in cache-sized batches that divide that
        judged = self.early_every or self.batch_size
        check = judged if size == self.n else min(judged, max(50, size // 8))
        run = largest_divisor(check, self.batch_size)
        s = SampleSet(self, covered, sample, run, check)
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
        judged = criterion
        if criterion == "approximate" and getattr(self, "approximate_z", None) is not None:
            # a run stopped early under one margin says nothing about another margin
            judged = f"approximate@z={self.approximate_z:g}"
        key = digest(self.identity, sset.key, judged if early else "complete", plan_key(plan))
        raw = self.cache.get(key)
        if raw is None and early:  # a complete run of the same plan decides any criterion
            raw = self.cache.get(digest(self.identity, sset.key, "complete", plan_key(plan)))
        if raw is None:
            raw = self._run(plan, sset, criterion, checkpoint, early)
            self.cache.put(key, raw)
        out = self._judge(raw, sset, criterion)
        if out.complete and self.base_correct:  # for the bits-vs-accuracy plot (estimated on the whole split)
            self.points.append((plan_bits(plan, self.infos)["mean_bits"], 100.0 * out.est_correct / self.base_correct))
        return out

    def _judge(self, raw: dict, sset: SampleSet, criterion: str) -> Outcome:
        complete = raw["n"] == sset.size
        est, flips = -1, 0.0
        if complete:
            est_f = (raw["correct_covered"] + self.base_correct - sset.ref_correct_covered
                     + sset.scale * (raw["correct_sample"] - sset.ref_correct_sample))
            flips = raw["flips_covered"] + sset.scale ** 2 * raw["flips_sample"]
            est_f += raw.get("out_net", 0.0)
            flips += raw.get("out_flips", 0.0)
            est = math.floor(est_f + 1e-9)
        if criterion == "exact":  # (on a subset, also fewer than half a flip predicted outside it)
            passed = complete and raw["agree"] == sset.size and flips < 0.5
        elif criterion in ("accurate", "approximate"):
            # on a subset the estimate may have to clear the target by a surplus, so that the
            # check on the whole split rarely undoes the choice
            surplus = 0 if sset.size == self.n else math.ceil(self.subset_surplus * self.n)
            passed = complete and self.passes(criterion, est - self.base_correct, flips, surplus, self.set_z(sset))
        else:
            passed = complete
        correct = raw["correct_covered"] + raw["correct_sample"]
        return Outcome(passed, correct, raw["agree"], raw["n"], complete, est, flips, raw["mismatches"])

    @staticmethod
    def _predicted_outside(sset: SampleSet, logits: torch.Tensor) -> tuple[float, float]:
        """Expected net change and flips of the images outside ``sset`` (the confident ones),
        from ``logits`` of the set's first ``len(logits)`` images (all of them, or the batches
        run so far).

        Noise model: the plan shrinks an image's fp32 top-2 margin by ``u`` times the image's
        logit scale (RMS logit), with ``u`` distributed as observed on the images that were run
        (their empirical distribution, heavy tail included: no Gaussian assumption).  Outside
        image ``j`` then flips with probability ``P(u > margin_j / scale_j)``.
        """
        if not len(sset.out_margin):
            return 0.0, 0.0
        rows = torch.arange(len(logits))
        hi = len(logits)
        moved = logits[rows, sset.top2[:hi, 0]] - logits[rows, sset.top2[:hi, 1]] - sset.margin[:hi]
        shrink = torch.sort(-moved / sset.logit_scale[:hi]).values
        need = sset.out_margin / sset.out_scale
        p = 1.0 - torch.searchsorted(shrink, need, right=True).double() / len(shrink)
        return float((p * sset.out_value).sum()), float((p * sset.out_value.abs()).sum())

    def _run(self, plan, sset: SampleSet, criterion: str, checkpoint, early: bool) -> dict:
        self.computed += 1
        bs = sset.evaluator.batch_size
        stats = {"cc": 0, "cs": 0, "rc": 0, "rs": 0, "fc": 0, "fs": 0, "agree": 0, "n": 0}
        seen: list[torch.Tensor] = []
        every = sset.check_every
        next_check = [every]

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
            flip = ok != ref_ok  # gained or lost
            stats["fc"] += int((flip & ~samp).sum())
            stats["fs"] += int((flip & samp).sum())
            stats["agree"] += int((pred == ref).sum())
            stats["n"] += len(pred)
            if early and criterion != "exact" and len(sset.out_margin):
                seen.append(logits)  # the noise model of the images outside sees every batch run
            if not early:
                return True
            if criterion == "exact":
                return stats["agree"] == stats["n"]
            if stats["n"] < sset.size:
                if stats["n"] < next_check[0]:
                    return True  # not a check point yet
                next_check[0] = (stats["n"] // every + 1) * every
            # go on while the images still to come could rescue the plan: up to ``tol`` gains
            remaining = sset.size - stats["n"]
            tol = min(remaining, math.ceil(self.early_tolerance * remaining)) + 2 * sset.scale
            net = (stats["cc"] - stats["rc"]) + sset.scale * (stats["cs"] - stats["rs"])
            flips = stats["fc"] + sset.scale ** 2 * stats["fs"]
            if len(sset.out_margin):  # (empty when the set holds a sample, which stands for them)
                # the images outside the set, predicted from the margin shrinkage seen so far
                out_net, out_flips = self._predicted_outside(sset, torch.cat(seen))
                net, flips = net + out_net, flips + out_flips
            return self.passes(criterion, net + tol, flips, z=self.set_z(sset))

        logits = sset.evaluator.run(plan, checkpoint=checkpoint, on_batch=on_batch)
        self.samples_run += len(logits)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.stage + ', ' if self.stage else ''}{self.computed} evaluations run",
                                     refresh=False)
        out_net, out_flips = 0.0, 0.0
        if stats["n"] == sset.size and sset.size < self.n:
            out_net, out_flips = self._predicted_outside(sset, logits)
        mismatches: list[int] = []
        if not early and stats["n"] == sset.size:
            diff = torch.nonzero(logits.argmax(1) != sset.ref_pred).flatten()
            mismatches = sset.indices[diff].tolist()
        return {"correct_covered": stats["cc"], "correct_sample": stats["cs"], "agree": stats["agree"],
                "flips_covered": stats["fc"], "flips_sample": stats["fs"], "n": stats["n"], "out_net": out_net, "out_flips": out_flips,
                "mismatches": mismatches}
