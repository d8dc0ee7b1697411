"""Double-shot pruning (dissertation ch. 7) against SNIP and local random, side by side.

The same study as ``make prune`` (LeNet-300-100 and LeNet-5 on all 55,000 Fashion-MNIST training
images, the AlexNet- and VGG-style nets on the first 20,000; 1 epoch per training; 3 seeds;
Table 7.1's sparsities), read from the training cache when ``make prune`` ran before.  Figures:
per net and method the test error and accuracy normalised to the same seed's dense net (mean ±
std), and double-shot weighted movement minus SNIP per net and over nets.  Goal from the issue:
weighted movement ≥ SNIP on every net.  ``--quick``: LeNet-300-100 only, 1 seed, 2,000 images.

Reproduce: ``python -m tests.bench.run --only prune``.
"""

from __future__ import annotations

from pathlib import Path

from sieve.io_utils import write_json, write_text

GROUPS = [(("lenet300", "lenet5"), 55000), (("alexnet_s", "vgg_s"), 20000)]


def run(out_dir: Path, quick: bool = False) -> dict:
    from sieve import zoo
    from sieve.pruning.report import write_report
    from sieve.pruning.study import HEADLINE, StudySettings, run_study

    out = Path(out_dir)
    train, dataset, fingerprint = zoo.fashion_training_data()
    groups = [(("lenet300",), 2000)] if quick else GROUPS
    if quick:
        dataset = dataset.truncated(1000, 2000)
    rows, diffs = [], {}
    for nets, images in groups:
        result = run_study(StudySettings(nets=nets, seeds=1 if quick else 3, epochs=1, train_images=images),
                           train, dataset, fingerprint)
        write_report(result, out / "prune" / "-".join(nets))
        for net, info in result["nets"].items():
            for method, s in info["summary"].items():
                if method == "dense":
                    continue
                rows.append({"net": net, "method": method, "train_images": images, "sparsity": info["sparsity"],
                             "dense_test_error": info["summary"]["dense"]["test_error"]["mean"],
                             "test_error": s["test_error"]["mean"], "test_error_std": s["test_error"]["std"],
                             "normalised_accuracy": s["normalised_accuracy"]["mean"],
                             "normalised_accuracy_std": s["normalised_accuracy"]["std"],
                             "train_seconds": s["train_seconds"]["mean"]})
            diffs[net] = result["headline"][HEADLINE]["per_net"][net]["mean"]
    means = list(diffs.values())
    doc = {"rows": rows, "weighted_movement_minus_snip": diffs,
           "mean_improvement": sum(means) / len(means),
           "goal_met_every_net": all(d >= 0 for d in means), "quick": quick}
    write_json(out / "prune.json", doc)
    lines = ["# Double-shot pruning vs SNIP (Fashion-MNIST)", "",
             "| net | method | test error % | normalised accuracy % | train s |", "|---|---|---|---|---|"]
    lines += [f"| {r['net']} | {r['method']} | {100 * r['test_error']:.2f} ± {100 * r['test_error_std']:.2f} | "
              f"{100 * r['normalised_accuracy']:.2f} ± {100 * r['normalised_accuracy_std']:.2f} | {r['train_seconds']:.1f} |"
              for r in rows]
    lines += ["", "Weighted movement − SNIP (normalised accuracy, points): "
              + ", ".join(f"{n} {100 * d:+.2f}" for n, d in diffs.items())
              + f"; mean {100 * doc['mean_improvement']:+.2f}; ≥ SNIP on every net: {doc['goal_met_every_net']}", ""]
    write_text(out / "prune.md", "\n".join(lines))
    return doc
