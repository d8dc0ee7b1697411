"""A multi-dsNN exploration as files: ``result.json``, ``report.md`` and four plots.

* ``error_distribution.png`` — the monolith's sorted training errors with each threshold of the
  queue splitting main from tail (dissertation Figs. 3.2 and 3.4);
* ``tree.png`` — the top levels of the chosen selector tree (``sklearn.tree.plot_tree``);
* ``pareto.png`` — validation accuracy vs energy per input of every design point, the Pareto
  frontier and the chosen point (Fig. 3.10);
* ``chosen.png`` — the chosen configuration's costs relative to the monolith.

The directory is replaced as a whole, so a failure never leaves a mixture of files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io_utils import write_json, write_text
from ..runtime.report import _plt, _save, atomic_dir
from .explore import Artefacts

TREE_LEVELS_SHOWN = 3


def plot_errors(art: Artefacts, fractions, path: Path, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    errors = np.sort(art.train_errors)
    ax.plot(np.arange(len(errors)) / len(errors), errors, color="tab:blue", lw=1.5, label="error = 1 - max softmax")
    for frac, thr in zip(fractions, art.thresholds):
        ax.axvline(1 - frac, color="tab:red", ls=":", lw=1)
        ax.text(1 - frac, 0.95, f"tail {frac:g}", rotation=90, va="top", ha="right", fontsize=7, color="tab:red",
                transform=ax.get_xaxis_transform())
    ax.set_xlabel("training inputs, sorted by error (fraction)")
    ax.set_ylabel("monolith error")
    ax.set_title(title)
    ax.legend(loc="upper left")
    _save(fig, path)


def plot_tree_png(art: Artefacts, path: Path, title: str) -> None:
    from sklearn.tree import plot_tree

    plt = _plt()
    fig, ax = plt.subplots(figsize=(12, 5))
    # plot_tree's max_depth is the last depth drawn (root = 0): TREE_LEVELS_SHOWN levels of comparisons
    plot_tree(art.chosen_tree, max_depth=min(TREE_LEVELS_SHOWN, art.chosen_depth) - 1, class_names=["main", "tail"],
              filled=True, impurity=False, proportion=True, fontsize=6, ax=ax)
    ax.set_title(title)
    _save(fig, path)


def plot_pareto(result: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    pts = result["points"]
    mono = result["monolith"]
    scale = mono["cost"]["energy_total_pj"]
    for frac, marker in zip(result["settings"]["tail_fractions"], "osD^v"):
        sel = [p for p in pts if p["tail_fraction"] == frac]
        ax.scatter([p["val_energy_total_pj"] / scale for p in sel], [p["val_normalised"] for p in sel],
                   s=12, marker=marker, alpha=0.5, label=f"tail {frac:g}")
    front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["val_energy_total_pj"])
    ax.plot([p["val_energy_total_pj"] / scale for p in front], [p["val_normalised"] for p in front],
            color="black", lw=1, label="Pareto frontier")
    ax.axhline(result["settings"]["target"], color="gray", ls="--", lw=1)
    ax.scatter([1.0], [1.0], color="tab:red", marker="*", s=120, label="monolith", zorder=3)
    if result["chosen"] is not None:
        c = result["chosen"]
        ax.scatter([c["val_energy_total_pj"] / scale], [c["val_normalised"]], facecolors="none",
                   edgecolors="black", s=150, lw=1.5, label="chosen", zorder=4)
    ax.set_xlabel("energy per input / monolith's (validation routing)")
    ax.set_ylabel("validation accuracy / monolith's")
    ax.set_title(f"multi-dsNN design space: {result['benchmark']}")
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def plot_chosen(result: dict, path: Path) -> None:
    plt = _plt()
    c = result["chosen"]
    red = c["reduction_vs_monolith"]
    lat = c["latency"]
    names = ["MACs\nreplaced", "MACs\ntotal", "bytes\nreplaced", "bytes\ntotal", "energy\ntotal",
             "latency b1\nend-to-end", "latency b1\nreplaced"]
    values = [1 / red["macs_replaced"], 1 / red["macs_total"], 1 / red["bytes_replaced"], 1 / red["bytes_total"],
              1 / red["energy_total_pj"], 1 / lat["batch1_end_to_end"]["speedup"],
              1 / lat["batch1_replaced_part"]["speedup"]]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(names, values, color=["tab:green" if v < 1 else "tab:red" for v in values])
    ax.axhline(1.0, color="black", lw=1)
    ax.set_ylabel("multi-dsNN / monolith")
    ax.set_title(f"{result['benchmark']}: tail {c['tail_fraction']:g}, depth {c['depth']}, "
                 f"main {c['main']}, tail {c['tail']}", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    _save(fig, path)


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def markdown(result: dict, art: Artefacts) -> str:
    s, mono, e = result["settings"], result["monolith"], result["energy_model"]
    tr = result["training"]
    lines = [f"# Multi-dsNN: {result['benchmark']} ({result['dataset']})", "",
             result["description"] + ".", *[f"- note: {n}" for n in result["notes"]], "",
             f"Splits: {result['splits']['train']} training (errors, selector, dsNNs), {result['splits']['val']} "
             f"validation (depth, design choice), {result['splits']['test']} held-out test (verdict only).", "",
             "## Monolith", "",
             f"Replaced part `{mono['replaced_part']}` on {result['features']} features; accuracy train "
             f"{_pct(mono['train_accuracy'])}, validation {_pct(mono['val_accuracy'])}, test {_pct(mono['test_accuracy'])}; "
             f"{mono['cost']['macs_replaced']:,.0f} MACs and {mono['cost']['bytes_replaced']:,.0f} parameter bytes "
             f"in the replaced part, {mono['preprocessor']['macs']:,} MACs / {mono['preprocessor']['bytes']:,} bytes "
             "in the shared preprocessor.", "",
             "## Exploration", "",
             f"- threshold queue (tail share of training inputs): {', '.join(f'{f:g}' for f in s['tail_fractions'])} "
             f"→ error thresholds {', '.join(f'{t:.3g}' for t in art.thresholds)}",
             f"- selector: balanced `DecisionTreeClassifier` on at most {s['selector_rows']:,} training inputs, depth "
             f"swept over {s['depths']} and chosen per threshold on validation (balanced routing accuracy)",
             f"- dsNNs: every grid topology on each routed part ({tr['trainings']} trainings), Adam lr "
             f"{tr['recipe']['lr']}, batch {tr['batch_size']}, about {tr['target_steps']} steps "
             f"({tr['epochs_bounds'][0]}–{tr['epochs_bounds'][1]} epochs), seed {tr['recipe']['seed']}, 1 thread"
             + ("; the tail may also reuse the monolith's head unchanged (`monolith`)" if s["reuse_monolith_tail"] else ""),
             f"- choice: cheapest energy per input whose validation accuracy is ≥ {100 * s['target']:g} % of the monolith's"
             + (f" with the margin (gains − losses) + slack ≥ {s['margin_z']:g}·√(gains + losses)" if s["margin_z"] else "")
             + f"; verdict on test: exact one-sided McNemar, holds unless p < {s['alpha']:g}",
             f"- energy model: {e['pj_per_mac']:.1f} pJ per fp32 MAC, {e['pj_per_compare']:.1f} pJ per comparison, "
             f"{e['pj_per_byte']:.1f} pJ per parameter byte — {e['source']}", "",
             "![error distribution](error_distribution.png)", "", "### Selector per threshold", "",
             "| tail fraction | threshold | depth | nodes | routed tail share (train / val) | val balanced acc per depth |",
             "|---|---|---|---|---|---|"]
    for p in result["partitions"]:
        if "skipped" in p:
            lines.append(f"| {p['tail_fraction']:g} | {p['threshold']:.3g} | — | — | {p['skipped']} | |")
            continue
        sweep = ", ".join(f"{r['depth']}: {100 * r['val_balanced_accuracy']:.1f}" for r in p["depth_sweep"])
        lines.append(f"| {p['tail_fraction']:g} | {p['threshold']:.3g} | {p['depth']} | {p['tree_nodes']} | "
                     f"{_pct(p['train_routed_tail_share'])} / {_pct(p['val_routed_tail_share'])} | {sweep} |")
    lines += ["", "### Pareto frontier (validation)", "", "![pareto](pareto.png)", "",
              "| tail fraction | main dsNN | tail dsNN | val accuracy | energy / input (nJ) | MACs replaced |",
              "|---|---|---|---|---|---|"]
    for p in result["pareto"]:
        lines.append(f"| {p['tail_fraction']:g} | `{p['main']}` | `{p['tail']}` | {_pct(p['val_accuracy'])} | "
                     f"{p['val_energy_total_pj'] / 1e3:.1f} | {p['val_macs_replaced']:,.0f} |")
    c = result["chosen"]
    lines += ["", "## Chosen configuration", ""]
    if c is None:
        lines.append("No design point was explored.")
        return "\n".join(lines) + "\n"
    if result.get("no_choice"):
        lines += [f"**Target not met on validation**: {result['no_choice']}.", ""]
    t, red, sel, lat = c["test"], c["reduction_vs_monolith"], c["selector"], c["latency"]
    verdict = ("holds** (not significantly below the monolith at {:g} %)" if t["holds"]
               else "does NOT hold** (significantly below the monolith at {:g} %)").format(100 * t["alpha"])
    lines += [f"Tail fraction {c['tail_fraction']:g} (error threshold {c['threshold']:.3g}), selector depth "
              f"{c['depth']} ({sel['nodes']} nodes), dsNN_main `{c['main']}`, dsNN_tail `{c['tail']}`.", "",
              "![chosen](chosen.png)", "",
              f"Held-out test ({t['images']} images): multi-dsNN {_pct(t['accuracy'])} vs monolith "
              f"{_pct(t['reference_accuracy'])} = **{_pct(t['normalised_accuracy'])}** of the monolith "
              f"(validation {_pct(c['val_normalised'])}); {t['gains']} gains, {t['losses']} losses, one-sided "
              f"McNemar p = {t['p_worse']:.3g}: the ≥ {100 * s['target']:g} % target **{verdict}.", "",
              "| per input (test routing) | monolith | multi-dsNN | reduction |", "|---|---|---|---|"]
    mc, cc = mono["cost"], c["test_cost"]
    for key, label, fmt in (("macs_replaced", "MACs, replaced part", "{:,.0f}"), ("macs_total", "MACs, total", "{:,.0f}"),
                            ("bytes_replaced", "parameter bytes, replaced part", "{:,.0f}"),
                            ("bytes_total", "parameter bytes, total", "{:,.0f}"),
                            ("energy_total_pj", "energy (nJ), total", None)):
        a, b = mc[key], cc[key]
        sa, sb = ((f"{a / 1e3:.1f}", f"{b / 1e3:.1f}") if fmt is None else (fmt.format(a), fmt.format(b)))
        lines.append(f"| {label} | {sa} | {sb} | {red[key]:.2f}× |")
    for key, label in (("batch1_end_to_end", "CPU latency, batch 1, end to end (µs)"),
                       ("batch1_replaced_part", "CPU latency, batch 1, replaced part (µs)"),
                       ("batched_replaced_part", "CPU time per input, whole split batched, replaced part (µs)")):
        r = lat[key]
        lines.append(f"| {label} | {r['monolith_us']:.1f} | {r['multidsnn_us']:.1f} | {r['speedup']:.2f}× |")
    lines += [f"| stored parameter bytes (both dsNNs + tree) | {mc['stored_bytes']:,} | {cc['stored_bytes']:,.0f} | "
              f"{mc['stored_bytes'] / cc['stored_bytes']:.2f}× |", "",
              f"Selector on test: {_pct(sel['test_tail_share'])} of inputs sent to dsNN_tail, "
              f"{sel['mean_compares']:.1f} comparisons per input; misclassification rate (sent to the dsNN that is "
              f"wrong while the other is right, §3.5.5) **{_pct(sel['test_misclassification'])}**; routing differs from "
              f"the monolith-error partition on {_pct(sel['test_routing_error'])} of inputs (balanced accuracy "
              f"{_pct(sel['test_balanced_accuracy'])}).", "",
              f"Latency: 1 thread, {lat['batch1_end_to_end']['inputs']} test inputs each through the monolith and "
              f"the multi-dsNN in turn, per input the fastest of {lat['batch1_end_to_end']['rounds']} rounds, averaged "
              "(a shared machine only adds time); batch-1 predictions equal the explored ones: "
              f"{c['batch1_predictions_match']}.", "",
              f"### Selector tree (top {min(TREE_LEVELS_SHOWN, c['depth'])} of {c['depth']} levels)", "",
              "![tree](tree.png)", "",
              "Feature `fN` is the N-th input of the dsNNs (flattened preprocessor output or pixel); "
              "`-> tail` sends the input to dsNN_tail.", "", "```", _tree_text(art, result), "```"]
    return "\n".join(lines) + "\n"


def _tree_text(art: Artefacts, result: dict) -> str:
    from .selector import Router

    return Router(art.chosen_tree, art.chosen_depth).describe(TREE_LEVELS_SHOWN)


def write_report(result: dict, art: Artefacts, out: Path) -> Path:
    """Write the report directory ``out`` (atomically); returns the Markdown path."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        write_json(tmp / "result.json", result)
        plot_errors(art, result["settings"]["tail_fractions"], tmp / "error_distribution.png",
                    f"{result['benchmark']}: monolith error on the training split")
        if result["points"]:
            plot_pareto(result, tmp / "pareto.png")
        if result["chosen"] is not None:
            plot_tree_png(art, tmp / "tree.png", f"{result['benchmark']}: selector (top levels)")
            plot_chosen(result, tmp / "chosen.png")
        write_text(tmp / "report.md", markdown(result, art))
    return out / "report.md"
