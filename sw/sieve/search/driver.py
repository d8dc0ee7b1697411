"""Run a search end to end: fp32 reference, strategy, honest measurement, plan.json and report.

The search sees only the validation split; the test split is touched once per variant at the
end, to report held-out accuracy.  Outputs are written atomically (nothing half-written).

``run_search`` is a library call: it runs on the torch threads it is given and hands the
caller's process back as it found it (thread count, grad mode, default dtype, NumPy error
state, warning filters, the model's train/eval flags), also when the search raises.  Every
phase shows a labelled bar with a total (:mod:`sieve.search.progress`); results that mean less
than they seem (splits too small for the targets, a model that gets nothing right) raise a
:class:`SearchWarning` and are listed under ``warnings`` in plan.json and report.md.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..batch_memory import memory_batch_size, run_batch_size
from ..device import all_cores, check_batch_size, resolve_device
from ..blockfmt import is_layout_format
from ..errors import SieveError
from ..prefix_store import PrefixStore, default_cache_mem, parse_size
from ..io_utils import write_json
from .. import stats
from ..plan_io import SCHEMA_VERSION, data_record, write_plan
from ..qeval import QUANTIZABLE, PrefixEvaluator
from .context import MARGIN_Z, TARGETS, VARIANTS, SearchContext, min_correct_for_allowance
from .evalcache import digest
from .formats import FAMILIES, bits_per_element, plan_bits
from .greedy import SAME_TARGET, search_greedy
from .progress import Progress
from .sieve_strategy import search_sieve
from .uniform import search_uniform

__all__ = ["STRATEGIES", "DEFAULT_STRATEGY", "DEFAULT_FAMILY", "FAMILIES", "FAMILY_CHOICES", "resolve_family", "run_search", "model_digest", "SearchWarning", "all_cores",
           "check_out_dir"]

STRATEGIES: dict[str, Callable] = {"greedy": search_greedy, "sieve": search_sieve, "uniform": search_uniform}
DEFAULT_STRATEGY = "greedy"
#: The format family ``sieve search`` (and ``make search``, the benchmark's default run) draws
#: from when ``--family`` is not given: ``auto``, because no single family is better on both
#: benchmark models.  Measured with this code (greedy, 5,000 val images, test split held out,
#: ``--threads 1``; accurate variant's mean bits, every scale and bias counted, and whether it
#: holds on test):
#:
#: ============  ===================  ===========================
#: family        lenet5 (F-MNIST)     resnet20 (CIFAR-10)
#: ============  ===================  ===========================
#: scalar        5.10, holds          **5.90**, holds (26 fp32 passes)
#: channel       5.07, holds          6.24, holds (29 fp32 passes)
#: block         **3.46**, holds      6.65, holds (36 fp32 passes)
#: all           4.34, holds          6.04, holds (34 fp32 passes)
#: ============  ===================  ===========================
#:
#: (``make bench`` at d0611ab, ``build/bench/search.md``.)
#: Block scales win on lenet5 (its 400k-weight ip1 layer takes a 3-bit element + E8M0 scale per
#: 32 = 3.25 bits) but lose on resnet20, whose convs reduce over only 3-64 input channels: a
#: k = 32 block along 16 channels already costs 0.5 scale bits per element (3 channels: 2.7),
#: and its activations (41 % of its elements) stay scalar.  ``all`` can pick per tensor, but its
#: denser ladder costs more walks (lenet5: 23 fp32 passes against block's 12; resnet20: 851
#: evaluations against scalar's 539) and its greedy walks, deciding one tensor at a time, end
#: above the best single family on both models; so no single family is the best default for both.
#:
#: So ``sieve search`` defaults to ``auto`` (:func:`resolve_family`), which turns the measurement
#: into a rule: ``block`` when most weight elements sit in tensors whose blocked axis (input
#: channels / features) spans at least ``AUTO_BLOCK_AXIS`` elements — four k = 32 blocks, so the
#: E8M0 scale costs its 0.25 bit per element and no padding — else ``scalar``.  lenet5 (ip1 and
#: ip2 reduce over 800 and 500 features: 95 % of its weights) takes ``block``; resnet20 (3-64
#: channels) ``scalar``; each gets the family that measured best on it.
DEFAULT_FAMILY = "auto"
FAMILY_CHOICES = (*FAMILIES, "auto")
AUTO_BLOCK_AXIS = 128
FAMILY_STRATEGIES = ("greedy",)  # strategies that search the layout families (the others are scalar)
ALGORITHM_VERSION = "10"  # bump when a strategy changes, so stale cached outcomes are not replayed


class SearchWarning(UserWarning):
    """A search that runs but whose result means less than it seems (module docstring)."""


def check_out_dir(out: str | Path) -> Path:
    """``out`` as a Path, refused in one line when it, or a folder it would sit in, is a file
    (checked before any work, so that nothing is loaded or written for nothing)."""
    out = Path(out)
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise SieveError(f"output directory {out}: {path} is a file, not a directory;"
                                 " pass --out a directory (it is created if missing)")
            break
    return out


def check_family(family, strategy: str = DEFAULT_STRATEGY) -> str:
    """``family`` (None: :data:`DEFAULT_FAMILY` for a strategy that searches the families, else
    ``scalar``), refused in one line when unknown or when the strategy searches scalar formats only."""
    if family is None:
        family = DEFAULT_FAMILY if strategy in FAMILY_STRATEGIES else "scalar"
    if family not in FAMILY_CHOICES:
        raise SieveError(f"unknown format family {family!r} (--family); choose one of: {', '.join(FAMILY_CHOICES)}")
    if family == "auto" and strategy not in FAMILY_STRATEGIES:
        family = "scalar"
    if family != "scalar" and strategy not in FAMILY_STRATEGIES:
        raise SieveError(f"--family {family} needs --strategy {' or '.join(FAMILY_STRATEGIES)}; the {strategy}"
                         " strategy searches scalar formats only (use --family scalar)")
    return family


def resolve_family(family: str, model: torch.nn.Module) -> str:
    """The concrete family ``family`` stands for on ``model``: itself, or for ``auto`` the rule
    of :data:`DEFAULT_FAMILY` (``block`` when at least half of the conv/linear weight elements
    lie in tensors whose blocked axis is >= :data:`AUTO_BLOCK_AXIS` long, else ``scalar``)."""
    if family != "auto":
        return family
    long_axis = total = 0
    for m in model.modules():
        if isinstance(m, QUANTIZABLE):
            total += m.weight.numel()
            if m.weight.dim() >= 2 and m.weight.shape[1] >= AUTO_BLOCK_AXIS:
                long_axis += m.weight.numel()
    return "block" if total and 2 * long_axis >= total else "scalar"


def _check_threads(threads) -> int:
    if threads is None:
        return torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise SieveError(f"threads (--threads) must be a whole number >= 1, got {threads!r}")
    return threads


@contextlib.contextmanager
def _caller_state_kept(model: torch.nn.Module, threads: int):
    """Run with ``threads`` torch threads, no autograd and float32 as the default dtype; give the
    caller back every process-wide setting (and the model's train/eval flags) as found."""
    saved_threads, saved_dtype = torch.get_num_threads(), torch.get_default_dtype()
    modes = [(m, m.training) for m in model.modules()]
    with warnings.catch_warnings(), np.errstate(), torch.no_grad():
        try:
            torch.set_num_threads(threads)
            torch.set_default_dtype(torch.float32)
            yield
        finally:
            torch.set_num_threads(saved_threads)
            torch.set_default_dtype(saved_dtype)
            for m, training in modes:
                m.training = training


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


def _correct(model, plan, images, labels, batch_size, bar, device=None, pool=None) -> np.ndarray:
    """Per image, whether ``model`` under ``plan`` predicts it right (for the paired test
    verdict, :mod:`sieve.stats`); ``bar`` advances per batch of images.  With a Ray ``pool``
    the images are sharded across its actors."""
    ev = (PrefixEvaluator(model, images, batch_size=batch_size, max_states=0, device=device) if pool is None
          else pool.evaluator(images, batch_size, max_states=0))
    pred = ev.run(plan, on_batch=lambda b, out: bar.update(len(out)) or True).argmax(1)
    return (pred == labels).numpy()


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _split_warnings(ctx: SearchContext, test_images: int, margin_z: float) -> list[str]:
    """What a too small split (or a model that gets nothing right) makes of the targets."""
    n, correct = ctx.n, ctx.base_correct
    if correct == 0:
        return [f"the fp32 model gets none of the {n:,} validation images right: normalized accuracy is"
                " undefined (reported as n/a) and the targets only ask for agreement with fp32;"
                " check the weights (--weights) and that the data and its labels are the model's (--data)"]
    found = []
    need = min_correct_for_allowance(margin_z)
    accuracy = correct / n
    if correct < need:
        found.append(
            f"the validation split has {n:,} image{'s' if n != 1 else ''} ({correct:,} right in fp32): the margin"
            f" rule (z = {margin_z:g}) needs {need:,} fp32-correct validation images before the approximate"
            f" target's {1 - TARGETS['approximate']:.1%} allowance can excuse a single lost image, so below that"
            f" approximate is accurate under another name and every target (exact too) rests on these few"
            f" images; use --val >= {math.ceil(need / accuracy):,} ({need:,} right at this model's fp32"
            f" accuracy of {accuracy:.1%})")
    resolve = math.ceil(1.0 / (1.0 - TARGETS["approximate"]) - 1e-6)  # fp32-correct images to see 0.1 %
    if test_images * accuracy < resolve:
        found.append(
            f"the test split has {test_images:,} image{'s' if test_images != 1 else ''}: normalized held-out"
            f" accuracy moves in steps of about {1 / (test_images * accuracy):.2%} (one of the ~"
            f"{test_images * accuracy:,.0f} images fp32 gets right at its validation accuracy of {accuracy:.1%}),"
            f" coarser than the approximate target's {1 - TARGETS['approximate']:.1%}; use --test >="
            f" {math.ceil(resolve / accuracy):,} ({resolve:,} right)")
    return found


LOOSER = {"accurate": "exact", "approximate": "accurate"}  # each variant and the stricter one it should undercut
TIGHTENING_LIMIT = 40  # candidates listed per variant (the cheapest first)


def tightening_record(variant: str, plans: dict, trace: list[dict], infos) -> dict:
    """Whether ``variant``'s plan is strictly cheaper than the stricter variant's and, from the
    strategy's trace, the candidates it tried with fewer mean bits than its final plan, with
    their validation results (``net``: estimated change of the correct count on the whole
    split, ``flips``: gains + losses; absent when rejected early): why no cheaper plan passed."""
    stricter = LOOSER[variant]
    bits = plan_bits(plans[variant], infos)["mean_bits"]
    stricter_bits = plan_bits(plans[stricter], infos)["mean_bits"]
    tried = [{k: e[k] for k in ("tensor", "format", "mean_bits", "set", "evaluated", "passed", "net", "flips") if k in e}
             for e in trace if e.get("variant") == variant and e.get("format") != "verify"
             and e.get("mean_bits", bits) < bits - 1e-9]
    tried.sort(key=lambda e: (-e["mean_bits"], e["tensor"]))
    return {"stricter": stricter, "stricter_mean_bits": stricter_bits, "strictly_cheaper": bits < stricter_bits - 1e-9,
            # the strategy took the stricter plan unsearched: the two targets are one on this split
            # (approximate's allowance rounds down to 0 images; sieve.search.greedy.identical_targets)
            "same_target": any(e.get("variant") == variant and e.get("format") == SAME_TARGET for e in trace),
            "cheaper_candidates_tried": len(tried), "cheaper_candidates": tried[:TIGHTENING_LIMIT]}


def run_search(model: torch.nn.Module, dataset, *, model_name: str, strategy: str = DEFAULT_STRATEGY,
               out_dir: str | Path | None = None, batch_size: int = 500, progress: bool = True,
               log: Callable[[str], None] | None = None, report: bool = True, resume: bool = True,
               threads: int | None = None, margin_z: float = MARGIN_Z, device="auto", ray: str | None = None,
               ray_workers: int | None = None, cache_mem: int | str | None = None,
               family: str = "scalar") -> dict:
    """Search a plan for ``model`` on ``dataset.val``; return the plan.json document.

    ``margin_z``: the generalization margin of the accurate/approximate targets (see
    :mod:`sieve.search.context`; 0 = the plain validation target).  ``threads``: torch threads
    during the search (default: the caller's current setting); restored afterwards.  ``device``:
    ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (a GPU when torch sees one), ``batch_size`` images
    per forward pass at most (fewer when one batch's largest activation would pass 128 MB,
    :mod:`sieve.batch_memory`); neither changes the plan (rounding is bit-exact on every device).  ``ray``
    (``auto``, ``local`` or ``HOST:PORT``): shard the validation and test images across
    ``ray_workers`` Ray actors (default: one per CPU, or GPU, of the cluster); same plan.
    ``cache_mem`` (bytes, or ``2G``/``512M``; default a quarter of the available RAM): the bound
    on the prefix cache's RAM (split across the Ray actors); states beyond it are spilled to
    ``out_dir/cache/prefix`` (exact) and read back batch by batch (:mod:`sieve.prefix_store`).  ``log``
    receives one line at a time, written with the progress bars cleared.
    ``family`` (``scalar``, ``channel``, ``block``, ``all`` or ``auto``: :func:`resolve_family`; default ``scalar``, so library
    callers such as the pruning comparison keep their plans; ``sieve search`` and the benchmark
    default to :data:`DEFAULT_FAMILY`):
    the formats each tensor may take (:func:`sieve.search.formats.family_ladder`): scalar
    custom floats, per-output-channel exponent biases (weights), OCP-MX-like block scales
    (weights; activations stay scalar, :data:`sieve.search.greedy.BLOCK_ACTIVATIONS`), or all of
    them; mean bits count every scale and bias.  Only the greedy strategy searches the layout
    families.  The family is part of the search's identity (its cached outcomes) and of plan.json.
    Writes ``out_dir/plan.json``, ``report.md`` and plots when ``out_dir`` is given, and keeps
    evaluation outcomes under ``out_dir/cache/`` so that an interrupted run resumes exactly.
    """
    if strategy not in STRATEGIES:
        raise SieveError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    requested = check_family(family, strategy)
    family = resolve_family(requested, model)
    threads = _check_threads(threads)
    cache_mem = default_cache_mem() if cache_mem is None else parse_size(cache_mem)
    device = resolve_device(device)
    batch_size = check_batch_size(batch_size)
    out = check_out_dir(out_dir) if out_dir is not None else None
    _check_split(dataset.val, "val")
    _check_split(dataset.test, "test")
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise SieveError(f"weights of {name} hold NaN or Inf; the checkpoint is corrupt")
    with _caller_state_kept(model, threads):
        model.eval()  # (the caller's train/eval flags come back on exit)
        # ImageNet-size models: fewer images per batch, so one batch's activations stay bounded
        batch_size = memory_batch_size(model, tuple(dataset.val.images.shape[1:]), batch_size)
        pool = None
        if ray is not None:
            from .ray_eval import RayPool  # imports Ray: only when asked for

            pool = RayPool(ray, model, workers=ray_workers, device=str(device), cache_mem=cache_mem)
        store = PrefixStore(cache_mem, None if out is None else out / "cache" / "prefix")
        try:
            doc = _search(model, dataset, model_name, strategy, out, batch_size, Progress(progress, log),
                          report, resume, margin_z, device, pool, store, family, requested)
            return doc
        finally:
            store.close()
            if pool is not None:
                pool.close()


def _search(model, dataset, model_name, strategy, out, batch_size, show: Progress, report, resume, margin_z,
            device, pool=None, store=None, family: str = "scalar", requested: str = "scalar") -> dict:
    val, test = dataset.val, dataset.test
    # the family is part of the identity (a scalar search keeps the identity it always had, so
    # its cached outcomes still replay)
    identity = digest(ALGORITHM_VERSION, model_name, strategy, margin_z, model_digest(model),
                      val.images.numpy().tobytes(), val.labels.numpy().tobytes(),
                      *(() if family == "scalar" else (f"family={family}",)))
    cache_path = None
    if out is not None and resume:
        cache_path = out / "cache" / f"{strategy}{'' if family == 'scalar' else '-' + family}-{identity[:16]}.jsonl"
    n_test = int(test.labels.numel())

    # early rejection is judged every ``batch_size`` images; the CPU runs cache-sized batches
    run_batch = run_batch_size(model, tuple(val.images.shape[1:]), batch_size, device)
    t0 = time.perf_counter()
    ctx = SearchContext(model, val.images, val.labels, identity=identity, cache_path=cache_path,
                        batch_size=run_batch, early_every=batch_size, progress=show, margin_z=margin_z,
                        device=device, store=store, family=family,
                        evaluator_factory=None if pool is None else lambda idx, bs: pool.evaluator(val.images[idx], bs))
    found_warnings = _split_warnings(ctx, n_test, margin_z)
    for message in found_warnings:
        warnings.warn(message, SearchWarning, stacklevel=3)  # points at the caller of run_search
    ctx.search_label = f"search {model_name} ({strategy}{'' if family == 'scalar' else ', ' + family})"
    try:
        plans, trace = STRATEGIES[strategy](ctx, log=show.say if show.log is not None else None)
    finally:
        ctx.close_steps()
    with show.bar("final check (val)", len(VARIANTS), "plan") as bar:
        measured = {}
        for v in VARIANTS:
            measured[v] = ctx.evaluate(plans[v], ctx.full, "measure", early=False)
            bar.update()
    # the search's own time: without the extra fp32 pass that only times the unit of cost
    # (the search itself needs the first fp32 pass, which also takes the histograms)
    seconds = time.perf_counter() - t0 - ctx.fp32_pass_seconds

    with show.bar("fp32 test", n_test, "img") as bar:
        base_test_ok = _correct(ctx.device_model, {}, test.images, test.labels, run_batch, bar, device, pool)
    base_test_correct = int(base_test_ok.sum())
    show.say(f"fp32 test accuracy {base_test_correct / n_test:.2%} ({base_test_correct:,} of {n_test:,} images)")
    with show.bar(f"test ({', '.join(VARIANTS)})", len(VARIANTS) * n_test, "img") as bar:
        test_ok = {v: _correct(ctx.device_model, plans[v], test.images, test.labels, run_batch, bar, device, pool)
                   for v in VARIANTS}
    test_correct = {v: int(ok.sum()) for v, ok in test_ok.items()}
    variants = {}
    for v in VARIANTS:
        plan = plans[v]
        bits = plan_bits(plan, ctx.infos)
        # held out: paired with fp32, "not significantly below the target" (sieve.stats)
        verdict = stats.verdict(stats.compare(base_test_ok, test_ok[v]), TARGETS[v])
        variants[v] = {
            "val_accuracy": measured[v].correct / ctx.n,
            "test_accuracy": test_correct[v] / n_test,
            "normalized_val_accuracy": ctx.normalized(measured[v].correct),
            "normalized_test_accuracy": _ratio(test_correct[v], base_test_correct),
            "test_verdict": verdict,
            "holds_on_test": verdict["holds"],
            **({"tightening": tightening_record(v, plans, trace, ctx.infos)} if v in LOOSER else {}),
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
                         "bits": plan[i.name].width if i.name in plan else 32,
                         # a layout's real bits (scales / biases on top of the codes); scalar
                         # entries keep the contract's five keys
                         **({"bits_per_element": bits_per_element(plan[i.name], i)}
                            if is_layout_format(plan.get(i.name)) else {})}
                        for i in ctx.infos],
        }
    doc = {
        "schema_version": SCHEMA_VERSION,
        "model": model_name,
        "dataset": getattr(dataset, "name", "unknown"),
        **data_record(dataset),      # input shape and preprocessing, for export
        "strategy": strategy,
        "family": family,
        **({"family_requested": requested} if requested != family else {}),
        "baseline": {"val_accuracy": ctx.base_correct / ctx.n, "test_accuracy": base_test_correct / n_test},
        "variants": variants,
        "search_seconds": seconds,
        "evaluations": ctx.evaluations,
        "margin_z": margin_z,
        # the approximate variant's own margin when the strategy gave it one (greedy: 0, the plain target)
        "approximate_margin_z": ctx.margin_for("approximate"),
        "cost": {
            "fp32_pass_seconds": ctx.fp32_pass_seconds,
            "search_fp32_passes": seconds / ctx.fp32_pass_seconds if ctx.fp32_pass_seconds else None,
            "evaluations_run": ctx.computed,
            "evaluations_replayed": ctx.evaluations - ctx.computed,
            "val_images": ctx.n,
            "test_images": n_test,
        },
        "warnings": found_warnings,
    }
    # (before plan.json is written, so that the file carries them too)
    if store is not None:
        doc["cost"]["prefix_cache"] = store.to_json()
    if pool is not None:
        doc["cost"]["ray"] = {"workers": pool.workers, "evaluations": pool.evaluations,
                              "restarts": pool.restarts, "overhead_ms_per_evaluation": pool.overhead_ms()}
    if out is not None:
        with show.bar("report", 5 if report else 2, "file") as bar:
            write_plan(out / "plan.json", doc)
            bar.update()
            write_json(out / "search_trace.json", {"trace": trace,
                                                   "histograms": {k: h.to_json() for k, h in ctx.histograms.items()}})
            bar.update()
            if report:
                from ..report.search_report import write_report

                write_report(out, doc, ctx.histograms, ctx.points, done=bar.update)
    return doc
