"""The pruning comparison as ``results.json``, ``report.md`` and two plots.

``comparison.png`` has the three panels of the dissertation's Figs. 7.7–7.9 (metrics based on
the distance from 0, on moving away from 0, and the hybrids), each bar a method's test accuracy
normalised by the same seed's dense network (mean over seeds, error bar = standard deviation);
``layer_sparsity.png`` shows SNIP's per-layer sparsity, which local random and every double-shot
metric share.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io_utils import atomic_path, write_json, write_text  # noqa: E402

PANELS = [
    ("distance from 0 (Fig. 7.7)", ["snip", "random", "doubleshot/magnitude"]),
    ("moving away from 0 (Fig. 7.8)", ["snip", "doubleshot/movement", "doubleshot/magnitude_increase"]),
    ("hybrids (Fig. 7.9)", ["snip", "doubleshot/weighted_movement", "doubleshot/weighted_magnitude_increase"]),
]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _ms(d: dict, scale: float = 100.0, digits: int = 2) -> str:
    return f"{scale * d['mean']:.{digits}f} ± {scale * d['std']:.{digits}f}"


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = ["# Double-shot pruning (dissertation ch. 7) on Fashion-MNIST", "",
             f"{s['seeds']} seed(s) per network (first seed {s['first_seed']}), {s['epochs']} epoch(s) per training, "
             f"{s['train_images']:,} training images, test split of {s['test_images']:,} images (held out). "
             "Normalised accuracy = test accuracy / the same seed's dense test accuracy; mean ± std over seeds. "
             "Verdict vs dense: exact one-sided McNemar on the test split, per seed "
             "('≥ dense' = point estimate at least the dense accuracy, 'not worse' = p ≥ 0.05).", "",
             "Hybrid metrics are our reading (the dissertation's Fig. 7.6 is not in the text): "
             "weighted movement = |w_f|·|w_f − w_i|, weighted magnitude increase = |w_f|·(|w_f| − |w_i|).", "",
             "Training budget: SNIP and local random train once; double-shot trains the dense net and then the "
             "sparse one (twice the epochs, as in the dissertation), so with few epochs part of its lead is the "
             "longer training.", ""]
    for net, info in result["nets"].items():
        summ = info["summary"]
        lines += [f"## {net} — {info['description']}, global sparsity {_pct(info['sparsity'])} %", "",
                  f"Dense: test error {_ms(summ['dense']['test_error'])} %, training {summ['dense']['train_seconds']['mean']:.1f} s.", "",
                  "| method | test error % | normalised accuracy % | global sparsity % | seeds ≥ dense | seeds not worse | train s |",
                  "|---|---|---|---|---|---|---|"]
        n = len(info["seeds"])
        for method in result["settings"]["methods"]:
            m = summ[method]
            lines.append(f"| {method} | {_ms(m['test_error'])} | {_ms(m['normalised_accuracy'])} | "
                         f"{_pct(m['global_sparsity']['mean'])} | {m['seeds_at_least_dense']}/{n} | "
                         f"{m['seeds_not_worse_than_dense']}/{n} | {m['train_seconds']['mean']:.1f} |")
        layers = summ[result["settings"]["methods"][0]]["layer_sparsity"]
        lines += ["", "Per-layer sparsity (SNIP's rates, shared by local random and double-shot), mean ± std over seeds: "
                  + ", ".join(f"{k} {_ms(v)} %" for k, v in layers.items()), ""]
    if result["headline"]:
        lines += ["## Double-shot vs SNIP", "",
                  "Mean over seeds of (double-shot − SNIP) normalised accuracy per net, then mean ± std over nets.", "",
                  "| metric | " + " | ".join(result["nets"]) + " | over nets | nets ≥ SNIP |",
                  "|---|" + "---|" * (len(result["nets"]) + 2)]
        for method, h in result["headline"].items():
            cells = [f"{100 * h['per_net'][n]['mean']:+.2f}" for n in result["nets"]]
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {100 * h['over_nets']['mean']:+.2f} ± "
                         f"{100 * h['over_nets']['std']:.2f} | {h['nets_at_least_snip']}/{h['nets']} |")
        lines.append("")
    lines += ["![comparison](comparison.png)", "", "![layer sparsity](layer_sparsity.png)", ""]
    return "\n".join(lines)


def plot_comparison(result: dict, path: Path) -> None:
    nets = list(result["nets"])
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4.6), sharey=True)
    for ax, (title, methods) in zip(axes, PANELS):
        methods = [m for m in methods if m in result["settings"]["methods"]]
        width = 0.8 / (len(methods) + 1)
        x = np.arange(len(nets))
        ax.bar(x, [100.0] * len(nets), width, label="dense", color="0.7")
        for k, method in enumerate(methods, start=1):
            means = [100 * result["nets"][n]["summary"][method]["normalised_accuracy"]["mean"] for n in nets]
            stds = [100 * result["nets"][n]["summary"][method]["normalised_accuracy"]["std"] for n in nets]
            ax.bar(x + k * width, means, width, yerr=stds, capsize=2, label=method.replace("doubleshot/", "DS "))
        ax.set_xticks(x + 0.4 - width / 2, nets)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    lows = [100 * v["summary"][m]["normalised_accuracy"]["mean"] for v in result["nets"].values()
            for m in result["settings"]["methods"]]
    axes[0].set_ylim(max(0.0, min(lows) - 3), 102)
    axes[0].set_ylabel("test accuracy normalised to dense (%)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_layer_sparsity(result: dict, path: Path) -> None:
    nets = list(result["nets"])
    fig, axes = plt.subplots(1, len(nets), figsize=(3.5 * len(nets), 3.5), squeeze=False)
    method = result["settings"]["methods"][0]
    for ax, net in zip(axes[0], nets):
        info = result["nets"][net]
        layers = info["summary"][method]["layer_sparsity"]
        ax.bar(range(len(layers)), [100 * v["mean"] for v in layers.values()],
               yerr=[100 * v["std"] for v in layers.values()], capsize=2)
        ax.axhline(100 * info["sparsity"], color="k", ls="--", lw=1, label="global")
        ax.set_xticks(range(len(layers)), list(layers), rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{net} ({_pct(info['sparsity'])} %)")
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("sparsity per layer (%)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_report(result: dict, out: Path) -> Path:
    """Write ``results.json``, ``report.md``, ``comparison.png`` and ``layer_sparsity.png`` to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_comparison(result, out / "comparison.png")
    plot_layer_sparsity(result, out / "layer_sparsity.png")
    write_json(out / "results.json", result)
    write_text(out / "report.md", markdown(result))
    return out / "report.md"
