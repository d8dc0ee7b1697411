"""Results as files: ``result.json`` for programs, ``report.md`` + PNG plots for people.

Plots follow the figures of the seed papers: confidence histograms of correct / correctable /
uncorrectable little outputs (dissertation Fig. 4.4), accuracy vs recovery rate (Fig. 6.8),
per-class thresholds and recovery rates (Fig. 6.7), latency vs offered load (Fig. 6.17), and
for the selector energy/latency per network (Figs. 4.13–4.14).  Every file is written
atomically, so a failure never leaves a half-written report.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ..io_utils import atomic_path, write_json, write_text


@contextlib.contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``out``; it replaces ``out`` only on success.

    A report is several files (JSON, Markdown, plots); a failure half-way must not leave a
    mixture of new and stale ones behind.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def plot_histograms(h: dict, path: Path, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    edges = np.array(h["edges"])
    width = (edges[1] - edges[0]) / 3.2
    for i, (name, color) in enumerate((("correct", "tab:green"), ("correctable", "tab:orange"),
                                       ("uncorrectable", "tab:red"))):
        counts = np.array(h[name], dtype=float)
        ax.bar(edges[:-1] + (i + 0.5) * width, counts / max(counts.sum(), 1), width, label=name, color=color)
    ax.set_xlabel("little model's max softmax probability")
    ax.set_ylabel("fraction of group")
    ax.set_title(title)
    ax.legend()
    _save(fig, path)


def plot_accuracy_vs_recovery(curves: dict, ref_acc: float, path: Path, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, c in curves.items():
        ax.plot(100 * np.array(c["recovery_rate"]), 100 * np.array(c["accuracy"]), label=label)
    ax.axhline(100 * ref_acc, color="gray", ls="--", label="reference model alone")
    ax.set_xlabel("recovery rate (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend()
    _save(fig, path)


def plot_per_class(pc: dict, path: Path, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(pc["classes"]))
    t = [np.nan if v is None else min(v, 1.0) for v in pc["thresholds"]]
    ax.bar(x - 0.2, t, 0.4, label="threshold (max softmax)")
    ax.bar(x + 0.2, pc["recovery_rate"], 0.4, label="recovery rate (test)")
    ax.set_xticks(x, pc["classes"], rotation=45, ha="right")
    ax.set_title(title)
    ax.legend()
    _save(fig, path)


def plot_load(rows: list[dict], path: Path, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    loads = [r["load"] for r in rows]
    for tag, color in (("cascade", "tab:blue"), ("big", "tab:red")):
        for stat, ls in (("mean_ms", "-"), ("p99_ms", "--")):
            ys = [r[tag][stat] for r in rows]
            ax.plot(loads, ys, ls, color=color, marker="o", label=f"{tag} {stat[:-3]}")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (× reference model's peak throughput)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)


def _write_cascade(result: dict, out: Path) -> Path:
    """``cascade.json``, ``report.md`` and plots of a :func:`~.study.run_study` result."""
    out = Path(out)
    lines = [f"# Speculative cascade on {result['dataset']}", "",
             f"Pool {', '.join(result['pool'])}; target {100 * result['target']:.0f} % of the reference "
             f"model **{result['reference']}**; calibrated on {result['calibration_images']} images (val "
             f"half), every figure below is on the {result['test_images']} held-out test images unless marked.",
             "", "## Pool (latency measured on this machine)", "",
             "| model | cal. accuracy | test accuracy | ms / image |", "|---|---|---|---|"]
    for r in result["models"]:
        lines.append(f"| {r['model']} | {_pct(r['accuracy'])} | {_pct(r['test_accuracy'])} | {1e3 * r['latency_s']:.3f} |")
    pr = result["pairing"]
    lines += ["", "## Pair selection (calibration half)", ""]
    for key in ("heuristic", "exhaustive", "exhaustive_combined"):
        sel = pr[key]
        lines.append(f"- **{key}**: {sel['message']}")
        if sel["pair"]:
            p = sel["pair"]
            lines.append(f"  (P_r {_pct(p['recovery_rate'])}, L_pair {1e3 * p['cost']:.3f} ms, odd corrects {p['odd']}, common {p['common']})")
    if result.get("deployed") is None:
        fb = result["fallback"]
        lines += ["", f"**No pair meets the target: {fb['message']}** (test accuracy {_pct(fb['test_accuracy'])}).", ""]
        write_json(out / "cascade.json", result)
        write_text(out / "report.md", "\n".join(lines) + "\n")
        return out / "report.md"
    det = result["detector"]
    lines += ["", f"## Misspeculation detector: {det['little']} → {det['big']}", "",
              "| probe | on recovery | thresholds | target met on cal. | test accuracy | recovery | FN rate | FP rate | modelled speed-up |",
              "|---|---|---|---|---|---|---|---|---|"]
    for v in det["variants"]:
        t = v["test"]
        lines.append(f"| {v['probe']} | {'both combined' if v['combine'] else 'big'} | {v['rule']} | "
                     f"{'yes' if v['thresholds']['met_on_calibration'] else 'no'} | {_pct(t['accuracy'])} | {_pct(t['recovery_rate'])} | {_pct(t['false_negative_rate'])} | "
                     f"{_pct(t['false_positive_rate'])} | {v['modelled_speedup']:.2f}× |")
    eq = det["equal_accuracy"]
    lines += ["", f"At equal test accuracy {_pct(eq['accuracy'])}: per-class thresholds recover "
              f"{_pct(eq['per_class_recovery'])}; a single threshold needs {_pct(eq['single_recovery_in_sample'])} "
              "(chosen in-sample on the test half, i.e. its best case).",
              "FN rate = little wrong but not recovered / little wrong; FP rate = recovered although "
              "little right / little right.", "",
              "![histograms](histograms.png)", "![accuracy vs recovery](accuracy_vs_recovery.png)",
              "![per-class](per_class.png)", ""]
    fd = result["figures_data"]
    plot_histograms(fd["histograms"], out / "histograms.png", f"{det['little']} confidence (test)")
    ref_acc = next(r["test_accuracy"] for r in result["models"] if r["model"] == result["reference"])
    plot_accuracy_vs_recovery({f"recover with {det['big']}": fd["accuracy_vs_recovery"]["big"],
                               "recover with both combined": fd["accuracy_vs_recovery"]["combined"]},
                              ref_acc, out / "accuracy_vs_recovery.png", "single max-softmax threshold (test)")
    plot_per_class(fd["per_class"], out / "per_class.png", "per-class thresholds (calibrated) and recovery (test)")
    dep = result["deployed"]
    lines += ["## Deployed policy", "",
              f"**{dep['name']}** ({dep['chosen_by']}; candidates below). Test accuracy "
              f"{_pct(dep['test_accuracy'])} vs {result['reference']} {_pct(dep['reference_test_accuracy'])} "
              f"= **{100 * dep['relative_accuracy']:.2f} %** of the reference; fraction of inputs reaching each "
              f"stage {', '.join(_pct(r) for r in dep['test_reach'])}; modelled speed-up {dep['modelled_speedup']:.2f}×.", ""]
    if "throughput" in result:
        t = result["throughput"]
        cpu, wall = t["cpu"], t["wall"]
        lines += [f"Measured throughput — the executor really runs on {t['images']} held-out images, batch "
                  f"{t['batch_size']}, {t['threads']} torch thread(s), best of {t['reps']} runs interleaved with "
                  f"{result['reference']} alone:", "",
                  "| clock | cascade img/s | reference alone img/s | speed-up (best) | speed-up (median) |",
                  "|---|---|---|---|---|",
                  f"| CPU time of this process | {cpu['cascade_images_per_s']:.0f} | {cpu['big_images_per_s']:.0f} | "
                  f"**{cpu['speedup']:.2f}×** | {cpu['speedup_median']:.2f}× |",
                  f"| wall clock (shared machine) | {wall['cascade_images_per_s']:.0f} | {wall['big_images_per_s']:.0f} | "
                  f"**{wall['speedup']:.2f}×** | {wall['speedup_median']:.2f}× |", "",
                  f"Executed accuracy {_pct(t['cascade_accuracy'])} vs {_pct(t['big_accuracy'])} on those images.", "",
                  "## Latency under offered load", "", result["load"]["method"] + ".", "",
                  "| load | rate (img/s) | cascade mean / p50 / p99 (ms) | big mean / p50 / p99 (ms) |", "|---|---|---|---|"]
        for r in result["load"]["rows"]:
            c, b = r["cascade"], r["big"]
            sc = " (saturated)" if c["saturated"] else ""
            sb = " (saturated)" if b["saturated"] else ""
            lines.append(f"| {r['load']:.1f} | {r['rate_per_s']:.0f} | {c['mean_ms']:.1f} / {c['p50_ms']:.1f} / "
                         f"{c['p99_ms']:.1f}{sc} | {b['mean_ms']:.1f} / {b['p50_ms']:.1f} / {b['p99_ms']:.1f}{sb} |")
        lines += ["", "![latency vs load](latency_vs_load.png)", ""]
        plot_load(result["load"]["rows"], out / "latency_vs_load.png", "latency vs offered load")
    lines += ["## Candidates (cross-validated on the calibration half)", "",
              "| candidate | CV accuracy − ref | CV cost (ms) | test accuracy | modelled speed-up |", "|---|---|---|---|---|"]
    for s in sorted(result["candidates"], key=lambda s: s["cv_cost"]):
        lines.append(f"| {s['name']} | {100 * (s['cv_accuracy'] - s['cv_reference']):+.2f} | {1e3 * s['cv_cost']:.3f} | "
                     f"{_pct(s['test_accuracy'])} | {s['modelled_speedup']:.2f}× |")
    write_json(out / "cascade.json", result)
    write_text(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.md"


def _write_ensemble(result: dict, out: Path) -> Path:
    """``ensemble.json``, ``report.md`` and an accuracy-vs-latency plot of a flexible ensemble."""
    out = Path(out)
    full = result["full"]
    lines = [f"# Flexible ensemble on {result['dataset']}", "",
             f"Models run cheapest first: {' → '.join(result['order'])}; after each one the running "
             "ensemble (mean softmax) stops when its score margin clears that step's threshold. "
             f"Thresholds grid-searched on {result['calibration_images']} calibration images; figures on "
             f"{result['test_images']} held-out images.", "",
             f"Full ensemble: **{_pct(full['test_accuracy'])}** at {1e3 * full['test_latency_s']:.3f} ms / image.", "",
             "| model alone | test accuracy | ms / image |", "|---|---|---|"]
    for s in result["singles"]:
        lines.append(f"| {s['model']} | {_pct(s['test_accuracy'])} | {1e3 * s['latency_s']:.3f} |")
    lines += ["", "| setting | thresholds | test accuracy | accuracy drop vs full (pt) | ms / image | latency vs full | exits per stage |",
              "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ts = ", ".join("∞" if not np.isfinite(t) else f"{t:.3f}" for t in r["thresholds"])
        lines.append(f"| {r['label']} | {ts} | {_pct(r['test_accuracy'])} | {100 * r['accuracy_drop']:.2f} | "
                     f"{1e3 * r['test_latency_s']:.3f} | {100 * r['latency_fraction']:.1f} % | "
                     f"{', '.join(f'{100 * e:.1f}' for e in r['exit_fractions'])} % |")
    b = result["best_within_drop"]
    if b:
        lines += ["", f"Allowed accuracy drop {100 * result['max_drop']:g} pt ({result['selection']}): "
                  f"**{100 * b['latency_fraction']:.1f} %** of the full ensemble's latency "
                  f"({1e3 * b['test_latency_s']:.3f} vs {1e3 * full['test_latency_s']:.3f} ms / image), held-out accuracy "
                  f"{_pct(b['test_accuracy'])}, a drop of {100 * b['accuracy_drop']:.2f} pt."]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter([1e3 * s["latency_s"] for s in result["singles"]], [100 * s["test_accuracy"] for s in result["singles"]],
               label="single models", marker="s")
    ax.scatter([1e3 * r["test_latency_s"] for r in result["rows"]], [100 * r["test_accuracy"] for r in result["rows"]],
               label="flexible ensemble")
    ax.scatter([1e3 * full["test_latency_s"]], [100 * full["test_accuracy"]], label="full ensemble", marker="*", s=120)
    ax.set_xlabel("ms / image")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    _save(fig, out / "ensemble.png")
    lines += ["", "![accuracy vs latency](ensemble.png)", ""]
    write_json(out / "ensemble.json", result)
    write_text(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.md"


def _write_selector(result: dict, out: Path) -> Path:
    """``selector.json``, ``report.md`` and energy/latency bars per network (Figs. 4.13–4.14)."""
    out = Path(out)
    dev = result["device"]
    lines = [f"# SIEVE selector on {result['dataset']}", "",
             f"Device model: **{result['little']}** ({1e3 * result['latency_s'][result['little']]:.2f} ms measured "
             f"here at batch 1); cloud model: **{result['big']}** ({1e3 * result['latency_s'][result['big']]:.2f} ms here, "
             f"÷{dev['cloud_speedup']:g} in the cloud). Device power {dev['device_power_w']} W (assumed), input "
             f"{result['input_bytes']} bytes, answer {dev['result_bytes']} bytes. Stream: the held-out half in runs of "
             f"{result['stream_run_length']} same-class inputs. Network parameters (cited in `sieve/runtime/selector.py`):", "",
             "| network | up / down Mbps | α_u / α_d / β (mW) | RTT ms |", "|---|---|---|---|"]
    for n in result["networks"].values():
        lines.append(f"| {n['name']} | {n['up_mbps']} / {n['down_mbps']} | {n['alpha_up']} / {n['alpha_down']} / {n['beta']} | {n['rtt_ms']} |")
    lines += ["", "| network | strategy | energy (mJ / input) | latency (ms / input) | accuracy | offloaded |", "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        entries = [("cloud only", row["cloud_only"]), ("device only (big)", row["device_only_big"]),
                   ("device only (little)", row["device_only_little"])] + list(row["modes"].items())
        for name, v in entries:
            lines.append(f"| {row['network']} | {name} | {v['energy_mj']:.2f} | {v['latency_ms']:.2f} | "
                         f"{_pct(v['accuracy'])} | {_pct(v['offloaded'])} |")
    plt = _plt()
    for metric, fname, label in (("energy_mj", "selector_energy.png", "energy per input (mJ)"),
                                 ("latency_ms", "selector_latency.png", "latency per input (ms)")):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        strategies = ["cloud_only", "device_only_big", "normal", "mission-critical", "power-saving", "private"]
        width = 0.8 / len(strategies)
        for i, s in enumerate(strategies):
            ys = [(row[s] if s in row else row["modes"][s])[metric] for row in result["rows"]]
            ax.bar(np.arange(len(result["rows"])) + i * width, ys, width, label=s.replace("_", " "))
        ax.set_xticks(np.arange(len(result["rows"])) + 0.4 - width / 2, [r["network"] for r in result["rows"]])
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        _save(fig, out / fname)
        lines += ["", f"![{metric}]({fname})"]
    write_json(out / "selector.json", result)
    write_text(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.md"


def write_cascade(result: dict, out: Path) -> Path:
    """``cascade.json``, ``report.md`` and plots of a :func:`~.study.run_study` result (atomically)."""
    with atomic_dir(out) as tmp:
        _write_cascade(result, tmp)
    return Path(out) / "report.md"


def write_ensemble(result: dict, out: Path) -> Path:
    """``ensemble.json``, ``report.md`` and a plot of a flexible-ensemble study (atomically)."""
    with atomic_dir(out) as tmp:
        _write_ensemble(result, tmp)
    return Path(out) / "report.md"


def write_selector(result: dict, out: Path) -> Path:
    """``selector.json``, ``report.md`` and energy/latency plots of a selector study (atomically)."""
    with atomic_dir(out) as tmp:
        _write_selector(result, tmp)
    return Path(out) / "report.md"
