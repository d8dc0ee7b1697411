"""report.md and plots of a search: the per-layer table, the variant summary, the exponent
histograms with the chosen ranges (like the dissertation's Fig. 4.7) and the bits-vs-accuracy
Pareto frontier of every evaluated plan (like its Fig. 4.9).

Figures are drawn on matplotlib ``Figure`` objects with their own Agg canvas, not through
``pyplot``: a library call must not switch the caller's backend or leave figures open.
A normalized accuracy of None (the fp32 model got nothing right) reads "n/a".
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..blockfmt import BlockFormat, ChannelFormat, parse_format
from ..histograms import EXP_OFFSET, ExponentHistogram
from ..io_utils import atomic_path, write_text

__all__ = ["write_report", "histogram_figure", "percent"]

VARIANTS = ("exact", "accurate", "approximate")
HIST_COLS = 4
PANEL_INCHES = (4.0, 2.4)   # width, height of one histogram panel
TITLE_INCHES = 0.5          # room for the figure title above the panels


def percent(value: float | None) -> str:
    """``0.9912`` -> ``99.12%``; None (undefined, e.g. normalized accuracy of a model that gets
    nothing right) -> ``n/a``."""
    return "n/a" if value is None else f"{value:.2%}"


def _figure(width: float, height: float):
    """A figure with its own Agg canvas and constrained layout (titles never overlap panels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _fmt_range(text: str) -> str:
    """The binades a format covers; a layout's range moves per block / channel, so it says so."""
    if text == "fp32":
        return ""
    f = parse_format(text)
    if isinstance(f, BlockFormat):
        return f"2^{f.element.min_exponent - f.element.max_exponent}..2^0 x block scale (E8M0, k = {f.block})"
    if isinstance(f, ChannelFormat):
        e = f.element
        return f"{e.max_exponent - e.min_exponent + 1} binades, placed per output channel"
    return f"2^{f.min_exponent}..2^{f.max_exponent}"


def _bits_text(t: dict) -> str:
    """A tensor's bits: the code width, and the real bits per element when a layout adds scales."""
    real = t.get("bits_per_element")
    if real is None or abs(real - t["bits"]) < 1e-9:
        return str(t["bits"])
    return f"{real:.3g}"


def _table(doc: dict, hists: dict[str, ExponentHistogram]) -> list[str]:
    rows = ["| tensor | kind | elements | observed binades | never negative | "
            + " | ".join(VARIANTS) + " | accurate range |",
            "|---|---|---:|---|---|" + "---|" * len(VARIANTS) + "---|"]
    per_variant = {v: {t["name"]: t for t in doc["variants"][v]["tensors"]} for v in VARIANTS}
    for t in doc["variants"]["accurate"]["tensors"]:
        h = hists.get(t["name"])
        lo, hi = h.exponent_range() if h is not None else (0, 0)
        fmts = [f"`{per_variant[v][t['name']]['format']}` ({_bits_text(per_variant[v][t['name']])})" for v in VARIANTS]
        rows.append(f"| {t['name']} | {t['kind']} | {t['elements']:,} | 2^{lo}..2^{hi} | "
                    f"{'yes' if h is not None and h.never_negative else 'no'} | " + " | ".join(fmts)
                    + f" | {_fmt_range(t['format'])} |")
    return rows


def _summary(doc: dict) -> list[str]:
    b = doc["baseline"]
    rows = ["| variant | val acc | normalized val | test acc | normalized test | test gains / losses | McNemar p (worse than target) | holds on test | mean bits (weights / activations / all) | compression | val flips | meets target (plain / with margin) |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---|",
            f"| fp32 | {b['val_accuracy']:.2%} | {percent(1.0 if b['val_accuracy'] else None)} | {b['test_accuracy']:.2%} | "
            f"{percent(1.0 if b['test_accuracy'] else None)} | | | | 32 / 32 / 32 | 1.0x | 0 | |"]
    for v in VARIANTS:
        d = doc["variants"][v]
        t = d.get("test_verdict")  # (plans of schema 1 have none)
        stat = (f"+{t['gains']} / -{t['losses']} | {t['p_worse']:.3g} | **{'yes' if t['holds'] else 'NO'}**"
                if t else "- | - | -")
        rows.append(f"| {v} | {d['val_accuracy']:.2%} | {percent(d['normalized_val_accuracy'])} | {d['test_accuracy']:.2%} | "
                    f"{percent(d['normalized_test_accuracy'])} | {stat} | {d['mean_bits_weights']:.2f} / {d['mean_bits_activations']:.2f}"
                    f" / **{d['mean_bits']:.2f}** | {d['compression_ratio']:.1f}x | {d.get('val_flips', '')} | "
                    f"{'yes' if d['meets_target'] else 'NO'} / {_yes(d.get('meets_target_with_margin'))} |")
    return rows


def _verdict_text(doc: dict) -> list[str]:
    """How the held-out verdict is decided (sieve.stats), in one paragraph."""
    alpha = next((d["test_verdict"]["alpha"] for d in doc["variants"].values() if d.get("test_verdict")), None)
    if alpha is None:
        return []
    return ["*Holds on test*: the variant's test accuracy is not significantly below its target at the "
            f"{alpha:.0%} level, paired with fp32 on the same images. Gains = fp32 wrong and the plan right, "
            "losses = the reverse; the p-value is the exact one-sided McNemar test of \"worse than the target\" "
            "(binomial on the gains + losses discordant images, its null shifted by the images the target allows "
            "to lose: floor(0.1 % of fp32's correct test images) for approximate, 0 for exact and accurate; "
            "`sieve/stats.py`).", ""]


def _yes(flag) -> str:
    return "-" if flag is None else ("yes" if flag else "NO")


def histogram_figure(doc: dict, hists: dict[str, ExponentHistogram]):
    """One panel per tensor (4 a row) under one title; the height grows with the rows, and the
    constrained layout keeps the title above the first row at any row count."""
    tensors = doc["variants"]["accurate"]["tensors"]
    cols = HIST_COLS
    rows = max(1, -(-len(tensors) // cols))
    fig = _figure(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows + TITLE_INCHES)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, t in zip(axes.flat, tensors):
        h = hists.get(t["name"])
        if h is None or h.nonzero == 0:
            ax.set_visible(False)
            continue
        lo, hi = h.exponent_range()
        e = np.arange(lo, hi + 1)
        ax.bar(e, h.counts[lo + EXP_OFFSET:hi + EXP_OFFSET + 1], color="#4c72b0", width=0.9)
        f = parse_format(t["format"]) if t["format"] != "fp32" else None
        if f is not None and not isinstance(f, (BlockFormat, ChannelFormat)):  # a layout's range moves
            ax.axvspan(f.min_exponent - 0.5, f.max_exponent + 0.5, color="#dd8452", alpha=0.25,
                       label=t["format"])
            ax.legend(fontsize=7, loc="upper left")
        ax.set_title(t["name"] if f is None or t["format"] in ax.get_legend_handles_labels()[1]
                     else f"{t['name']} ({t['format']})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yscale("log")
    for ax in list(axes.flat)[len(tensors):]:
        ax.set_visible(False)
    fig.suptitle(f"{doc['model']}: exponent histograms (binade e: 2^e <= |x| < 2^(e+1)), accurate variant's range shaded",
                 fontsize=10)
    return fig


def _plot_histograms(path: Path, doc: dict, hists: dict[str, ExponentHistogram]) -> None:
    fig = histogram_figure(doc, hists)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten by another with fewer (or equal) bits and higher (or equal) accuracy."""
    front, best = [], -np.inf
    for bits, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((bits, acc))
            best = acc
    return front


def _plot_pareto(path: Path, doc: dict, frontier_points: list[tuple[float, float]]) -> None:
    fig = _figure(6.5, 4.2)
    ax = fig.subplots()
    if frontier_points:
        xs, ys = zip(*frontier_points)
        ax.scatter(xs, ys, s=6, color="#999999", label="evaluated plans")
        fx, fy = zip(*pareto(frontier_points))
        ax.step(fx, fy, where="post", color="#4c72b0", label="Pareto frontier")
    for v, marker in zip(VARIANTS, "o^s"):
        d = doc["variants"][v]
        if d["normalized_val_accuracy"] is None:
            continue
        ax.scatter([d["mean_bits"]], [d["normalized_val_accuracy"] * 100], marker=marker, s=60, zorder=5,
                   label=f"{v}: {d['mean_bits']:.2f} bits")
    ax.axhline(100.0, color="k", lw=0.6, ls="--")
    ax.axhline(99.9, color="k", lw=0.6, ls=":")
    ax.set_xlabel("mean bits per element (weights + activations)")
    ax.set_ylabel("normalized validation accuracy (%)")
    ax.set_title(f"{doc['model']} ({doc['strategy']}): bits vs accuracy")
    normalized = [d["normalized_val_accuracy"] for d in doc["variants"].values()]
    if None in normalized:
        ax.text(0.5, 0.5, "normalized accuracy n/a:\nthe fp32 model gets no validation image right",
                transform=ax.transAxes, ha="center", va="center")
    lo = min([98.0] + [x * 100 - 0.5 for x in normalized if x is not None])
    ax.set_ylim(lo, None)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _tightening(doc: dict) -> list[str]:
    """Does each looser variant undercut the stricter one? If not, the cheaper candidates the
    search tried and their validation results (why none passed)."""
    lines = []
    for v in VARIANTS:
        rec = doc["variants"][v].get("tightening")
        if not rec:
            continue
        bits = doc["variants"][v]["mean_bits"]
        if rec.get("same_target") and not rec["strictly_cheaper"]:
            lines.append(f"- *{v}*: {bits:.2f} mean bits, the *{rec['stricter']}* plan: on these validation images its"
                         " allowance (0.1 % of the fp32-correct ones) rounds down to zero images, so its target is"
                         f" *{rec['stricter']}*'s and it was not searched again (a distinct approximate point needs"
                         " >= 1,000 fp32-correct validation images; see the warnings).")
            continue
        if rec["strictly_cheaper"]:
            lines.append(f"- *{v}*: {bits:.2f} mean bits, below *{rec['stricter']}*'s {rec['stricter_mean_bits']:.2f} "
                         f"({rec['cheaper_candidates_tried']} still cheaper candidates tried and refused).")
            continue
        lines.append(f"- *{v}*: {bits:.2f} mean bits, **not below** *{rec['stricter']}*'s "
                     f"{rec['stricter_mean_bits']:.2f}: none of the {rec['cheaper_candidates_tried']} cheaper "
                     "candidates tried passed its target with the margin on validation"
                     + (" (listed below, cheapest last; net = estimated change of the correct count on the whole "
                        "split, flips = gains + losses, '-' = rejected early)." if rec["cheaper_candidates"] else
                        " (the strategy records no candidates)."))
        if rec["cheaper_candidates"]:
            lines += ["", "  | tensor(s) | format(s) | mean bits | images run / set | passed | net | flips |",
                      "  |---|---|---:|---:|---|---:|---:|"]
            for e in rec["cheaper_candidates"]:
                tensor = e["tensor"] if len(e["tensor"]) <= 60 else f"{e['tensor'].count(',') + 1} tensors"
                fmt = e["format"] if len(e["format"]) <= 60 else "(shared level)"
                lines.append(f"  | {tensor} | `{fmt}` | {e['mean_bits']:.3f} | {e.get('evaluated', '')} / {e.get('set', '')} | "
                             f"{'yes' if e.get('passed') else 'no'} | {e.get('net', '-')} | {e.get('flips', '-')} |")
            lines.append("")
    return ["## Tightening (is each looser variant cheaper?)", "", *lines, ""] if lines else []


FAMILY_TEXT = {
    "scalar": "one custom float (exponent, mantissa, bias) per tensor.",
    "channel": "weights with one exponent bias per output channel (`ch<b>:`), activations scalar.",
    "block": "weights block-scaled (`mx<k>:`, OCP-MX-like E8M0 scale per k elements), activations scalar.",
    "all": "per tensor the cheapest of scalar, per-channel (weights) and block-scaled (weights) formats.",
}


def write_report(out: Path, doc: dict, hists: dict[str, ExponentHistogram], points: list[tuple[float, float]],
                 done: Callable[[], object] = lambda: None) -> Path:
    """Write report.md plus histograms.png and pareto.png into ``out``; return the report path.
    ``done()`` is called after each of the three files (a progress bar's ``update``)."""
    out = Path(out)
    _plot_histograms(out / "histograms.png", doc, hists)
    done()
    _plot_pareto(out / "pareto.png", doc, points)
    done()
    c = doc.get("cost", {})
    found = doc.get("warnings") or []
    warned = ["## Warnings", "", *(f"- {w}" for w in found), ""] if found else []
    family = doc.get("family", "scalar")
    lines = [f"# SIEVE search: {doc['model']} on {doc['dataset']} (strategy `{doc['strategy']}`, family `{family}`)", "",
             f"Format family `{family}`: {FAMILY_TEXT.get(family, family)}", "",
             f"Validation images: {c.get('val_images')}, test images: {c.get('test_images')}. "
             f"Search: {doc['search_seconds']:.1f} s, {doc['evaluations']} evaluations "
             f"({c.get('evaluations_run')} run, {c.get('evaluations_replayed')} replayed from the cache), "
             f"cost {c.get('search_fp32_passes', 0):.1f} fp32 passes over the validation split "
             f"(one pass: {c.get('fp32_pass_seconds', 0):.2f} s).", "",
             "Targets on the validation split: *exact* = every prediction equals fp32's; *accurate* = "
             "normalized accuracy >= 100 %; *approximate* >= 99.9 %. *With margin*: the net gain (images "
             "fp32 got wrong and the plan right, minus the reverse) plus what the target allows must clear "
             f"z = {doc.get('margin_z', 0)} standard errors sqrt(gains + losses), so that the target is likely "
             "to hold on new images too (the default strategy requires it)"
             + (f"; *approximate* has its own margin, z = {doc['approximate_margin_z']:g}"
                + (" (the plain target: the last tightening stage spends the whole allowance)"
                   if doc["approximate_margin_z"] == 0 else "")
                if doc.get("approximate_margin_z", doc.get("margin_z")) != doc.get("margin_z") else "")
             + ". *Val flips* = gains + losses. "
             "Test accuracy is held out: reported, never searched.", "", *warned,
             "## Variants", "", *_summary(doc), "", *_verdict_text(doc), *_tightening(doc),
             "## Per-tensor formats", "",
             "Formats in the text form `[s|u]e<E>m<M>b<bias>` (bits in parentheses); `mx<k>:<element>` = the "
             "element format with one E8M0 (8-bit power-of-two) scale per block of k elements along the reduction "
             "axis (OCP MX), `ch<b>:<element>` = one exponent bias per output channel stored in b bits (+ an 8-bit "
             "base per tensor); for those the parentheses give the real bits per element, scales and biases "
             "included. `fp32` = left unquantized.", "", *_table(doc, hists), "",
             "## Plots", "", "![exponent histograms](histograms.png)", "", "![Pareto frontier](pareto.png)", ""]
    write_text(out / "report.md", "\n".join(lines))
    done()
    return out / "report.md"
