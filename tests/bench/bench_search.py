"""Benchmark ``search``: cost and compression of the per-layer search, against its peers in one run.

* Search cost in units of one fp32 pass over the same validation split (``search_seconds /
  fp32_pass_seconds``, both measured in the run) for resnet20 on CIFAR-10: the default
  strategy (target <= 30x) next to the dissertation's ``sieve`` strategy.
* Compression (element-weighted mean bits of weights + activations) of the *accurate* variant
  for lenet5 on Fashion-MNIST (target <= 4.0) and resnet20 (target <= 6.0), with its
  normalized test accuracy and *held-out verdict* (paired with fp32 on the test split, exact
  one-sided McNemar against the variant's target, :mod:`sieve.stats`), next to ``sieve`` and
  the best single uniform scalar format; the approximate variant must undercut the accurate
  one (resnet20: by >= 0.3 mean bits).
* Baselines side by side (issue 16): the default strategy's three variants, the ``sieve``
  strategy, the best uniform scalar format, the greedy search of every other format family
  (``--family channel|block|all``, :data:`FAMILY_RUNS`) and the uniform OCP MX formats
  (MXFP8 E4M3/E5M2, MXFP6 E3M2/E2M3, MXFP4 E2M1, k = 32, E8M0 scales, on every weight *and*
  activation: :func:`sieve.mx_baselines.ocp_baselines`), each with mean bits (scales counted)
  and its test verdict paired with fp32 (:mod:`sieve.stats`, accurate target); and by how many
  mean bits the cheapest searched accurate plan that holds on test beats the cheapest OCP MX
  format that holds (issue target: >= 1 bit).

Every search starts fresh (no replayed outcomes).  Writes ``out_dir/search.json`` and
``out_dir/search.md``; each search's plan.json and report.md go to ``out_dir/search/<model>-<strategy>/``.
Environment knobs (defaults in brackets): ``SIEVE_BENCH_LENET_VAL`` [all 5000],
``SIEVE_BENCH_RESNET_VAL`` [all 5000], ``SIEVE_BENCH_RESNET_TEST`` [all 5000],
``SIEVE_BENCH_RESNET_SIEVE_VAL`` [1000]: the dissertation's ``sieve`` strategy on resnet20 runs
on this prefix of the validation split (it evaluates every candidate of every tensor on the
whole split it is given, several hundred fp32 passes; on all 5,000 images that is hours on
one core) — its cost is still in units of one fp32 pass over the split it searched, and its
test accuracy on the whole test split.  ``SIEVE_BENCH_SEARCH_MODELS`` [lenet5,resnet20] and
``SIEVE_BENCH_SEARCH_STRATEGIES`` [greedy,sieve,uniform] run parts as separate jobs;
``search-<model>.json`` is re-assembled from every ``search/<model>-<strategy>/plan.json``
present, and search.json combines every ``search-<model>.json``.  ``SIEVE_BENCH_SEARCH_FAMILIES``
[the families other than the default] picks the family runs (``search/<model>-greedy-<family>/``;
empty: none); ``SIEVE_BENCH_OCP_MX`` [1] = 0 skips the OCP MX baselines (``search/<model>-ocp_mx.json``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from sieve.errors import SieveError
from sieve.io_utils import write_json, write_text

STRATEGIES = ("greedy", "sieve", "uniform")
TARGET_BITS = {"lenet5": 4.0, "resnet20": 6.0}
TARGET_COST = {"resnet20": 30.0}
TARGET_APPROX_GAP = {"resnet20": 0.3}  # approximate <= accurate - this many mean bits
# uniform OCP MX baselines (element format, k = 32, E8M0 scale): sieve.mx_baselines names -> row label
MX_BASELINES = {"mxfp8_e4m3": "MXFP8 E4M3", "mxfp8_e5m2": "MXFP8 E5M2", "mxfp6_e3m2": "MXFP6 E3M2",
                "mxfp6_e2m3": "MXFP6 E2M3", "mxfp4_e2m1": "MXFP4 E2M1"}
TARGET_MX_GAP = 1.0  # the best searched plan beats the best holding OCP MX format by this many mean bits


def _family_runs() -> list[str]:
    """Format families searched besides the default (the default is the ``greedy`` run)."""
    from sieve.search import DEFAULT_FAMILY, FAMILIES

    only = os.environ.get("SIEVE_BENCH_SEARCH_FAMILIES")
    wanted = [f for f in only.split(",") if f] if only is not None else list(FAMILIES)
    return [f for f in FAMILIES if f in wanted and f != DEFAULT_FAMILY]


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else default


def _cases(quick: bool) -> list[tuple[str, dict[str, int | None], int | None]]:
    """(model, validation images per strategy (None: all), test images)."""
    if quick:
        return [("lenet5", {s: 1000 for s in STRATEGIES}, 2000)]
    lenet_val = _env_int("SIEVE_BENCH_LENET_VAL", None)
    resnet_val = _env_int("SIEVE_BENCH_RESNET_VAL", None)
    cases = [("lenet5", {s: lenet_val for s in STRATEGIES}, None),
             ("resnet20", {"greedy": resnet_val, "uniform": resnet_val,
                           "sieve": _env_int("SIEVE_BENCH_RESNET_SIEVE_VAL", 1000)},
              _env_int("SIEVE_BENCH_RESNET_TEST", None))]
    only = os.environ.get("SIEVE_BENCH_SEARCH_MODELS")
    return [c for c in cases if not only or c[0] in only.split(",")]


def _strategies() -> list[str]:
    """In run order: the dissertation's (slowest) last, so the others finish first."""
    only = os.environ.get("SIEVE_BENCH_SEARCH_STRATEGIES")
    return [s for s in ("greedy", "uniform", "sieve") if not only or s in only.split(",")]


def _summary(doc: dict) -> dict:
    out = {"family": doc.get("family", "scalar"),
           "search_seconds": round(doc["search_seconds"], 1), "evaluations": doc["evaluations"],
           "cost_fp32_passes": round(doc["cost"]["search_fp32_passes"], 1),
           "fp32_pass_seconds": round(doc["cost"]["fp32_pass_seconds"], 3),
           "val_images": doc["cost"]["val_images"], "test_images": doc["cost"]["test_images"],
           "baseline": doc["baseline"], "variants": {}}
    for name, v in doc["variants"].items():
        out["variants"][name] = {k: v[k] for k in ("mean_bits", "mean_bits_weights", "mean_bits_activations",
                                                   "compression_ratio", "val_accuracy", "test_accuracy",
                                                   "normalized_val_accuracy", "normalized_test_accuracy",
                                                   "meets_target")}
        out["variants"][name]["meets_target_with_margin"] = v.get("meets_target_with_margin")
        t = v.get("test_verdict") or {}
        out["variants"][name]["test_verdict"] = {k: t.get(k) for k in ("gains", "losses", "p_worse", "holds")}
        rec = v.get("tightening")
        if rec is not None:
            out["variants"][name]["strictly_cheaper_than"] = {rec["stricter"]: rec["strictly_cheaper"]}
        out["variants"][name]["val_flips"] = v.get("val_flips")
        formats = sorted({t["format"] for t in v["tensors"]})
        out["variants"][name]["formats"] = formats if len(formats) <= 3 else f"{len(formats)} distinct"
    return out


def _compare(model_name: str, per: dict) -> dict:
    """Which strategy wins the accurate variant's bits, by how much, and at what cost."""
    bits = {s: per[s]["variants"]["accurate"]["mean_bits"] for s in STRATEGIES}
    valid = [s for s in STRATEGIES if per[s]["variants"]["accurate"]["meets_target"]]  # plain target on val
    peers = [s for s in ("sieve", "uniform") if s in valid] or ["sieve", "uniform"]
    best_peer = min(peers, key=lambda s: bits[s])
    return {
        "meets_val_target": valid,
        "normalized_val_accuracy": {s: per[s]["variants"]["accurate"]["normalized_val_accuracy"] for s in STRATEGIES},
        "normalized_test_accuracy": {s: per[s]["variants"]["accurate"]["normalized_test_accuracy"] for s in STRATEGIES},
        "accurate_mean_bits": bits,
        "target_mean_bits": TARGET_BITS.get(model_name),
        "greedy_meets_bits_target": bits["greedy"] <= TARGET_BITS.get(model_name, float("inf")),
        "greedy_normalized_test_accuracy": per["greedy"]["variants"]["accurate"]["normalized_test_accuracy"],
        "greedy_test_at_least_100pct": per["greedy"]["variants"]["accurate"]["normalized_test_accuracy"] >= 1.0,
        "winner": min(valid, key=lambda s: bits[s]) if valid else None,
        "greedy_vs_best_peer": f"{bits[best_peer] / bits['greedy']:.2f}x fewer bits than {best_peer}",
        "cost_fp32_passes": {s: per[s]["cost_fp32_passes"] for s in STRATEGIES},
        "cost_target": TARGET_COST.get(model_name),
        "sieve_cost_over_greedy": round(per["sieve"]["cost_fp32_passes"] / max(1e-9, per["greedy"]["cost_fp32_passes"]), 1),
        "holds_on_test": {s: per[s]["variants"]["accurate"]["test_verdict"]["holds"] for s in STRATEGIES},
        "greedy_approximate_mean_bits": per["greedy"]["variants"]["approximate"]["mean_bits"],
        "approximate_gap_bits": bits["greedy"] - per["greedy"]["variants"]["approximate"]["mean_bits"],
        "target_approximate_gap_bits": TARGET_APPROX_GAP.get(model_name),
    }


def collect(out_dir: Path, model_name: str) -> dict:
    """Re-assemble one model's comparison from the plan.json files of its three searches, its
    family runs and its OCP MX baselines (for parts run as separate processes, e.g. to finish
    within a deadline)."""
    import json

    per: dict = {}
    for s in STRATEGIES:
        path = out_dir / "search" / f"{model_name}-{s}" / "plan.json"
        per[s] = _summary(json.loads(path.read_text())) if path.exists() else None
    families = {}
    for path in sorted((out_dir / "search").glob(f"{model_name}-greedy-*/plan.json")):
        families[path.parent.name[len(f"{model_name}-greedy-"):]] = _summary(json.loads(path.read_text()))
    per["families"] = families
    mx = out_dir / "search" / f"{model_name}-ocp_mx.json"
    per["ocp_mx"] = json.loads(mx.read_text()) if mx.exists() else None
    if all(per[s] is not None for s in STRATEGIES):
        per["comparison"] = _compare(model_name, per)
    else:
        per["incomplete"] = [s for s in STRATEGIES if per[s] is None]
    per["versus_ocp_mx"] = versus_ocp_mx(per)
    write_json(out_dir / f"search-{model_name}.json", per)
    return per


def run(out_dir: Path, quick: bool) -> dict:
    from sieve import zoo
    from sieve.search import run_search
    from sieve.search.driver import check_family

    torch.set_num_threads(1)
    results: dict = {"models": {}, "skipped": {}}
    for model_name, vals, test in _cases(quick):
        for strategy in _strategies():
            try:
                model, data = zoo.load(model_name, val=vals[strategy], test=test)
            except SieveError as exc:
                results["skipped"][model_name] = str(exc)
                print(f"   skip {model_name}: {exc}", flush=True)
                break
            where = out_dir / "search" / f"{model_name}-{strategy}"
            shutil.rmtree(where / "cache", ignore_errors=True)  # fresh: cost must not include replays
            print(f"   {model_name} / {strategy} ...", flush=True)
            doc = run_search(model, data, model_name=model_name, strategy=strategy, out_dir=where,
                             progress=False, threads=1, family=check_family(None, strategy))
            _say(model_name, strategy, doc)  # (the model's comparison is collected from the plan files below)
        if model_name in results["skipped"]:
            continue
        for family in _family_runs():
            model, data = zoo.load(model_name, val=vals["greedy"], test=test)
            where = out_dir / "search" / f"{model_name}-greedy-{family}"
            shutil.rmtree(where / "cache", ignore_errors=True)
            print(f"   {model_name} / greedy, family {family} ...", flush=True)
            doc = run_search(model, data, model_name=model_name, strategy="greedy", family=family, out_dir=where,
                             progress=False, threads=1)
            _say(model_name, f"greedy, family {family}", doc)
        if os.environ.get("SIEVE_BENCH_OCP_MX", "1") != "0":
            model, data = zoo.load(model_name, val=vals["greedy"], test=test)
            print(f"   {model_name} / uniform OCP MX baselines ...", flush=True)
            write_json(out_dir / "search" / f"{model_name}-ocp_mx.json", measure_ocp_mx(model, data))
        if model_name not in results["skipped"]:
            results["models"][model_name] = collect(out_dir, model_name)
    return combine(out_dir, results)


def _say(model_name: str, what: str, doc: dict) -> None:
    summary = _summary(doc)
    acc = summary["variants"]["accurate"]
    print(f"   {model_name} / {what}: accurate {acc['mean_bits']:.2f} bits, normalized test "
          f"{acc['normalized_test_accuracy']:.2%}, cost {summary['cost_fp32_passes']}x fp32, "
          f"{summary['evaluations']} evaluations, {summary['search_seconds']} s", flush=True)


def measure_ocp_mx(model, data) -> dict:
    """The uniform OCP MX baselines on the test split (every weight and activation, k = 32), each
    with its mean bits and its paired verdict against fp32 for the accurate target."""
    from sieve.mx_baselines import ocp_baselines
    from sieve.search.context import TARGETS

    torch.set_num_threads(1)
    with torch.no_grad():
        return ocp_baselines(model.eval(), data.test.images, data.test.labels, target=TARGETS["accurate"],
                             names=tuple(MX_BASELINES))


def _searched_plans(per: dict) -> list[tuple[str, str, dict]]:
    """(label, variant, summary of the variant) of every searched plan of one model."""
    out = []
    runs = [("default", per.get("greedy"))] + [(f"family {f}", s) for f, s in (per.get("families") or {}).items()]
    for label, summary in runs:
        if summary is None:
            continue
        fam = summary.get("family", "scalar")
        for variant in ("accurate", "approximate"):
            out.append((f"{label} ({fam})" if label == "default" else label, variant, summary["variants"][variant]))
    return out


def versus_ocp_mx(per: dict) -> dict | None:
    """By how many mean bits the cheapest searched *accurate* plan that holds on test beats the
    cheapest uniform OCP MX format that holds on test (None until both exist)."""
    mx = per.get("ocp_mx")
    if not mx:
        return None
    holding_mx = [(r["mean_bits"], name) for name, r in mx.items() if r["test"]["holds"]]
    searched = [(v["mean_bits"], label) for label, variant, v in _searched_plans(per)
                if variant == "accurate" and (v.get("test_verdict") or {}).get("holds")]
    best_mx = min(holding_mx) if holding_mx else None
    best = min(searched) if searched else None
    gap = None if best is None or best_mx is None else best_mx[0] - best[0]
    return {"best_searched": None if best is None else {"plan": best[1], "mean_bits": best[0]},
            "best_ocp_mx": None if best_mx is None else {"format": best_mx[1], "mean_bits": best_mx[0]},
            "gap_mean_bits": gap, "target_gap_mean_bits": TARGET_MX_GAP,
            "meets_gap": None if gap is None else gap >= TARGET_MX_GAP - 1e-9}


def combine(out_dir: Path, results: dict | None = None) -> dict:
    """search.json / search.md over every model measured so far (models may run as separate jobs)."""
    import json

    results = results or {"models": {}, "skipped": {}}
    for path in sorted(out_dir.glob("search-*.json")):
        name = path.stem[len("search-"):]
        if name not in results["models"]:
            results["models"][name] = json.loads(path.read_text())
    write_json(out_dir / "search.json", results)
    write_text(out_dir / "search.md", _markdown(results))
    return results


def _baselines(results: dict) -> list[str]:
    """One row per plan of the same run: the default's variants, ``sieve``, the best uniform
    scalar format, the other format families' accurate/approximate plans and the uniform OCP MX
    formats — bits beside the test verdict; then the margin over the best holding OCP MX format."""
    lines = ["## Baselines side by side", "",
             "Test verdict: paired with fp32 on the test split; p = exact one-sided McNemar p-value of \"worse than "
             "the target\" (its null shifted by the images the target allows to lose); holds = not significantly "
             "below the target at 5 % (`sieve/stats.py`).", "",
             "| model | plan | target | mean bits | normalized test | test gains / losses | p | holds on test |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    rows = [("greedy", v, f"default ({v})") for v in ("exact", "accurate", "approximate")]
    rows += [("sieve", "accurate", "sieve strategy (accurate)"), ("uniform", "accurate", "best uniform scalar (accurate)")]
    for model, per in results["models"].items():
        for strategy, variant, label in rows:
            if per.get(strategy) is None:
                lines.append(f"| {model} | {label} | {variant} | (did not finish) | | | | |")
                continue
            lines.append(_row(model, label, variant, per[strategy]["variants"][variant]))
        for family, summary in (per.get("families") or {}).items():
            for variant in ("accurate", "approximate"):
                lines.append(_row(model, f"greedy, family {family} ({variant})", variant, summary["variants"][variant]))
        mx = per.get("ocp_mx")
        for name, label in MX_BASELINES.items():
            if not mx or name not in mx:
                lines.append(f"| {model} | uniform {label} (k = 32) | accurate | pending: block-scaled formats not "
                             "measured in this run (SIEVE_BENCH_OCP_MX=0 or not run yet) | | | | |")
                continue
            r, t = mx[name], mx[name]["test"]
            lines.append(f"| {model} | uniform {label} (k = 32, weights + activations) | accurate | "
                         f"**{r['mean_bits']:.2f}** | {_pct(t['normalized_accuracy'])} | +{t['gains']} / -{t['losses']} | "
                         f"{t['p_worse']:.3g} | {'yes' if t['holds'] else '**NO**'} |")
    gaps = [(model, per.get("versus_ocp_mx")) for model, per in results["models"].items()]
    gaps = [(m, g) for m, g in gaps if g]
    if gaps:
        lines += ["", f"Best searched accurate plan holding on test vs the best uniform OCP MX format holding on test "
                      f"(target: >= {TARGET_MX_GAP:g} mean bit fewer):", ""]
        for model, g in gaps:
            if g["gap_mean_bits"] is None:
                what = ("no OCP MX format holds on test" if g["best_ocp_mx"] is None
                        else "no searched accurate plan holds on test")
                lines.append(f"- **{model}**: {what}.")
                continue
            lines.append(f"- **{model}**: {g['best_searched']['plan']} {g['best_searched']['mean_bits']:.2f} mean bits vs "
                         f"{MX_BASELINES.get(g['best_ocp_mx']['format'], g['best_ocp_mx']['format'])} "
                         f"{g['best_ocp_mx']['mean_bits']:.2f}: **{g['gap_mean_bits']:.2f}** mean bits fewer "
                         f"({'met' if g['meets_gap'] else 'MISSED'}).")
    return lines


def _row(model: str, label: str, variant: str, v: dict) -> str:
    t = v.get("test_verdict") or {}
    verdict = ("| - | - | -" if t.get("holds") is None else
               f"| +{t['gains']} / -{t['losses']} | {t['p_worse']:.3g} | {'yes' if t['holds'] else '**NO**'}")
    return f"| {model} | {label} | {variant} | **{v['mean_bits']:.2f}** | {_pct(v['normalized_test_accuracy'])} {verdict} |"


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _markdown(results: dict) -> str:
    lines = ["# Search benchmark", "",
             "Targets: accurate = normalized accuracy >= 100 %, approximate >= 99.9 %, exact = every prediction "
             "equal to fp32. `greedy` and `uniform` accept a plan only if it meets the target on validation "
             "*with the generalization margin* (net gain + slack >= z * sqrt(gains + losses), z = `margin_z`, "
             "see `sieve/search/context.py`); `sieve` (the dissertation's) uses the plain target per tensor and "
             "its combined plans are measured honestly. \"val ok\" = plain target met on validation, "
             "\"margin\" = met with the margin; the test split is only reported, never searched. "
             "Cost = search wall time / one fp32 pass over the same validation split (the split that "
             "strategy searched), single thread, fresh cache.", "",
             "| model | strategy | val imgs | variant | mean bits (w / a / all) | normalized val | normalized test "
             "| val flips | val ok / margin | cost (fp32 passes) | evaluations | seconds |",
             "|---|---|---:|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for model, per in results["models"].items():
        runs = [(s, per.get(s)) for s in STRATEGIES]
        runs += [(f"greedy, family {f}", summary) for f, summary in (per.get("families") or {}).items()]
        for s, run in runs:
            if run is None:
                lines.append(f"| {model} | {s} | | (did not finish) | | | | | | | | |")
                continue
            if s == "greedy":
                s = f"greedy (default, family {run.get('family', 'scalar')})"
            for vname, v in run["variants"].items():
                margin = v.get("meets_target_with_margin")
                lines.append(f"| {model} | {s} | {run['val_images']} | {vname} | {v['mean_bits_weights']:.2f} / "
                             f"{v['mean_bits_activations']:.2f} / **{v['mean_bits']:.2f}** | {v['normalized_val_accuracy']:.2%} | "
                             f"**{v['normalized_test_accuracy']:.2%}** | {v.get('val_flips', '')} | "
                             f"{'yes' if v['meets_target'] else 'no'} / {'-' if margin is None else ('yes' if margin else 'no')} | "
                             f"{run['cost_fp32_passes']} | {run['evaluations']} | {run['search_seconds']} |")
    lines += ["", *_baselines(results), "", "## Verdict", ""]
    for model, per in results["models"].items():
        if "comparison" not in per:
            lines.append(f"- **{model}**: incomplete (no result for {', '.join(per.get('incomplete', []))})")
            continue
        c = per["comparison"]
        lines.append(f"- **{model}**: accurate mean bits greedy {c['accurate_mean_bits']['greedy']:.2f} "
                     f"(target <= {c['target_mean_bits']}, {'met' if c['greedy_meets_bits_target'] else 'MISSED'}; "
                     f"normalized test {c['greedy_normalized_test_accuracy']:.2%}, target >= 100 %: "
                     f"{'met' if c['greedy_test_at_least_100pct'] else 'MISSED'}), sieve {c['accurate_mean_bits']['sieve']:.2f}, "
                     f"uniform {c['accurate_mean_bits']['uniform']:.2f}"
                     + "".join(f" ({s} misses its target: normalized val {c['normalized_val_accuracy'][s]:.2%}, "
                               f"test {c['normalized_test_accuracy'][s]:.2%})"
                               for s in ("sieve", "uniform") if s not in c.get("meets_val_target", STRATEGIES))
                     + f": fewest bits among plans meeting the target {c['winner']}, greedy {c['greedy_vs_best_peer']}. "
                     f"Cost greedy {c['cost_fp32_passes']['greedy']}x, sieve {c['cost_fp32_passes']['sieve']}x, "
                     f"uniform {c['cost_fp32_passes']['uniform']}x fp32 passes"
                     + (f" (target <= {c['cost_target']}x: {'met' if c['cost_fp32_passes']['greedy'] <= c['cost_target'] else 'MISSED'})"
                        if c.get("cost_target") else "") + "."
                     + (f" Accurate holds on test: {'yes' if c['holds_on_test']['greedy'] else 'NO'}."
                        if "holds_on_test" in c else "")
                     + (f" Approximate {c['greedy_approximate_mean_bits']:.2f} bits, {c['approximate_gap_bits']:.2f} below"
                        " accurate" + (f" (target >= {c['target_approximate_gap_bits']}: "
                                       f"{'met' if c['approximate_gap_bits'] >= c['target_approximate_gap_bits'] - 1e-9 else 'MISSED'})"
                                       if c.get("target_approximate_gap_bits") else "") + "."
                        if "approximate_gap_bits" in c else ""))
    for model, why in results["skipped"].items():
        lines.append(f"- {model}: skipped ({why})")
    return "\n".join(lines) + "\n"
