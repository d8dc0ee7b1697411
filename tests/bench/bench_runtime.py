"""Speculative runtime on the CIFAR-10 ResNet pool (ResNet-20/32/44/56, JPEG test set).

Measured side by side in one run, every figure on the held-out (odd) half after calibrating on
the even half:

* the deployed cascade (pair / policy chosen on calibration by 2-fold CV) — held-out accuracy
  relative to ResNet-56 alone (criterion >= 100 %), real executor throughput interleaved with
  ResNet-56 alone (criterion >= 2.2x; CPU-time and wall-clock both reported), latency mean / p99
  under Poisson offered load vs ResNet-56 alone at the same rates (simulation driven by the
  service times measured here);
* per-class vs single threshold recovery at equal accuracy, and the probes' FN / FP rates;
* the flexible ensemble's latency vs the full ensemble at <= 0.5 pt held-out accuracy drop;
* the SIEVE selector's energy / latency vs cloud-only and device-only per network.

Logits are cached under build/cache/logits, so a second run only re-measures time.
Reproduce: ``python -m tests.bench.run --only runtime`` (or ``make bench``).
"""

from __future__ import annotations

from pathlib import Path

from sieve.cache import shared_path
from sieve.io_utils import write_json, write_text

POOL = "resnet20,resnet32,resnet44,resnet56"


def run(out_dir: Path, quick: bool = False) -> dict:
    data = shared_path("data", "cifar10-test-jpeg.tar")
    if not data.is_file() or not list(shared_path("models", "cifar10-resnet").glob("resnet56-*.th")):
        result = {"skipped": f"needs {data} and the CIFAR-10 ResNet checkpoints in ../shared"}
        write_json(Path(out_dir) / "runtime.json", result)
        return result
    from sieve.runtime.ensemble import run_ensemble_study
    from sieve.runtime.report import write_cascade, write_ensemble, write_selector
    from sieve.runtime.selector import run_selector_study
    from sieve.runtime.sources import load_pool, parse_pool
    from sieve.runtime.study import run_study

    out = Path(out_dir)
    pool = load_pool(parse_pool(POOL), str(data), threads=1)
    cas = run_study(pool, target=1.0, batch_size=500, reps=2 if quick else 5,
                    throughput_images=1000 if quick else 2500)
    write_cascade(cas, out / "runtime-cascade")
    ens = run_ensemble_study(pool, max_drop=0.005, points=10 if quick else None)
    write_ensemble(ens, out / "runtime-ensemble")
    sel = run_selector_study(pool)
    write_selector(sel, out / "runtime-selector")

    dep = cas["deployed"]
    tput = cas["throughput"]
    rows = cas["load"]["rows"]
    det = cas["detector"]
    pc = next(v for v in det["variants"] if v["probe"] == "max_softmax" and not v["combine"] and v["rule"] == "equal_step")
    single = next(v for v in det["variants"] if v["probe"] == "max_softmax" and not v["combine"] and v["rule"] == "single")
    best = ens["best_within_drop"]
    lte = next(r for r in sel["rows"] if r["network"] == "LTE")
    result = {
        "pool": cas["pool"], "reference": cas["reference"], "deployed": dep["name"],
        "test_accuracy": dep["test_accuracy"], "reference_test_accuracy": dep["reference_test_accuracy"],
        "relative_accuracy": dep["relative_accuracy"],
        "speedup_cpu": tput["cpu"]["speedup"], "speedup_wall": tput["wall"]["speedup"],
        "speedup_cpu_median": tput["cpu"]["speedup_median"], "speedup_wall_median": tput["wall"]["speedup_median"],
        "modelled_speedup": dep["modelled_speedup"],
        "throughput_images_per_s": {"cascade_cpu": tput["cpu"]["cascade_images_per_s"],
                                    "resnet56_cpu": tput["cpu"]["big_images_per_s"],
                                    "cascade_wall": tput["wall"]["cascade_images_per_s"],
                                    "resnet56_wall": tput["wall"]["big_images_per_s"]},
        "load": [{"load": r["load"], "cascade_mean_ms": r["cascade"]["mean_ms"], "cascade_p99_ms": r["cascade"]["p99_ms"],
                  "big_mean_ms": r["big"]["mean_ms"], "big_p99_ms": r["big"]["p99_ms"]} for r in rows],
        "detector_pair": f"{det['little']}->{det['big']}",
        "per_class_vs_single": {
            "calibrated_to_same_target": {
                "single": {"test_accuracy": single["test"]["accuracy"], "recovery": single["test"]["recovery_rate"]},
                "per_class": {"test_accuracy": pc["test"]["accuracy"], "recovery": pc["test"]["recovery_rate"]}},
            "equal_test_accuracy": det["equal_accuracy"]},
        "probe_rates": [{"probe": v["probe"], "combine": v["combine"], "rule": v["rule"],
                         "fn": v["test"]["false_negative_rate"], "fp": v["test"]["false_positive_rate"],
                         "recovery": v["test"]["recovery_rate"], "accuracy": v["test"]["accuracy"]}
                        for v in det["variants"]],
        "ensemble": {"full_accuracy": ens["full"]["test_accuracy"], "full_ms": 1e3 * ens["full"]["test_latency_s"],
                     "flexible_accuracy": best["test_accuracy"] if best else None,
                     "flexible_ms": 1e3 * best["test_latency_s"] if best else None,
                     "latency_fraction": best["latency_fraction"] if best else None,
                     "accuracy_drop_pt": 100 * best["accuracy_drop"] if best else None},
        "selector_lte": {k: lte[k] if k in lte else lte["modes"][k]
                         for k in ("cloud_only", "device_only_big", "normal", "power-saving", "private")},
    }
    result["criteria"] = {
        "accuracy_at_least_resnet56": dep["relative_accuracy"] >= 1.0,
        "throughput_2.2x_cpu": tput["cpu"]["speedup"] >= 2.2,
        "throughput_2.2x_wall": tput["wall"]["speedup"] >= 2.2,
        "lower_mean_and_p99_every_load": all(r["cascade"]["mean_ms"] < r["big"]["mean_ms"]
                                             and r["cascade"]["p99_ms"] < r["big"]["p99_ms"] for r in rows),
        "per_class_fewer_recoveries_at_equal_accuracy": (
            det["equal_accuracy"]["single_recovery_in_sample"] is not None
            and det["equal_accuracy"]["per_class_recovery"] < det["equal_accuracy"]["single_recovery_in_sample"]),
        "ensemble_within_0.5pt": best is not None and best["accuracy_drop"] <= 0.005,
    }
    write_json(out / "runtime.json", result)
    md = ["# bench runtime (CIFAR-10 ResNet pool, held-out half)", "",
          f"Deployed **{dep['name']}**: {100 * dep['test_accuracy']:.2f} % vs ResNet-56 "
          f"{100 * dep['reference_test_accuracy']:.2f} % ({100 * dep['relative_accuracy']:.2f} %); throughput "
          f"{tput['cpu']['speedup']:.2f}x (CPU time) / {tput['wall']['speedup']:.2f}x (wall clock) vs ResNet-56 alone.", "",
          "Criteria: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in result["criteria"].items()), "",
          "| load (× ResNet-56 peak) | cascade mean / p99 ms | ResNet-56 mean / p99 ms |", "|---|---|---|"]
    md += [f"| {r['load']:.1f} | {r['cascade_mean_ms']:.1f} / {r['cascade_p99_ms']:.1f} | "
           f"{r['big_mean_ms']:.1f} / {r['big_p99_ms']:.1f} |" for r in result["load"]]
    eq = det["equal_accuracy"]
    md += ["", f"Detector {det['little']}→{det['big']}, max softmax: per-class thresholds recover "
           f"{100 * eq['per_class_recovery']:.2f} % at {100 * eq['accuracy']:.2f} % held-out accuracy; a single threshold "
           f"needs {100 * eq['single_recovery_in_sample']:.2f} % for the same accuracy (in-sample, its best case). "
           f"Fitted to the same calibration target: single {100 * single['test']['recovery_rate']:.2f} % recovered "
           f"({100 * single['test']['accuracy']:.2f} %), per-class {100 * pc['test']['recovery_rate']:.2f} % "
           f"({100 * pc['test']['accuracy']:.2f} %).", "",
           "| probe | on recovery | rule | FN rate | FP rate | recovery | accuracy |", "|---|---|---|---|---|---|---|"]
    md += [f"| {v['probe']} | {'combined' if v['combine'] else 'big'} | {v['rule']} | {100 * v['fn']:.1f} % | "
           f"{100 * v['fp']:.1f} % | {100 * v['recovery']:.2f} % | {100 * v['accuracy']:.2f} % |" for v in result["probe_rates"]]
    e = result["ensemble"]
    if best:
        md += ["", f"Flexible ensemble: {100 * e['flexible_accuracy']:.2f} % at {e['flexible_ms']:.2f} ms/image vs full "
               f"ensemble {100 * e['full_accuracy']:.2f} % at {e['full_ms']:.2f} ms ({100 * e['latency_fraction']:.1f} % of "
               f"its latency, drop {e['accuracy_drop_pt']:.2f} pt)."]
    md += ["", "Selector on LTE (mJ / ms per input): " + "; ".join(
        f"{k} {v['energy_mj']:.1f} / {v['latency_ms']:.1f}" for k, v in result["selector_lte"].items()), "",
        "Details: runtime-cascade/report.md, runtime-ensemble/report.md, runtime-selector/report.md."]
    write_text(out / "runtime.md", "\n".join(md) + "\n")
    return result
